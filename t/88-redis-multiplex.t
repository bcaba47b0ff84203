#!/usr/bin/perl
# paygw_redis_multiplex (on by default): every request's Redis round trips
# share one connection per worker, and replies are matched to requests by
# their order alone.  What a user must never see: another request's
# answer (a GET showing someone else's payment, a create answered with
# another create's payment), or a charge made twice.  Checked with many
# GETs and creates at once, with the shared connections killed by Redis
# in the middle of such a burst, and with the create retried under its
# Idempotency-Key afterwards.
use strict;
use warnings;

use Test::More;
use POSIX ();
use Storable ();
use File::Temp ();
use Time::HiRes qw(sleep);
use IO::Socket::INET ();

use PayGW::Gateway;

my $gw = PayGW::Gateway->start(workers => 2);

sub paid {
    my $r = $gw->create(@_);
    is $r->{status}, 201, 'payment created' or diag $r->{body};
    return $r->{json}{payment_no};
}

# run each code ref in a child at the same moment; their results, in order
sub at_once {
    my (@jobs) = @_;
    my $dir = File::Temp::tempdir('paygw-mux-XXXXXX', TMPDIR => 1, CLEANUP => 1);
    pipe(my $gate_r, my $gate_w) or die "pipe: $!\n";
    my @pids;
    for my $i (0 .. $#jobs) {
        my $pid = fork // die "fork: $!\n";
        if (!$pid) {
            close $gate_w;
            sysread $gate_r, my $buf, 1;
            my $res = eval { $jobs[$i]->() } // {status => 599, body => "$@"};
            Storable::nstore($res, "$dir/$i");
            POSIX::_exit(0);
        }
        push @pids, $pid;
    }
    close $gate_r;
    close $gate_w;
    waitpid $_, 0 for @pids;
    return map { -e "$dir/$_" ? Storable::retrieve("$dir/$_")
                              : {status => 599, body => 'no result'} } 0 .. $#jobs;
}

# a burst of GETs of @pnos and creates; each answer checked against its own
# request: 'ok', 'failed' (a 503/504 backend error), or what went wrong
sub burst {
    my ($pnos, $creates, $during) = @_;
    my @jobs;
    for my $i (0 .. 59) {
        my $pno = $pnos->[$i % @$pnos];
        push @jobs, sub {
            my $r = $gw->get_payment($pno);
            return {kind => 'get', want => $pno, status => $r->{status},
                    got => $r->{json} && ($r->{json}{payment_no}
                                          // $r->{json}{error}{code})};
        };
    }
    for my $c (@$creates) {
        push @jobs, sub {
            my $r = $gw->create({business_no => $c->{business_no}},
                                idempotency_key => $c->{key});
            return {kind => 'create', want => $c->{business_no},
                    status => $r->{status},
                    got => $r->{json} && ($r->{json}{business_no}
                                          // $r->{json}{error}{code})};
        };
    }
    my $killer;
    if ($during) {
        $killer = fork // die "fork: $!\n";
        if (!$killer) {
            $SIG{TERM} = 'DEFAULT';   # not the harness's: it owns nothing
            $during->();
            POSIX::_exit(0);
        }
    }
    my @res = at_once(@jobs);
    if ($killer) { kill 'TERM', $killer; waitpid $killer, 0 }
    my %seen;
    for my $r (@res) {
        my $verdict =
            ($r->{status} == 200 || $r->{status} == 201)
                ? (($r->{got} // '') eq $r->{want} ? 'ok'
                   : "$r->{kind} of $r->{want} answered with "
                     . ($r->{got} // '?'))
          : ($r->{status} == 503 || $r->{status} == 504) ? 'failed'
          : "$r->{kind} of $r->{want}: $r->{status} " . ($r->{got} // '');
        $seen{$verdict}++;
    }
    return \%seen;
}

my @pnos = map { paid(amount => 1000 + $_) } 1 .. 10;
is $gw->get_payment($_)->{status}, 200, 'read once (now cached)' for @pnos;

# ---- a burst: every answer is its own request's ------------------------------

my @creates = map { {business_no => 'MUX-' . PayGW::Test::random_token(10),
                     key => $gw->fresh_key('mux')} } 1 .. 20;
my $seen = burst(\@pnos, \@creates);
is_deeply $seen, {ok => 80},
    '60 GETs and 20 creates at once on the shared connections: each got '
    . 'its own answer';

my ($clients) = $gw->redis->cli(qw(INFO clients)) =~ /^connected_clients:(\d+)/m;
cmp_ok $clients, '<=', 2 + 1,
    'Redis saw one connection per worker (+ redis-cli)';

# ---- the shared connections killed in the middle of a burst ------------------

# each create of @$creates retried under its key: 201 and its own payment
# (never 409: a lock its first try may have taken is given back), one
# payment row and one charge each
sub retried_once_each {
    my ($creates, $what) = @_;
    my %got;
    for my $c (@$creates) {
        my $r = $gw->create({business_no => $c->{business_no}},
                            idempotency_key => $c->{key});
        my $own = $r->{status} == 201
                  && $r->{json}{business_no} eq $c->{business_no};
        $got{$own ? 'own 201' : "$r->{status} "
                                . ($r->{json}{error}{code} // $r->{body})}++;
    }
    is_deeply \%got, {'own 201' => scalar @$creates},
        "$what: each create retried under its Idempotency-Key at once: 201, "
        . 'its own';
    my $in = join ',', map { "'$_->{business_no}'" } @$creates;
    is $gw->sql1("SELECT COUNT(*) FROM paygw.payments "
                 . "WHERE business_no IN ($in)"),
       scalar @$creates, '... one payment row per business_no';
    my @nos = split /\n/, $gw->db->sql("SELECT payment_no FROM paygw.payments "
                                       . "WHERE business_no IN ($in)");
    is scalar(grep { scalar($gw->charges_for($_)) == 1 } @nos),
       scalar @$creates, '... and one charge at the acquirer each';
}

sub some_creates {
    my ($tag, $n) = @_;
    return [map { {business_no => "$tag-" . PayGW::Test::random_token(10),
                   key => $gw->fresh_key(lc $tag)} } 1 .. $n];
}

# killed again and again while the burst runs: wherever the kills land
my $creates = some_creates('MUXK', 20);
$seen = burst(\@pnos, $creates, sub {
    for (1 .. 200) {
        $gw->redis->cli(qw(CLIENT KILL TYPE normal));
        sleep 0.01;
    }
});
note explain $seen;
is_deeply [grep { $_ ne 'ok' && $_ ne 'failed' } keys %$seen], [],
    'connections killed by Redis again and again during a burst: no '
    . 'request got another\'s answer'
    or diag explain $seen;
retried_once_each($creates, 'killed during a burst');

# killed with every request of the burst waiting for its replies: a Lua
# script holds Redis for a second (it serves nobody meanwhile), and the
# kill comes while it runs, so it lands before any of those replies
sub redis_socket {
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                  PeerPort => $gw->redis->{port})
        or die "redis: $!\n";
    return $s;
}
sub resp { join '', '*' . @_ . "\r\n", map { '$' . length($_) . "\r\n$_\r\n" } @_ }

# Redis serves nobody for $seconds: a Lua script runs that long (what the
# others send meanwhile waits in its sockets)
sub hold_redis {
    my ($sock, $seconds) = @_;
    print $sock resp('EVAL', <<'LUA', 0, $seconds);
local function now() local t = redis.call('TIME') return t[1] + t[2] / 1e6 end
local start = now()
while now() - start < tonumber(ARGV[1]) do end
return 1
LUA
}

my ($busy, $killer) = (redis_socket(), redis_socket());
$creates = some_creates('MUXW', 20);
hold_redis($busy, 1.0);
$seen = burst(\@pnos, $creates, sub {
    sleep 0.5;
    print $killer resp(qw(CLIENT KILL TYPE normal SKIPME yes));
    sleep 5;
});
is_deeply $seen, {failed => 80},
    'connections killed while every request waits on them: all 80 fail '
    . '(503), none is answered with another\'s reply'
    or diag explain $seen;
retried_once_each($creates, 'killed with all replies due');

# the answer goes out first, then its record to Redis: that round trip
# cut short the same way is sent once more, or a retry would find the
# key locked (409) until the lock expired
close $busy;
close $killer;                  # killed too
($busy, $killer) = (redis_socket(), redis_socket());
$gw->sim->mode('slow', delay_ms => 1000);
my $late = some_creates('MUXR', 1)->[0];
my ($first, $orch) = at_once(
    sub {
        my $r = $gw->create({business_no => $late->{business_no}},
                            idempotency_key => $late->{key});
        return {status => $r->{status}, body => $r->{body}, t => Time::HiRes::time()};
    },
    sub {
        # its payment row is written: it waits a second for the acquirer
        PayGW::Test::wait_until(sub {
            $gw->sql1("SELECT COUNT(*) FROM paygw.payments WHERE business_no = "
                      . "'$late->{business_no}'") == 1 }, timeout => 5)
            or die "no payment row\n";
        my $t_row = Time::HiRes::time();
        hold_redis($busy, 1.5);
        # queued before the record's SET: Redis, free again, runs the kill
        # first and never reads the SET
        sleep 0.5;
        print $killer resp(qw(CLIENT KILL TYPE normal SKIPME yes));
        my $killed = <$killer>;    # once the script is over and all killed
        return {t => $t_row};
    });
$gw->sim->mode('normal');
note "create answered " . ($first->{t} - $orch->{t}) . " s after its row";
is $first->{status}, 201, 'a create answered while its record waits on Redis'
    or diag $first->{body};
# (409 only while the record is on its way again, not until the lock expires)
my $replay;
PayGW::Test::wait_until(sub {
    $replay = $gw->create({business_no => $late->{business_no}},
                          idempotency_key => $late->{key});
    $replay->{status} != 409 }, timeout => 3);
is $replay->{status}, 201, '... the record\'s round trip cut short: a retry '
                           . 'is answered from the record'
    or diag $replay->{body};
is $replay->{headers}{'idempotent-replayed'}, 'true', '... as a replay';
is $replay->{body}, $first->{body}, '... byte for byte';
ok $gw->ngx->error_log =~ /idempotent result's round trip was cut short/,
    '... which was sent again';
close $busy;
close $killer;

# ---- a Redis that hangs, under steady traffic ----------------------------------

# paygw_redis_timeout (5 s here) runs from the last bytes Redis sent, not
# from the last command queued: a GET every 0.4 s for 9 s must not keep
# any waiting for as long as the traffic lasts
$gw->redis->freeze;
my @hung = at_once(map {
    my $i = $_;
    sub {
        sleep 0.4 * $i;
        my $t0 = Time::HiRes::time();
        my $r = $gw->get_payment($pnos[$i % @pnos]);
        return {status => $r->{status}, took => Time::HiRes::time() - $t0};
    }
} 0 .. 22);
$gw->redis->thaw;
note join ' ', map { sprintf '%d/%.1fs', $_->{status}, $_->{took} } @hung;
is_deeply [grep { $_->{status} != 503 } @hung], [],
    'Redis hung: every GET sent meanwhile is answered 503 (retry)';
my ($longest) = sort { $b <=> $a } map { $_->{took} } @hung;
cmp_ok $longest, '<', 8,
    '... each after at most about paygw_redis_timeout, however many came '
    . 'after it';

# ---- and afterwards, all is well -------------------------------------------------

$seen = burst(\@pnos, [map { {business_no => 'MUXA-' . PayGW::Test::random_token(10),
                               key => $gw->fresh_key('muxa')} } 1 .. 10]);
is_deeply $seen, {ok => 70}, 'the next burst: every answer its own, none failed';

my @bad = $gw->ngx->error_log
          =~ /^.*(?:\[(?:alert|emerg|crit)\]|exited on signal).*$/mg;
is join("\n", @bad), '', 'no crash, alert, crit or emerg in the error log';

done_testing;
