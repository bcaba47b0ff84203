#!/usr/bin/perl
# The gateway on a Redis Cluster (issue 14): 3 masters and 3 replicas on
# loopback, paygw_redis_cluster on.  Payments, GETs, refunds and
# idempotent replays through it; a merchant's slot migrated to another
# master (SETSLOT IMPORTING/MIGRATING, MIGRATE ... KEYS, SETSLOT NODE)
# while requests run: no error reaches a client; the master of that slot
# SIGKILLed under load: its replica takes over, the gateway follows within
# 10 s, 503s meanwhile and never a wrong answer, and replays of every
# create -- whose idempotency record the failover may have lost, since
# replication is asynchronous -- never make a second payment or charge
# (MySQL's unique business_no; docs/operations.md).  Pipelines whose
# commands' keys hash to slots of several masters (through the test-only
# /_test/backend: no production call makes one) are split by node and
# answered in order, also while one of their slots migrates.
# The cluster starts in about 3 s, so this runs in every `make test`.
use strict;
use warnings;

use Test::More;
use JSON::PP ();
use Digest::SHA ();
use POSIX ();
use Time::HiRes qw(time sleep);

use PayGW::Gateway qw(err_code);
use PayGW::Test qw(wait_until);

my $http = $PayGW::Gateway::DEFAULT_HTTP;
$http =~ s{(\n\s*location = /metrics[^\n]*)}
          {$1\n        location = /_test/backend { paygw_test_backend; }}
    or die "no /metrics location in the default configuration\n";
my $gw = PayGW::Gateway->start(workers => 2, redis_cluster => 1,
                               test_module => 1, http => $http);
my $rc = $gw->redis;
isa_ok($rc, 'PayGW::Test::RedisCluster');
like($gw->http_conf, qr/paygw_redis_cluster on/, 'nginx runs in cluster mode');

my $TAG = 'pg:{M100}:x';     # hashes to the slot of every M100 key

sub create_ok {
    my ($r, $body) = @_;
    return $r->{status} == 201
        && ($r->{json}{business_no} // '') eq $body->{business_no}
        && ($r->{json}{amount} // -1) == $body->{amount}
        && ($r->{json}{payment_no} // '') ne '';
}

# ---- payments, GETs, refunds, replays ---------------------------------------

{
    my $r = PayGW::Test::http(GET => $gw->url('/readyz'));
    is($r->{status}, 200, '/readyz: PING through the cluster') or diag($r->{body});
    is_deeply($r->{json}{backends}{redis},
              {mode => 'cluster', reachable => JSON::PP::true, cluster_state => 'ok'},
              '... its body: Redis in cluster mode, cluster_state ok')
        or diag($r->{body});
}

my %made;      # business_no => payment_no
{
    my $body = PayGW::Gateway->payment_body(amount => 2500);
    my $key = $gw->fresh_key('k88');
    my $r = $gw->create($body, idempotency_key => $key);
    ok(create_ok($r, $body), 'created through the cluster') or diag($r->{body});
    my $no = $r->{json}{payment_no};
    $made{$body->{business_no}} = $no;

    my $again = $gw->create($body, idempotency_key => $key);
    is($again->{body}, $r->{body}, 'the same key replays the answer');
    is($again->{headers}{'idempotent-replayed'}, 'true', '... marked a replay');

    my $get = $gw->get_payment($no);
    is($get->{status}, 200, 'GET through the cluster');
    is($get->{json}{amount}, 2500, '... the payment');

    my $ref = $gw->api(POST => "/v1/payments/$no/refunds",
                       json => {refund_no => "R-$no", amount => 1000,
                                reason => 'customer request'},
                       idempotency_key => $gw->fresh_key('k88r'));
    like($ref->{status}, qr/^20[12]$/, 'a refund through the cluster')
        or diag($ref->{body});

    my $master = $rc->master_of($TAG);
    my @keys = grep { length }
        split /\n/, $rc->node_cli($master, 'KEYS', 'pg:{M100}:i:*');
    ok(@keys >= 2, "the merchant's idempotency records are on its slot's "
       . 'master (' . $master->port . ')');
    my @nonces = grep { length }
        split /\n/, $rc->node_cli($master, 'KEYS', 'pg:{M100}:n:*');
    ok(@nonces >= 4, '... and so are its nonces');
}

# ---- load: a child process makes creates, GETs and refunds ------------------

# start_load(NAME): forks the load; stop_load(LOAD) -> [results]
sub start_load {
    my ($name) = @_;
    my $file = PayGW::Test::_mkdir("load-$name") . '/results';
    my $stop = "$file.stop";
    my $pid = fork // die "fork: $!\n";
    if (!$pid) {
        my $json = JSON::PP->new->canonical;
        open my $out, '>>', $file or POSIX::_exit(1);
        $out->autoflush(1);
        my $n = 0;
        until (-e $stop) {
            my $body = PayGW::Gateway->payment_body(amount => 100 + $n++);
            my $key = $gw->fresh_key("load-$name");
            my $t = time;
            my $r = $gw->create($body, idempotency_key => $key, timeout => 20);
            my %rec = (op => 'create', t => $t, status => $r->{status},
                       key => $key, body => $body,
                       ok => create_ok($r, $body) ? 1 : 0,
                       answer => $r->{body});
            print {$out} $json->encode(\%rec), "\n";
            next unless $r->{status} == 201;
            my $no = $r->{json}{payment_no};
            $r = $gw->get_payment($no);
            print {$out} $json->encode({op => 'get', t => time,
                status => $r->{status}, answer => $r->{body},
                ok => ($r->{status} == 200
                       && ($r->{json}{payment_no} // '') eq $no
                       && ($r->{json}{amount} // -1) == $body->{amount})
                      ? 1 : 0}), "\n";
            next if $n % 3;
            $r = $gw->api(POST => "/v1/payments/$no/refunds",
                          json => {refund_no => "R-$no", amount => $body->{amount},
                                   reason => 'customer request'},
                          idempotency_key => $gw->fresh_key("load-r-$name"),
                          timeout => 20);
            print {$out} $json->encode({op => 'refund', t => time,
                status => $r->{status}, answer => $r->{body},
                ok => ($r->{status} =~ /^20[12]$/
                       && ($r->{json}{amount} // -1) == $body->{amount})
                      ? 1 : 0}), "\n";
        }
        close $out;
        POSIX::_exit(0);
    }
    return {pid => $pid, file => $file, stop => $stop};
}

sub stop_load {
    my ($load) = @_;
    open my $fh, '>', $load->{stop} or die;
    close $fh;
    waitpid $load->{pid}, 0;
    my @res;
    open $fh, '<', $load->{file} or return [];
    push @res, JSON::PP->new->decode($_) while <$fh>;
    return \@res;
}

sub count_results {
    my ($res) = @_;
    my %by;
    $by{"$_->{op} $_->{status}"}++ for @$res;
    return join ', ', map { "$_: $by{$_}" } sort keys %by;
}

# ---- a slot migration while requests run ------------------------------------

{
    my $slot = $rc->slot_of($TAG);
    my $from = $rc->master_of($slot);
    my ($to) = grep { $_ != $from && $rc->node_cli($_, 'ROLE') =~ /^master/ }
               $rc->live;
    my $load = start_load('migrate');
    ok(wait_until(sub { -s $load->{file} }, timeout => 20), 'load running');
    # Keys move in batches with requests in between.  While a slot is
    # half-moved Redis answers a multi-key script TRYAGAIN (our scripts
    # name the nonce and the idempotency key), so the gateway waits the
    # migration out within paygw_redis_timeout: the batches are sized so
    # that a whole slot moves well inside it (as operators do with
    # redis-cli --cluster reshard --cluster-pipeline), also on a loaded
    # machine; a few keys per MIGRATE would take longer than any client
    # waits once the slot holds a few hundred nonces.
    $rc->migrate_slot($slot, $to, batch => 200, between => sub { sleep 0.05 });
    sleep 1;
    my $back = $rc->migrate_slot($slot, $from, batch => 200,
                                 between => sub { sleep 0.05 });
    sleep 1;
    my $res = stop_load($load);
    note('migration: ' . count_results($res));
    ok(scalar(grep { $_->{op} eq 'create' } @$res) >= 5,
       'requests ran during the migrations');
    my @bad = grep { !$_->{ok} } @$res;
    is(scalar @bad, 0, 'no error and no wrong answer reached a client')
        or diag(join "\n", map { "$_->{op} $_->{status} $_->{answer}" }
                               @bad[0 .. ($#bad < 4 ? $#bad : 4)]);
    is($rc->master_of($slot)->port, $from->port, 'the slot is back');

    # every answer is still there for its key, wherever it moved
    my @creates = grep { $_->{op} eq 'create' } @$res;
    my $replayed = grep {
        my $r = $gw->create($_->{body}, idempotency_key => $_->{key});
        $r->{body} eq $_->{answer}
    } @creates;
    is($replayed, scalar @creates, 'every create replays its answer after '
       . 'the migrations');
}

# ---- pipelines across slots (the test-only /_test/backend) ------------------

# the slot of a key as Redis computes it: CRC16 (XMODEM) of its non-empty
# {hash tag} or else of the whole key
sub key_slot {
    my ($k) = @_;
    $k = $1 if $k =~ /^[^{]*\{([^}]*)\}/ && length $1;
    my $crc = 0;
    for my $c (unpack 'C*', $k) {
        $crc ^= $c << 8;
        $crc = $crc & 0x8000 ? (($crc << 1) ^ 0x1021) & 0xffff
                             : ($crc << 1) & 0xffff for 1 .. 8;
    }
    return $crc & 16383;
}

sub pipeline {
    my (@cmds) = @_;
    return PayGW::Test::http(POST => $gw->url('/_test/backend'),
                             json => {redis => \@cmds}, timeout => 20);
}

# a reply as plain Perl: arrays as array refs, nil as undef
sub flat {
    my ($x) = @_;
    return $x->{type} eq 'array' ? [map { flat($_) } @{$x->{value}}]
         : $x->{type} eq 'nil' ? undef : $x->{value};
}

sub replies_of {
    my ($r) = @_;
    return undef unless $r->{status} == 200 && ref $r->{json} eq 'HASH';
    return [map { flat($_) } @{$r->{json}{replies}}];
}

my %tag_on;     # master port => a hash tag of a slot it serves
{
    is(key_slot($TAG), $rc->slot_of($TAG), 'the test hashes keys as Redis');
    for my $i (0 .. 300) {
        my $master = $rc->master_of(key_slot("{s$i}")) or next;
        $tag_on{$master->port} //= "s$i";
        last if keys %tag_on == 3;
    }
    is(scalar keys %tag_on, 3, 'a hash tag served by each of the 3 masters');
}
my @tags = map { $tag_on{$_} } sort keys %tag_on;

{
    my ($ta, $tb, $tc) = @tags;
    my $r = pipeline(['SET', "x:{$ta}", 'va'], ['SET', "x:{$tb}", 'vb'],
                     ['RPUSH', "l:{$tc}", 'one'], ['PING'],
                     ['GET', "x:{$ta}"], ['RPUSH', "l:{$tc}", 'two'],
                     ['GET', "x:{$tb}"], ['INCR', "n:{$ta}"],
                     ['RPUSH', "l:{$tc}", 'three'], ['INCR', "n:{$ta}"],
                     ['LRANGE', "l:{$tc}", '0', '-1'], ['GET', "no:{$tb}"],
                     ['EVAL', "return redis.call('INCRBY', KEYS[1], ARGV[1])",
                      '1', "n:{$tb}", '5']);
    is($r->{status}, 200, 'a pipeline over three masters: answered')
        or diag($r->{body});
    is_deeply(replies_of($r),
              ['OK', 'OK', 1, 'PONG', 'va', 2, 'vb', 1, 3, 2,
               ['one', 'two', 'three'], undef, 5],
              '... every reply in the order of its command');
    my %want = ("x:{$ta}" => 'va', "x:{$tb}" => 'vb');
    my $placed = grep {
        $rc->node_cli($rc->master_of(key_slot($_)), 'GET', $_) eq $want{$_}
    } keys %want;
    is($placed, 2, "... each key on its slot's master");

    # one command's keys must share a slot, a script's too: refused whole,
    # before anything is sent
    for my $bad (['MGET', "x:{$ta}", "x:{$tb}"],
                 ['EVAL', "return redis.call('GET', KEYS[2])", '2',
                  "x:{$ta}", "x:{$tb}"])
    {
        $r = pipeline(['SET', "z:{$tc}", '1'], $bad);
        isnt($r->{status}, 200, "$bad->[0] over two slots: refused");
    }
    is($rc->cli('EXISTS', "z:{$tc}"), 0, '... and nothing of it ran');
}

# A load of split pipelines while the slot of one of their tags migrates
# and comes back: counters and list lengths say that no command ran
# twice or not at all; a key already moved is written on the importing
# node (ASK).  (A few keys only: the slot moves in a few batches.)
{
    my ($mig, $other) = @tags[0, 1];
    my $slot = key_slot("{$mig}");
    my $from = $rc->master_of($slot);
    my ($to) = grep { $_ != $from && $rc->node_cli($_, 'ROLE') =~ /^master/ }
               $rc->live;
    my $before = $rc->node_cli($from, 'CLUSTER', 'COUNTKEYSINSLOT', $slot);
    my $file = PayGW::Test::_mkdir('load-split') . '/results';
    my $stop = "$file.stop";
    my $pid = fork // die "fork: $!\n";
    if (!$pid) {
        my $json = JSON::PP->new->canonical;
        open my $out, '>>', $file or POSIX::_exit(1);
        $out->autoflush(1);
        for (my $n = 0; !-e $stop; $n++) {
            my $t = time;
            my $r = pipeline(['INCR', "m:{$mig}"],
                             ['RPUSH', "q:{$other}", "$n"],
                             ['INCR', "m:{$mig}"],
                             ['SET', "v:{$mig}:" . $n % 20, "$n"],
                             ['RPUSH', "q:{$mig}", "$n"]);
            my $got = replies_of($r);
            my $ok = $got && "@$got" eq join ' ', 2 * $n + 1, $n + 1,
                                                  2 * $n + 2, 'OK', $n + 1;
            print {$out} $json->encode({t => $t, n => $n, ok => $ok ? 1 : 0,
                                        answer => "$r->{status} $r->{body}"}),
                         "\n";
            last unless $ok;
        }
        close $out;
        POSIX::_exit(0);
    }
    ok(wait_until(sub { -s $file }, timeout => 20), 'split pipelines running');
    my $t0 = time;
    $rc->migrate_slot($slot, $to, batch => 10, between => sub { sleep 0.1 });
    my $t1 = time;
    sleep 0.5;
    $rc->migrate_slot($slot, $from, batch => 10, between => sub { sleep 0.1 });
    my $t2 = time;
    sleep 0.5;
    open my $fh, '>', $stop or die;
    close $fh;
    waitpid $pid, 0;
    open $fh, '<', $file or die;
    my @res = map { JSON::PP->new->decode($_) } <$fh>;
    my $during = grep { ($_->{t} > $t0 && $_->{t} < $t1)
                        || ($_->{t} > $t1 + 0.5 && $_->{t} < $t2) } @res;
    note(scalar(@res) . " pipelines, $during while the slot moved");
    ok($during >= 5, 'pipelines ran while the slot migrated');
    my @bad = grep { !$_->{ok} } @res;
    is(scalar @bad, 0, 'every reply right, in order, during the migrations')
        or diag(join "\n", map { "#$_->{n}: $_->{answer}" } @bad);
    my $n = @res;
    is($rc->cli('GET', "m:{$mig}"), 2 * $n, 'no INCR ran twice or never');
    is($rc->cli('LLEN', "q:{$other}"), $n, 'no RPUSH ran twice or never');
    is($rc->cli('LRANGE', "q:{$mig}", 0, -1), join("\n", 0 .. $n - 1),
       '... and in the order sent');
    is($rc->node_cli($from, 'CLUSTER', 'COUNTKEYSINSLOT', $slot),
       $before + 2 + ($n < 20 ? $n : 20),
       "every key of the slot is back on its master");
}

# ---- a master SIGKILLed under load ------------------------------------------

{
    my $master = $rc->master_of($TAG);
    my $load = start_load('kill');
    ok(wait_until(sub { -s $load->{file} }, timeout => 20), 'load running');
    sleep 1;
    my $killed = time;
    $master->kill;
    note('killed the master on ' . $master->port);
    my $back = wait_until(sub {
        my $new = eval { $rc->master_of($TAG) };
        $new && $new != $master && $gw->create(amount => 777)->{status} == 201;
    }, timeout => 10, interval => 0.1);
    ok($back, 'the gateway answers again within 10 s of the kill')
        or diag(sprintf '%.1f s', time - $killed);
    note(sprintf 'failover seen after %.1f s', time - $killed);
    sleep 1;
    my $res = stop_load($load);
    note('kill: ' . count_results($res));

    my @wrong = grep { !$_->{ok} && $_->{status} != 503 } @$res;
    is(scalar @wrong, 0, 'no wrong answer: 503 or the right one')
        or diag(join "\n", map { "$_->{op} $_->{status} $_->{answer}" }
                               @wrong[0 .. ($#wrong < 4 ? $#wrong : 4)]);
    my @late = grep { !$_->{ok} && $_->{t} > $killed + 10 } @$res;
    is(scalar @late, 0, 'no error once 10 s passed');

    # replays: the record may be gone (asynchronous replication), the
    # payment never doubles
    # (or only its lock survived: in use until the lock expires)
    my ($same, $dup, $inuse, $new, $other) = (0, 0, 0, 0, 0);
    for my $c (grep { $_->{op} eq 'create' } @$res) {
        my $r = $gw->create($c->{body}, idempotency_key => $c->{key});
        if ($c->{status} == 201 && $r->{body} eq $c->{answer}) { $same++ }
        elsif ($r->{status} == 409 && err_code($r) eq 'duplicate_business_no') { $dup++ }
        elsif ($r->{status} == 409 && err_code($r) eq 'idempotency_key_in_use') { $inuse++ }
        elsif ($c->{status} == 503 && create_ok($r, $c->{body})) { $new++ }
        else { $other++; diag("replay: was $c->{status}, now $r->{status} $r->{body}") }
    }
    note("replays: $same replayed, $dup refused as duplicate_business_no, "
         . "$inuse idempotency_key_in_use, $new made at last");
    is($other, 0, 'every replay: the same answer, or the existing payment');
    my $dups = $gw->sql1("SELECT COUNT(*) FROM (SELECT business_no FROM payments "
                         . "GROUP BY merchant_id, business_no HAVING COUNT(*) > 1) d");
    is($dups, 0, 'no business_no has two payments');
    my %charges;
    $charges{$_->{out_trade_no}}++ for @{ $gw->sim->charges->{charges} };
    is(scalar(grep { $_ > 1 } values %charges), 0,
       'the acquirer never charged a payment twice');
    my $rows = $gw->count_rows('payments');
    is($rows, scalar keys %charges, 'one charge per payment row');

    # what a lost record (the last writes before the kill, not yet on the
    # replica) does, made certain: the record deleted, the replay finds
    # the payment through MySQL and charges nothing
    # (a create whose record is there: the kill itself may have lost
    # some, which the replays above already went through)
    my $rkey_of = sub { 'pg:{M100}:i:' . Digest::SHA::sha256_hex($_[0]{key}) };
    my ($c) = grep { $_->{op} eq 'create' && $_->{status} == 201
                     && $rc->cli('EXISTS', $rkey_of->($_)) == 1 } @$res;
    my $rkey = $rkey_of->($c);
    is($rc->cli('DEL', $rkey), 1, 'an idempotency record lost');
    my $before = $gw->snapshot;
    my $r = $gw->create($c->{body}, idempotency_key => $c->{key});
    is($r->{status}, 409, 'its replay: 409') or diag($r->{body});
    is(err_code($r), 'duplicate_business_no', '... duplicate_business_no');
    $gw->nothing_written($before, 'the replay of a lost record');

    $master->start_again;
    $rc->wait_ok;
    is($rc->node_cli($master, 'ROLE') =~ /^slave/ ? 1 : 0, 1,
       'the old master came back as a replica');
    $r = $gw->create(amount => 778);
    is($r->{status}, 201, 'and the gateway still works') or diag($r->{body});
}

done_testing;
