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
        if (!$killer) { sleep 0.05; $during->(); POSIX::_exit(0) }
    }
    my @res = at_once(@jobs);
    waitpid $killer, 0 if $killer;
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

my @creates2 = map { {business_no => 'MUXK-' . PayGW::Test::random_token(10),
                      key => $gw->fresh_key('muxk')} } 1 .. 20;
$seen = burst(\@pnos, \@creates2,
              sub { $gw->redis->cli(qw(CLIENT KILL TYPE normal)) for 1 .. 3 });
my @wrong = grep { $_ ne 'ok' && $_ ne 'failed' } keys %$seen;
is_deeply \@wrong, [],
    'connections killed by Redis mid-burst: no request got another\'s answer'
    or diag explain $seen;
note explain $seen;

# every create retried under its key: one payment, one charge each
my $again = 0;
for my $c (@creates2) {
    my $r = $gw->create({business_no => $c->{business_no}},
                        idempotency_key => $c->{key});
    $again++ if $r->{status} == 201 && $r->{json}{business_no} eq $c->{business_no};
}
is $again, 20, 'each create retried under its Idempotency-Key: 201, its own';
my $in = join ',', map { "'$_->{business_no}'" } @creates2;
is $gw->sql1("SELECT COUNT(*) FROM paygw.payments WHERE business_no IN ($in)"),
   20, '... one payment row per business_no';
my @nos = split /\n/,
    $gw->db->sql("SELECT payment_no FROM paygw.payments WHERE business_no IN ($in)");
is scalar(grep { scalar($gw->charges_for($_)) == 1 } @nos), 20,
    '... and one charge at the acquirer each';

# ---- and afterwards, all is well -------------------------------------------------

$seen = burst(\@pnos, [map { {business_no => 'MUXA-' . PayGW::Test::random_token(10),
                               key => $gw->fresh_key('muxa')} } 1 .. 10]);
is_deeply $seen, {ok => 70}, 'the next burst: every answer its own, none failed';

my @bad = $gw->ngx->error_log
          =~ /^.*(?:\[(?:alert|emerg|crit)\]|exited on signal).*$/mg;
is join("\n", @bad), '', 'no crash, alert, crit or emerg in the error log';

done_testing;
