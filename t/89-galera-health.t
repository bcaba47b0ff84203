#!/usr/bin/perl
# The health check of a Galera cluster's nodes and the one writer that
# every worker follows (issue 14).  Three workers on a 3-node cluster:
#   - /readyz shows each node's state and the writer, /metrics the same;
#   - a writer that is up but not synced (wsrep_desync) is kept out: the
#     writes move to the next synced node, and every worker's pooled
#     connections follow (the server's process list shows them);
#   - a node that is synced again does not take the writes back (sticky);
#   - the writer SIGKILLed under load: the first synced node takes over
#     for all workers, nothing lost or doubled, no wrong answer;
#   - the killed node rejoins and is checked healthy again.
use strict;
use warnings;

use Test::More;
use JSON::PP ();
use POSIX ();
use Time::HiRes qw(time sleep);

use PayGW::Gateway qw(err_code sql_quote);
use PayGW::Test qw(http wait_until);

# the default configuration, with connections spread over the workers
# (reuseport) and each answer naming the worker that gave it
my $http = $PayGW::Gateway::DEFAULT_HTTP;
$http =~ s/listen 127\.0\.0\.1:%%PORT%%;/listen 127.0.0.1:%%PORT%% reuseport;\n        add_header X-Worker \$pid always;/
    or die "no listen line in the default configuration\n";
my $gw = PayGW::Gateway->start(workers => 3, galera => 1, http => $http);
my $g = $gw->db;

sub readyz { http(GET => $gw->url('/readyz'), timeout => 15) }

# the cluster as /readyz shows it: {writer, writer_changes, nodes => [...]}
sub cluster { readyz()->{json}{backends}{mysql}{main} // {} }
sub states  { join ',', map { $_->{state} } @{ cluster()->{nodes} // [] } }

# the nodes (1-based) where the gateway's pool has connections: user
# paygw in database paygw (the health check's probes select none)
sub pool_nodes {
    my @on;
    for my $i (0 .. 2) {
        my $n = $g->node($i);
        next unless $n->_alive;
        my $c = $n->sql("SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                        . "WHERE USER = 'paygw' AND DB = 'paygw'");
        push @on, $i + 1 if $c =~ /^(\d+)/ && $1 > 0;
    }
    return join ',', @on;
}

# the writer as every worker sees it: {worker pid => writer}, after
# enough /readyz (new connections, spread by reuseport) to meet each
sub writers {
    my %w;
    for (1 .. 30) {
        my $r = readyz();
        $w{$r->{headers}{'x-worker'} // '?'}{$r->{json}{backends}{mysql}{main}{writer} // '?'} = 1;
    }
    return join ' ', map { "$_:" . join('/', sort keys %{$w{$_}}) } sort keys %w;
}

sub agree {
    my ($name, $writer) = @_;
    my $w = writers();
    my @pids = $w =~ /(\S+):/g;
    cmp_ok(scalar @pids, '>=', 2, "$name: /readyz answered by several workers");
    is(scalar(grep { !/:\Q$writer\E$/ } split / /, $w), 0,
       "... every one of them names node $writer as the writer") or diag($w);
}

sub create_ok {
    my ($r, $body) = @_;
    return $r->{status} == 201
        && ($r->{json}{business_no} // '') eq $body->{business_no}
        && ($r->{json}{amount} // -1) == $body->{amount};
}

# ---- all synced ---------------------------------------------------------------

ok(wait_until(sub { states() eq 'synced,synced,synced' }, timeout => 20),
   'the health check finds the three nodes synced') or diag(readyz()->{body});
{
    my $r = readyz();
    is($r->{status}, 200, '/readyz 200');
    my $c = $r->{json}{backends}{mysql}{main};
    is_deeply([$c->{writer}, $c->{writer_changes},
               [map { $_->{writer} ? 1 : 0 } @{$c->{nodes}}]],
              [1, 0, [1, 0, 0]], '... host= is the writer, no change yet')
        or diag($r->{body});
    is_deeply($r->{json}{backends}{redis},
              {mode => 'single', reachable => JSON::PP::true},
              '... Redis: a single server, reachable');
    unlike($r->{body}, qr/127\.0\.0\.1|:\d{4,5}\b/, '... and no addresses');
}
my @ports = map { $g->node($_)->port } 0 .. 2;
sub metric_nodes {
    my ($name) = @_;
    return join ',', map {
        $gw->metric($name . qq{{server="main",node="127.0.0.1:$_"}}) // 'none'
    } @ports;
}
is(metric_nodes('paygw_mysql_node_healthy'), '1,1,1',
   'metrics: paygw_mysql_node_healthy 1 for each node');
is(metric_nodes('paygw_mysql_node_writer'), '1,0,0',
   'metrics: paygw_mysql_node_writer names host=');
agree('all synced', 1);

# reads wait for the cluster (wsrep_sync_wait on every Galera connection):
# the writer counts them as causal reads (0 without it)
{
    my $before = $g->node(0)->status('wsrep_causal_reads');
    my $ok = 0;
    for (1 .. 3) {
        my $made = $gw->create(amount => 4300 + $_);
        $ok++ if $made->{status} == 201
            && $gw->get_payment($made->{json}{payment_no})->{status} == 200;
    }
    is($ok, 3, 'three payments made and read back');
    cmp_ok($g->node(0)->status('wsrep_causal_reads'), '>=', $before + 3,
           '... their reads were causal reads on the writer (wsrep_sync_wait)');
}

# ---- load from two clients, spread over the three workers --------------------

my $file = PayGW::Test::_mkdir('load') . '/results';
my $stop = "$file.stop";
my @kids;
for my $k (1 .. 2) {
    my $pid = fork // die "fork: $!\n";
    if (!$pid) {
        my $json = JSON::PP->new->canonical;
        open my $out, '>>', $file or POSIX::_exit(1);
        $out->autoflush(1);
        my $n = 0;
        until (-e $stop) {
            my $body = PayGW::Gateway->payment_body(amount => 1000 * $k + $n++);
            my $key = $gw->fresh_key("g89h$k");
            my $r = $gw->create($body, idempotency_key => $key, timeout => 30);
            my %rec = (op => 'create', status => $r->{status}, key => $key,
                       body => $body, answer => $r->{body},
                       ok => create_ok($r, $body) ? 1 : 0,
                       no => $r->{json}{payment_no} // '');
            print {$out} $json->encode(\%rec), "\n";
            next unless $r->{status} == 201;
            $r = $gw->get_payment($rec{no});
            print {$out} $json->encode({op => 'get', status => $r->{status},
                answer => $r->{body},
                ok => ($r->{status} == 200
                       && ($r->{json}{amount} // -1) == $body->{amount}) ? 1 : 0}),
                "\n";
        }
        POSIX::_exit(0);
    }
    push @kids, $pid;
}
ok(wait_until(sub { -s $file }, timeout => 20), 'load running');
ok(wait_until(sub { pool_nodes() eq '1' }, timeout => 10),
   "every worker's connections are on node 1") or diag(pool_nodes());

# ---- the writer up but not synced ---------------------------------------------

$g->node(0)->sql('SET GLOBAL wsrep_desync = ON');
ok(wait_until(sub { my $c = cluster();
                    ($c->{nodes}[0]{state} // '') eq 'not_synced'
                    && ($c->{writer} // 0) == 2 }, timeout => 10),
   'node 1 desynced: shown not_synced, the writes go to node 2')
    or diag(readyz()->{body});
ok(wait_until(sub { pool_nodes() eq '2' }, timeout => 10),
   "... every worker's connections moved to node 2, none left on node 1")
    or diag(pool_nodes());
is(readyz()->{status}, 200, '... /readyz 200: a synced writer is there');
agree('node 1 desynced', 2);

$g->node(0)->sql('SET GLOBAL wsrep_desync = OFF');
ok(wait_until(sub { states() eq 'synced,synced,synced' }, timeout => 10),
   'node 1 synced again') or diag(readyz()->{body});
sleep 2.5;    # two more rounds of the 1 s check
is(cluster()->{writer}, 2, '... and the writes stay on node 2 (sticky)');
is(pool_nodes(), '2', "... so do every worker's connections");

# no node synced: nothing better to write to, the writer stays, not ready.
# The other two first, seen by the check, then the writer: desynced in
# another order, a check between two of the statements could rightly move
# the writes to a node still synced (seen once under ASan).
$g->node($_)->sql('SET GLOBAL wsrep_desync = ON') for 0, 2;
ok(wait_until(sub { states() eq 'not_synced,synced,not_synced' },
              timeout => 10), 'nodes 1 and 3 desynced first: the writer stays')
    or diag(readyz()->{body});
$g->node(1)->sql('SET GLOBAL wsrep_desync = ON');
ok(wait_until(sub { states() eq 'not_synced,not_synced,not_synced' },
              timeout => 10), 'all three desynced: shown not_synced')
    or diag(readyz()->{body});
{
    my $r = readyz();
    my $c = $r->{json}{backends}{mysql}{main} // {};
    is($r->{status}, 503, '... /readyz 503');
    is_deeply([$r->{json}{checks}{mysql}, $r->{json}{error}{message},
               $c->{writer}, $c->{writer_available}],
              ['unavailable', 'mysql cluster has no healthy writer', 2,
               JSON::PP::false],
              '... mysql unavailable: no healthy writer; node 2 stays the writer')
        or diag($r->{body});
}
# the writer first: were another synced before it, the writes would move
$g->node(1)->sql('SET GLOBAL wsrep_desync = OFF');
ok(wait_until(sub { readyz()->{status} == 200 }, timeout => 10),
   'node 2 synced again: /readyz 200');
is(cluster()->{writer}, 2, '... node 2 still the writer');
$g->node($_)->sql('SET GLOBAL wsrep_desync = OFF') for 0, 2;
ok(wait_until(sub { states() eq 'synced,synced,synced' }, timeout => 10),
   'all synced again') or diag(readyz()->{body});
is(cluster()->{writer}, 2, '... node 2 still the writer');

# ---- the writer SIGKILLed under load -------------------------------------------

my $killed = time;
$g->node(1)->kill;
note('killed the writer, node 2, port ' . $g->node(1)->port);
ok(wait_until(sub { $gw->create(amount => 555)->{status} == 201 },
              timeout => 10, interval => 0.1),
   'creates answer again within 10 s of the kill');
note(sprintf 'failover seen after %.1f s', time - $killed);
ok(wait_until(sub { my $c = cluster();
                    ($c->{nodes}[1]{state} // '') eq 'unreachable'
                    && ($c->{writer} // 0) == 1 }, timeout => 10),
   '/readyz: node 2 unreachable, the first synced node (1) writes')
    or diag(readyz()->{body});
ok(wait_until(sub { pool_nodes() eq '1' }, timeout => 10),
   "... every worker's connections are on node 1") or diag(pool_nodes());
agree('node 2 killed', 1);
sleep 1;
{ open my $fh, '>', $stop or die; }
waitpid $_, 0 for @kids;

my @res;
{
    open my $fh, '<', $file or die;
    push @res, JSON::PP->new->decode($_) while <$fh>;
}
my %by;
$by{"$_->{op} $_->{status}"}++ for @res;
note('load: ' . join ', ', map { "$_: $by{$_}" } sort keys %by);
ok(scalar(grep { $_->{op} eq 'create' } @res) >= 5, 'requests ran');
my @wrong = grep { !$_->{ok} && $_->{status} != 503
                   && !($_->{status} == 504
                        && ($_->{answer} // '') =~ /"code":"backend_unavailable"/)
                   && !($_->{op} eq 'create' && $_->{status} == 202) } @res;
is(scalar @wrong, 0, 'no wrong answer: 503/504 unavailable, 202 or the right one')
    or diag(join "\n", map { "$_->{op} $_->{status} $_->{answer}" }
                           @wrong[0 .. ($#wrong < 4 ? $#wrong : 4)]);
my $lost = grep {
    $g->sql("SELECT COUNT(*) FROM payments WHERE payment_no = "
            . sql_quote($_->{no})) ne "1\n"
} grep { $_->{op} eq 'create' && $_->{status} == 201 } @res;
is($lost, 0, 'no payment lost: every 201 has its row on the survivors');
is($g->sql("SELECT COUNT(*) FROM (SELECT 1 FROM payments GROUP BY merchant_id, "
           . "business_no HAVING COUNT(*) > 1) d"), "0\n",
   'no business_no has two payments');
my %charges;
$charges{$_->{out_trade_no}}++ for @{ $gw->sim->charges->{charges} };
is(scalar(grep { $_ > 1 } values %charges), 0,
   'the acquirer never charged a payment twice');

# ---- the killed node rejoins ----------------------------------------------------

$g->node(1)->start_again;
ok(wait_until(sub { states() eq 'synced,synced,synced' }, timeout => 20),
   'the killed node rejoined and is checked synced again')
    or diag(readyz()->{body});
{
    my $r = readyz();
    is($r->{status}, 200, '/readyz 200');
    my $c = $r->{json}{backends}{mysql}{main};
    # a rejoin may make the writer an IST donor (not synced) for a moment:
    # the writer may have moved again since, but only ever forward
    cmp_ok($c->{writer_changes}, '>=', 2, '... writer changes counted');
    is($gw->metric('paygw_mysql_writer_changes_total{server="main"}'),
       $c->{writer_changes}, '... as in paygw_mysql_writer_changes_total');
    is(metric_nodes('paygw_mysql_node_healthy'), '1,1,1',
       '... paygw_mysql_node_healthy 1 for each node again');
    is(metric_nodes('paygw_mysql_node_writer'),
       join(',', map { $_ == $c->{writer} ? 1 : 0 } 1 .. 3),
       '... paygw_mysql_node_writer names the same writer');
}
my $r = $gw->create(amount => 556);
is($r->{status}, 201, 'and the gateway still works') or diag($r->{body});

my $log = $gw->ngx->error_log;
my @moves = $log =~ /\[warn\].*paygw mysql "main": writer \S+ is \w+, writes go to/g;
cmp_ok(scalar @moves, '>=', 2, 'each writer change is a warning in the error log');
my @bad = $log =~ /^.*(?:\[(?:alert|emerg)\]|exited on signal).*$/mg;
is(join("\n", @bad), '', 'no crash, alert or emerg in the error log');

done_testing;
