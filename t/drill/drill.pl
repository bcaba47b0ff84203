#!/usr/bin/perl
# make drill: a fault drill under load (issue 10), not part of make test.
#
# A gateway (2 workers, the settler every 2 s) on its own Redis, MariaDB
# and simulator.  CLIENTS processes create bank-card payments, refund
# some and read them back for DRILL_SECONDS (default 180) while the drill
# goes round its faults: acquirer 500s, resets, timeouts, refused queries
# (401, as a skewed clock gets), a worker SIGKILLed mid-request, Redis and
# MariaDB frozen and killed, nginx reloaded.  Then the faults stop, the
# settler runs until nothing is open, and the invariants are checked
# against the simulator's own ledger (t/drill/lib/PayGW/Drill.pm): no charge
# without its one payment, none twice, refunds never above the payment,
# none lost, nothing left open, one outbox event per final payment.
# It prints the counts it checked and exits 1 on any violation.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/../lib", "$FindBin::Bin/lib";
use JSON::PP ();
use POSIX ();
use File::Temp ();
use Time::HiRes qw(time sleep);

use PayGW::Gateway;
use PayGW::Drill;

my $SECONDS = $ENV{DRILL_SECONDS} // 180;
my $CLIENTS = $ENV{DRILL_CLIENTS} // 4;
$| = 1;

my $gw = PayGW::Gateway->start(
    workers => 2, attempts => 2, provider_timeout => '2s', query_timeout => '3s',
    redis_timeout => '2s', qr_channels => 0,
    extra_http => 'paygw_resolver 127.0.0.1:%%PORT%% key=ops interval=2s;');
my $sim = $gw->sim;
my $dir = File::Temp::tempdir('paygw-drill-XXXXXX', TMPDIR => 1, CLEANUP => 1);

print "drill: $SECONDS s, $CLIENTS clients, gateway ", $gw->url, "\n";

# ---- load -----------------------------------------------------------------

my @clients;
for my $n (1 .. $CLIENTS) {
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        client($n, time + $SECONDS);
        POSIX::_exit(0);
    }
    push @clients, $pid;
}

sub client {
    my ($n, $until) = @_;
    srand($$);
    my (%count, @paid, @made, @refunds);
    open my $out, '>', "$dir/client-$n.json" or die "$!";
    while (time < $until) {
        my $op = rand;
        my $r;
        if ($op < 0.55 || !@paid) {
            $r = $gw->create(amount => 100 + int rand 10000);
            $count{"create $r->{status}"}++;
            if (($r->{status} == 201 || $r->{status} == 202)
                && $r->{json}{payment_no}) {
                push @paid, [$r->{json}{payment_no}, $r->{json}{amount} // 0];
                push @made, $r->{json}{payment_no};
            }
        } elsif ($op < 0.8) {
            my ($no, $amount) = @{ $paid[rand @paid] };
            my $rno = "DR-$n-" . int(rand 1e9);
            $r = $gw->api(POST => "/v1/payments/$no/refunds",
                          json => {refund_no => $rno,
                                   amount => 1 + int rand($amount / 2 + 1)},
                          idempotency_key => $gw->fresh_key("dr$n"), timeout => 30);
            $count{"refund $r->{status}"}++;
            push @refunds, $rno if $r->{status} == 201 || $r->{status} == 202;
        } else {
            my ($no) = @{ $paid[rand @paid] };
            $r = $gw->get_payment($no);
            $count{"get $r->{status}"}++;
        }
    }
    print $out JSON::PP->new->encode({count => \%count, made => \@made,
                                      refunds => \@refunds});
    close $out;
}

# ---- faults ---------------------------------------------------------------

my @faults = (
    ['acquirer 500s'       => sub { $sim->mode('error500', times => 6) }],
    ['acquirer resets'     => sub { $sim->mode('reset', times => 6) }],
    ['acquirer answers after the request gave up'
                           => sub { $sim->mode('slow', delay_ms => 3000, times => 4) }],
    ['charged, answer lost'=> sub { $sim->mode('error500_after', times => 6) }],
    ['queries refused (clock skew: 401)'
                           => sub { $sim->mode('refuse401', path_prefix => '/acquirer/v1/charges/');
                                    sleep 4; $sim->mode('normal') }],
    ['worker SIGKILLed'    => sub { my @w = $gw->ngx->worker_pids;
                                    kill 'KILL', $w[0] if @w }],
    ['Redis frozen 3 s'    => sub { $gw->redis->freeze; sleep 3; $gw->redis->thaw }],
    ['MariaDB frozen 3 s'  => sub { $gw->db->freeze; sleep 3; $gw->db->thaw }],
    ['MariaDB killed'      => sub { $gw->db->kill; sleep 1; $gw->db->start_again;
                                    $gw->db->ready }],
    ['Redis killed'        => sub { $gw->redis->kill; sleep 1; $gw->redis->start_again;
                                    $gw->redis->ready }],
    ['nginx reloaded'      => sub { $gw->reload }],
);

my %fault_count;
my $end = time + $SECONDS;
my $i = 0;
while (time < $end - 5) {
    my ($name, $do) = @{ $faults[$i++ % @faults] };
    print "drill: ", int($end - time), " s left: $name\n";
    eval { $do->(); 1 } or print "drill: fault \"$name\" failed: $@";
    $fault_count{$name}++;
    sleep 3;
    eval { $sim->mode('normal') };
}

waitpid $_, 0 for @clients;
eval { $gw->redis->thaw; $gw->db->thaw; $sim->mode('normal') };

my (%load, @made, @refunds);
for my $f (glob "$dir/client-*.json") {
    my $c = eval { JSON::PP->new->decode(PayGW::Test::_slurp($f)) } // {};
    $load{$_} += $c->{count}{$_} for keys %{ $c->{count} // {} };
    push @made, @{ $c->{made} // [] };
    push @refunds, @{ $c->{refunds} // [] };
}

# ---- settle, then the invariants -------------------------------------------

print "drill: faults stopped; settling (", PayGW::Drill::open_rows($gw), " open)\n";
printf "drill: settled in %.0f s\n", PayGW::Drill::settle($gw);
my ($violations, $summary) = PayGW::Drill::check($gw, payments => \@made,
                                                 refunds => \@refunds);
my @violations = @$violations;

print "drill: load: ", join(', ', map { "$_ $load{$_}" } sort keys %load), "\n";
print "drill: faults: ", join(', ', map { "$_ x$fault_count{$_}" } sort keys %fault_count), "\n";
print "drill: $summary\n";
print "drill: violation: $_\n" for @violations;
printf "drill: %d violations\n", scalar @violations;

exit(@violations ? 1 : 0);
