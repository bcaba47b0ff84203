package PayGW::Cluster;

# Clustered backends for tests (issue 14): a Redis Cluster of redis-server
# processes on loopback.
#
#   my $rc = PayGW::Test::RedisCluster->start(masters => 3, replicas => 1);
#   $rc->port;                  # a seed, for %%REDIS_PORT%%
#   $rc->cli(GET => 'k');       # redis-cli -c (follows redirections)
#   my $node = $rc->master_of('pg:{M100}:x');    # a PayGW::Test::Redis
#   $rc->port_for('pg:{M100}:x');    # its port (PayGW::Test::Redis: its own)
#   $rc->wait_ok;               # every node: cluster_state:ok, one view
#
# PAYGW_TEST_HA=1 (`make test-ha`) makes PayGW::Gateway start one of these
# instead of a single Redis and turn paygw_redis_cluster on in the Redis
# location.

use strict;
use warnings;

use PayGW::Test;

package PayGW::Test::RedisCluster;

use strict;
use warnings;
use Time::HiRes qw(sleep time);

# start(masters => 3, replicas => 1, node_timeout => 1000, no_wait => 1):
# with no_wait, the nodes are started and ->ready builds the cluster.
sub start {
    my ($class, %o) = @_;
    my $masters = $o{masters} // 3;
    my $replicas = $o{replicas} // 1;
    my $n = $masters * (1 + $replicas);
    my $self = bless {nodes => [], masters => $masters,
                      node_timeout => $o{node_timeout} // 1000}, $class;
    for (1 .. $n) {
        my $bus = PayGW::Test::free_port();
        push @{$self->{nodes}}, PayGW::Test::Redis->start(no_wait => 1, args => [
            '--cluster-enabled', 'yes', '--cluster-port', $bus,
            '--cluster-config-file', 'nodes.conf',
            '--cluster-node-timeout', $self->{node_timeout},
            # a replica takes over however long it was cut off
            '--cluster-replica-validity-factor', '0',
            '--cluster-require-full-coverage', 'yes']);
    }
    return $o{no_wait} ? $self : $self->ready;
}

sub ready {
    my ($self) = @_;
    return $self if $self->{created};
    $_->ready for @{$self->{nodes}};
    my $replicas = @{$self->{nodes}} / $self->{masters} - 1;
    my ($rc, $out, $err) = PayGW::Test::_run(
        ['redis-cli', '--cluster', 'create',
         (map { '127.0.0.1:' . $_->port } @{$self->{nodes}}),
         '--cluster-replicas', $replicas, '--cluster-yes']);
    die "redis-cli --cluster create: $out$err" if $rc;
    $self->{created} = 1;
    $self->wait_ok;
    return $self;
}

sub nodes { @{$_[0]{nodes}} }
sub port  { $_[0]{nodes}[0]->port }
sub ports { map { $_->port } @{$_[0]{nodes}} }

# node_cli(NODE, ARGS...): redis-cli on that node (no redirections)
sub node_cli {
    my ($self, $node, @args) = @_;
    my ($rc, $out, $err) = PayGW::Test::_run(
        ['redis-cli', '-h', '127.0.0.1', '-p', $node->port, @args]);
    die "redis-cli -p " . $node->port . " @args: $err" if $rc;
    chomp $out;
    return $out;
}

# cli(ARGS...): through any live node, following redirections; the
# commands about the whole keyspace or each server (KEYS, --scan,
# FLUSHALL, DBSIZE, SCRIPT, INFO) on every master, their outputs joined.
sub cli {
    my ($self, @args) = @_;
    if ($args[0] =~ /^(?:KEYS|--scan|FLUSHALL|FLUSHDB|DBSIZE|SCRIPT|INFO)$/i) {
        my @out;
        for my $node ($self->live) {
            next unless $self->node_cli($node, 'ROLE') =~ /^master/;
            my $o = $self->node_cli($node, @args);
            push @out, $o if length $o;
        }
        return $args[0] =~ /^DBSIZE$/i ? eval { my $t = 0; $t += $_ for @out; $t }
             : "@args" =~ /^(?:FLUSH|SCRIPT FLUSH)/i ? 'OK' : join("\n", @out);
    }
    my ($node) = grep { $_->_alive } @{$self->{nodes}};
    my ($rc, $out, $err) = PayGW::Test::_run(
        ['redis-cli', '-c', '-h', '127.0.0.1', '-p', $node->port, @args]);
    die "redis-cli -c @args: $err" if $rc;
    chomp $out;
    return $out;
}

sub live { grep { $_->_alive } @{$_[0]{nodes}} }

# the whole cluster at once, as a single Redis in the other tests: stop,
# kill, start_again (empty, the same nodes), freeze, thaw
sub stop { $_->_term for $_[0]->nodes; $_->stop for $_[0]->nodes }
sub kill { $_->kill for $_[0]->nodes }
sub freeze { $_->freeze for $_[0]->nodes }
sub thaw { $_->thaw for $_[0]->nodes }
sub _alive { scalar grep { $_->_alive } $_[0]->nodes }
sub start_again {
    my ($self) = @_;
    $_->start_again for grep { !$_->_alive } $self->nodes;
    return $self->wait_ok;
}

sub _node_by_port {
    my ($self, $port) = @_;
    my ($n) = grep { $_->port == $port } @{$self->{nodes}};
    return $n;
}

sub slot_of {
    my ($self, $key) = @_;
    return $self->cli('CLUSTER', 'KEYSLOT', $key) + 0;
}

# master_of(KEY or slot number): the node that serves it now, as the
# live nodes see it (PayGW::Test::Redis)
sub master_of {
    my ($self, $what) = @_;
    my $slot = $what =~ /^\d+$/ ? $what : $self->slot_of($what);
    for my $line (split /\n/, $self->cli('CLUSTER', 'NODES')) {
        my ($id, $addr, $flags, $master, @rest) = split ' ', $line;
        next unless $flags =~ /master/ && $flags !~ /fail/;
        my @ranges = @rest[4 .. $#rest];
        for my $r (@ranges) {
            next if $r =~ /^\[/;
            my ($lo, $hi) = split /-/, $r;
            $hi //= $lo;
            if ($slot >= $lo && $slot <= $hi) {
                my ($port) = $addr =~ /:(\d+)/;
                return $self->_node_by_port($port);
            }
        }
    }
    return undef;
}

# port_for(KEY): the port of the master that serves KEY now
sub port_for { $_[0]->master_of($_[1])->port }

sub node_id {
    my ($self, $node) = @_;
    return $self->node_cli($node, 'CLUSTER', 'MYID');
}

# wait_ok(timeout => 30): every live node says cluster_state:ok and they
# agree on who serves every slot
sub wait_ok {
    my ($self, %o) = @_;
    my $ok = PayGW::Test::wait_until(sub {
        my %view;
        for my $node ($self->live) {
            my $info = eval { $self->node_cli($node, 'CLUSTER', 'INFO') } // '';
            return 0 unless $info =~ /cluster_state:ok/;
            my $slots = eval { $self->node_cli($node, 'CLUSTER', 'SLOTS') }
                // return 0;
            $view{$slots} = 1;
        }
        return keys %view == 1;
    }, timeout => $o{timeout} // 30, interval => 0.1);
    die "the Redis Cluster did not settle\n" unless $ok;
    return $self;
}

# migrate_slot(SLOT, TO_NODE, batch => 10, between => CODE): moves a slot
# and its keys the way redis-cli --cluster reshard does, a batch of keys
# at a time; between the steps $o{between}->() runs (requests in flight).
sub migrate_slot {
    my ($self, $slot, $to, %o) = @_;
    my $from = $self->master_of($slot) or die "no master for slot $slot\n";
    die "slot $slot is already on " . $to->port . "\n" if $from == $to;
    my ($from_id, $to_id) = map { $self->node_id($_) } $from, $to;
    my $between = $o{between} // sub {};
    $self->node_cli($to, 'CLUSTER', 'SETSLOT', $slot, 'IMPORTING', $from_id);
    $self->node_cli($from, 'CLUSTER', 'SETSLOT', $slot, 'MIGRATING', $to_id);
    $between->();
    while (1) {
        my @keys = grep { length }
            split /\n/, $self->node_cli($from, 'CLUSTER', 'GETKEYSINSLOT',
                                        $slot, $o{batch} // 10);
        last unless @keys;
        my $out = $self->node_cli($from, 'MIGRATE', '127.0.0.1', $to->port,
                                  '', 0, 5000, 'KEYS', @keys);
        die "MIGRATE: $out\n" unless $out =~ /OK|NOKEY/;
        $between->();
    }
    for my $n (grep { $_->_alive } $to, $from, $self->nodes) {
        $self->node_cli($n, 'CLUSTER', 'SETSLOT', $slot, 'NODE', $to_id);
    }
    return $from;
}

1;
