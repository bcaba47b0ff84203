#!/usr/bin/perl
# make drill-ha (= PAYGW_HA=1 make drill): the failover drill of issue 14,
# not part of make test.
#
# A gateway (2 workers, the settler every 2 s) on a Redis Cluster (3
# masters, 3 replicas, cluster-node-timeout 1 s) and a 3-node MariaDB
# Galera cluster (t/lib/PayGW/Cluster.pm, Galera.pm), every Redis node a
# seed of paygw_redis_pass, the other Galera nodes failover= of
# paygw_mysql.  CLIENTS processes create bank-card payments, refund some
# and read them back while the drill goes through its phases, PHASE
# seconds each:
#
#   steady          nothing happens
#   redis killed    SIGKILL of the master serving the merchant's slot
#   redis back      that node started again (it rejoins as a replica)
#   galera killed   SIGKILL of the Galera node taking the writes
#   galera back     that node started again (it rejoins through IST)
#   steady          nothing happens
#
# Every answer is judged as it comes (the client knows what it asked
# for): right, unavailable (503, 504 backend_unavailable, no answer) or
# wrong.  Per phase (by the time each answer came) it prints requests,
# answers by status, the longest stall (no successful answer at all; and
# no successful create or refund, since GETs may come from the Redis
# cache while MySQL fails over) and the time from the kill to the first
# successful create sent after it.  Then the settler runs until nothing
# is open and the invariants of make drill are checked
# (t/drill/lib/PayGW/Drill.pm).  It exits 1 on any of:
#   - a wrong answer, in any phase;
#   - an unavailable answer to a request sent outside [kill, kill + 10 s]
#     (failover must finish within 10 s; 503s are allowed during it);
#   - no successful create sent within 10 s of a kill;
#   - a violated invariant.
#
# Environment: DRILL_PHASE_SECONDS (20), DRILL_CLIENTS (4),
# DRILL_REPORT=FILE also writes the report there.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/../lib", "$FindBin::Bin/lib";
use JSON::PP ();
use POSIX ();
use File::Temp ();
use List::Util qw(max min sum0);
use Time::HiRes qw(time sleep);

use PayGW::Gateway qw(err_code);
use PayGW::Drill;
use PayGW::Test;

my $PHASE = $ENV{DRILL_PHASE_SECONDS} // 20;
my $CLIENTS = $ENV{DRILL_CLIENTS} // 4;
my $FAILOVER_MAX = 10;
my $TAG = 'pg:{M100}:x';        # the slot of every key of merchant M100
$| = 1;

# a Galera node rejoining after SIGKILL recovers, then catches up by
# IST: on a loaded machine that takes longer than the harness's default
$PayGW::Test::START_TIMEOUT = 120;

my $t_start = time;
my $gw = PayGW::Gateway->start(
    workers => 2, redis_cluster => 1, galera => 1, attempts => 2,
    provider_timeout => '2s', query_timeout => '3s', redis_timeout => '3s',
    unknown_grace => '15s', qr_channels => 0,
    extra_http => 'paygw_resolver 127.0.0.1:%%PORT%% key=ops interval=2s;');
my ($rc, $g) = ($gw->redis, $gw->db);

# every Redis node a seed, as scripts/stack.sh configures it: the drill
# may kill the one the harness named
{
    my $http = $gw->http_conf;
    my $seeds = join ' ', map { "server 127.0.0.1:$_;" } $rc->ports;
    $http =~ s/server 127\.0\.0\.1:%%REDIS_PORT%%;/$seeds/
        or die "drill: no Redis upstream to give seeds\n";
    $gw->reload($http);
}
my $dir = File::Temp::tempdir('paygw-drill-ha-XXXXXX', TMPDIR => 1, CLEANUP => 1);
printf "drill-ha: backends and nginx up in %.0f s; %d clients, %d s per "
       . "phase, gateway %s\n", time - $t_start, $CLIENTS, $PHASE, $gw->url;
print "drill-ha: redis cluster on ", join(',', $rc->ports), "; galera on ",
      join(',', map { $_->port } $g->nodes), "\n";

# ---- load -----------------------------------------------------------------

my $stop = "$dir/stop";
my @clients;
for my $n (1 .. $CLIENTS) {
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        client($n);
        POSIX::_exit(0);
    }
    push @clients, $pid;
}

sub unavailable {
    my ($r) = @_;
    return $r->{status} == 503 || $r->{status} == 599
        || ($r->{status} == 504
            && ($r->{body} // '') =~ /"code":"backend_unavailable"/);
}

# one JSON line per answer: op, t0 (sent), t1 (answered), status, verdict
# (ok, unavailable, wrong), why (for a wrong one), payment_no/refund_no
# (for the none-lost check)
sub client {
    my ($n) = @_;
    srand($$);
    my $json = JSON::PP->new->canonical;
    open my $out, '>', "$dir/client-$n.jsonl" or die "$!";
    $out->autoflush(1);
    my (@paid, %pay);
    until (-e $stop) {
        my $op = rand;
        my %rec;
        my $t0 = time;
        if ($op < 0.55 || !@paid) {
            my $body = PayGW::Gateway->payment_body(amount => 100 + int rand 10000);
            my $r = $gw->create($body, idempotency_key => $gw->fresh_key("ha$n"),
                                timeout => 30);
            my $j = $r->{json} // {};
            %rec = (op => 'create', status => $r->{status});
            my $same = ($j->{business_no} // '') eq $body->{business_no}
                && ($j->{amount} // -1) == $body->{amount}
                && ($j->{payment_no} // '') ne '';
            if ($r->{status} == 201 && $same && ($j->{status} // '') eq 'succeeded') {
                $rec{v} = 'ok';
                $rec{no} = $j->{payment_no};
                push @paid, $j->{payment_no};
                $pay{$j->{payment_no}} = {amount => $body->{amount}, refunded => 0,
                                          unsure => 0};
            } elsif ($r->{status} == 202 && $same) {
                $rec{v} = 'ok';         # outcome unknown: the settler's
                $rec{no} = $j->{payment_no};
            } elsif (unavailable($r)) {
                $rec{v} = 'unavailable';
            } else {
                @rec{qw(v why)} = ('wrong', substr $r->{body} // '', 0, 300);
            }
        } elsif ($op < 0.8) {
            my $no = $paid[rand @paid];
            my $p = $pay{$no};
            my $amount = 1 + int rand($p->{amount} / 2 + 1);
            my $rno = "HA-$n-" . int(rand 1e9);
            my $r = $gw->api(POST => "/v1/payments/$no/refunds",
                             json => {refund_no => $rno, amount => $amount},
                             idempotency_key => $gw->fresh_key("har$n"),
                             timeout => 30);
            my $code = err_code($r) // '';
            my $over = $p->{refunded} + $amount > $p->{amount};
            %rec = (op => 'refund', status => $r->{status});
            if ($r->{status} =~ /^20[12]$/ && !$over
                && ($r->{json}{amount} // -1) == $amount) {
                $rec{v} = 'ok';
                $rec{rno} = $rno;
                $p->{refunded} += $amount;
            } elsif ($r->{status} == 422 && $code eq 'refund_exceeds_payment'
                     && ($over || $p->{unsure})) {
                $rec{v} = 'ok';
            } elsif ($r->{status} == 409 && $code eq 'invalid_state'
                     && ($p->{refunded} == $p->{amount} || $p->{unsure})) {
                $rec{v} = 'ok';         # refunded in full: status refunded
            } elsif (unavailable($r)) {
                $rec{v} = 'unavailable';
                $p->{unsure} = 1;       # it may have been reserved
            } else {
                @rec{qw(v why)} = ('wrong', "refund $amount of $no "
                    . "($p->{refunded} of $p->{amount} refunded): "
                    . substr $r->{body} // '', 0, 300);
                $p->{unsure} = 1;
            }
        } else {
            my $no = $paid[rand @paid];
            my $r = $gw->get_payment($no);
            %rec = (op => 'get', status => $r->{status});
            if ($r->{status} == 200 && ($r->{json}{payment_no} // '') eq $no
                && ($r->{json}{amount} // -1) == $pay{$no}{amount}) {
                $rec{v} = 'ok';
            } elsif (unavailable($r)) {
                $rec{v} = 'unavailable';
            } else {
                @rec{qw(v why)} = ('wrong', substr $r->{body} // '', 0, 300);
            }
        }
        @rec{qw(t0 t1)} = ($t0, time);
        print {$out} $json->encode(\%rec), "\n";
    }
    close $out;
}

# ---- phases ---------------------------------------------------------------

my @phases;       # {name, t0, t1, kill (time of the kill), what}

sub phase {
    my ($name, $act) = @_;
    my $ph = {name => $name, t0 => time};
    push @phases, $ph;
    $phases[-2]{t1} = $ph->{t0} if @phases > 1;
    if ($act) {
        my $t = time;
        eval { $ph->{what} = $act->($ph); 1 }
            or do { $ph->{what} = "FAILED: $@"; chomp $ph->{what} };
        $ph->{act_secs} = time - $t;
    }
    printf "drill-ha: %5.1f s: %s%s\n", $ph->{t0} - $phases[0]{t0}, $name,
           $ph->{what} ? " ($ph->{what})" : '';
    sleep_until($ph->{t0} + $PHASE);
}

sub sleep_until { my $d = $_[0] - time; sleep $d if $d > 0 }

my ($redis_victim, $galera_victim, $writer_why);

# the Galera node taking the writes: the one whose own transactions
# (wsrep_replicated: write sets it sent, not those it applied) grow
sub galera_writer {
    my $writes = sub {
        my %w;
        for my $i (0 .. $#{[ $g->nodes ]}) {
            my $n = $g->node($i);
            next unless $n->_alive;
            my $v = eval { $n->status('wsrep_replicated') };
            $w{$i} = $v if defined $v && $v =~ /^\d+$/;
        }
        return \%w;
    };
    my $w0 = $writes->();
    sleep 1;
    my $w1 = $writes->();
    my ($best) = sort { ($w1->{$b} - $w0->{$b}) <=> ($w1->{$a} - $w0->{$a}) }
                 grep { exists $w0->{$_} } keys %$w1;
    $writer_why = 'write sets sent in 1 s: ' . join(', ', map {
        "node$_ " . ($w1->{$_} - ($w0->{$_} // 0)) } sort keys %$w1);
    return $best // 0;
}

PayGW::Test::wait_until(sub { -s "$dir/client-1.jsonl" }, timeout => 30)
    or die "drill-ha: the load did not start\n";

phase('steady');
phase('redis master killed', sub {
    my ($ph) = @_;
    $redis_victim = $rc->master_of($TAG) or die "no master for $TAG\n";
    $ph->{kill} = time;
    $redis_victim->kill;
    return 'SIGKILL 127.0.0.1:' . $redis_victim->port;
});
phase('redis node restarted', sub {
    $redis_victim->start_again;
    $rc->wait_ok;
    my $role = $rc->node_cli($redis_victim, 'ROLE') =~ /^(\w+)/ ? $1 : '?';
    my $new = $rc->master_of($TAG);
    return sprintf 'back as %s; the slot on %s', $role, $new ? $new->port : '?';
});
my $writer = galera_writer();       # a second more of the phase before
phase('galera writer killed', sub {
    my ($ph) = @_;
    my $i = $writer;
    $galera_victim = $g->node($i);
    $ph->{kill} = time;
    $galera_victim->kill;
    return "SIGKILL node$i 127.0.0.1:" . $galera_victim->port
           . " ($writer_why)";
});
phase('galera node restarted', sub {
    $galera_victim->start_again;
    return 'rejoined, cluster size '
           . ($galera_victim->status('wsrep_cluster_size') // '?')
           . ', ' . ($galera_victim->status('wsrep_local_state_comment') // '?');
});
phase('steady');
{ open my $fh, '>', $stop or die "$!"; }
waitpid $_, 0 for @clients;
$phases[-1]{t1} = time;

# ---- the answers, per phase -----------------------------------------------

my @recs;
for my $f (glob "$dir/client-*.jsonl") {
    open my $fh, '<', $f or die "$f: $!";
    while (<$fh>) {
        my $r = eval { JSON::PP->new->decode($_) } or next;
        push @recs, $r;
    }
}
@recs = sort { $a->{t1} <=> $b->{t1} } @recs;

my (@violations, @report);
my $ms = sub { defined $_[0] ? sprintf('%.0f', 1000 * $_[0]) : '-' };

# the longest time in [T0, T1] without a successful answer among RECS
sub stall {
    my ($t0, $t1, @ok) = @_;
    my @t = ($t0, (grep { $_ >= $t0 && $_ <= $t1 } map { $_->{t1} } @ok), $t1);
    return max(map { $t[$_] - $t[$_ - 1] } 1 .. $#t);
}

push @report, sprintf "%-22s %5s %6s %5s %5s %9s %9s %11s  %s", 'phase', 'secs',
    'reqs', 'ok', 'unav', 'stall ms', 'wstall ms', 'kill->ok ms', 'answers by status';
for my $ph (@phases) {
    my @in = grep { $_->{t1} >= $ph->{t0} && $_->{t1} < $ph->{t1} } @recs;
    my %by;
    $by{"$_->{op} $_->{status}"}++ for @in;
    my @ok = grep { $_->{v} eq 'ok' } @in;
    my @okw = grep { $_->{op} ne 'get' } @ok;
    my $first;
    if ($ph->{kill}) {
        # the first create sent after the kill that succeeded (any phase)
        my ($c) = sort { $a->{t1} <=> $b->{t1} }
                  grep { $_->{op} eq 'create' && $_->{v} eq 'ok'
                         && $_->{t0} >= $ph->{kill} } @recs;
        $first = $c ? $c->{t1} - $ph->{kill} : undef;
        $ph->{first} = $first;
        push @violations, sprintf("%s: no create sent after the kill "
            . "succeeded within %d s (%s)", $ph->{name}, $FAILOVER_MAX,
            defined $first ? sprintf('%.1f s', $first) : 'none at all')
            unless defined $first && $first <= $FAILOVER_MAX;
    }
    push @report, sprintf "%-22s %5.1f %6d %5d %5d %9s %9s %11s  %s",
        $ph->{name}, $ph->{t1} - $ph->{t0}, scalar @in, scalar @ok,
        scalar(grep { $_->{v} eq 'unavailable' } @in),
        $ms->(stall($ph->{t0}, $ph->{t1}, @ok)),
        $ms->(stall($ph->{t0}, $ph->{t1}, @okw)), $ms->($first),
        join(', ', map { "$_: $by{$_}" } sort keys %by);
}
for my $ph (grep { $_->{what} } @phases) {
    push @report, sprintf "  %s: %s%s", $ph->{name}, $ph->{what},
        $ph->{act_secs} > 0.5 ? sprintf(' (took %.1f s)', $ph->{act_secs}) : '';
}
push @report, "stall: the longest time in the phase without a successful "
    . "answer; wstall: without a successful create or refund (GETs may come "
    . "from the Redis cache while MySQL fails over); kill->ok: from the "
    . "kill to the answer of the first successful create sent after it";

push @violations, map { "$_->{name}: $_->{what}" }
    grep { ($_->{what} // '') =~ /^FAILED/ } @phases;

# wrong answers never; unavailable only for requests sent in a failover
# window [kill, kill + 10 s] (or in flight at the kill)
my @kills = map { $_->{kill} } grep { $_->{kill} } @phases;
my @wrong = grep { $_->{v} eq 'wrong' } @recs;
push @violations, sprintf('%d wrong answers, e.g. %s', scalar @wrong,
    join(' | ', map { "$_->{op} $_->{status} $_->{why}" }
                    @wrong[0 .. min(2, $#wrong)])) if @wrong;
my @late = grep {
    my $r = $_;
    $r->{v} eq 'unavailable'
        && !grep { $r->{t1} >= $_ && $r->{t0} <= $_ + $FAILOVER_MAX } @kills
} @recs;
push @violations, sprintf('%d unavailable answers outside the failover '
    . 'windows, e.g. %s', scalar @late, join(' | ', map {
        my $r = $_;
        my ($ph) = grep { $r->{t1} >= $_->{t0} && $r->{t1} < $_->{t1} } @phases;
        sprintf '%s %s in "%s"', $r->{op}, $r->{status}, $ph ? $ph->{name} : '?'
    } @late[0 .. min(2, $#late)])) if @late;

# ---- settle, then the invariants -------------------------------------------

my %sync = (sql_prefix => 'SET SESSION wsrep_sync_wait = 1; ');
my $open = PayGW::Drill::open_rows($gw, %sync);
my $settle = PayGW::Drill::settle($gw, %sync);
my ($inv, $summary) = PayGW::Drill::check($gw, %sync,
    payments => [map { $_->{no} } grep { $_->{no} } @recs],
    refunds => [map { $_->{rno} } grep { $_->{rno} } @recs]);
push @violations, @$inv;
push @report, sprintf("settled %d open payments/refunds in %.0f s", $open,
                      $settle), $summary;
my $rows = $g->node(0)->sql("SELECT COUNT(*) FROM payments") . '/'
    . join('/', map { $g->node($_)->sql("SELECT COUNT(*) FROM payments") } 1, 2);
$rows =~ s/\n//g;
push @report, "payment rows on the three Galera nodes: $rows";
push @report, map { "violation: $_" } @violations;
push @report, sprintf "%d violations", scalar @violations;

my $head = sprintf "paygw drill-ha %s  rev %s  %d clients, %d s phases, "
    . "load average at the end %s", POSIX::strftime('%Y-%m-%dT%H:%MZ', gmtime),
    (`git -C $FindBin::Bin rev-parse --short HEAD 2>/dev/null` =~ s/\s+//r || '?'),
    $CLIENTS, $PHASE, join(' ', (split ' ', PayGW::Test::_slurp('/proc/loadavg'))[0 .. 2]);
my $text = join "\n", $head, '', @report, '';
print "\n$text";
if (my $f = $ENV{DRILL_REPORT}) {
    open my $fh, '>', $f or die "drill-ha: $f: $!\n";
    print {$fh} $text;
    close $fh;
    print "drill-ha: report written to $f\n";
}
exit(@violations ? 1 : 0);
