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
# against the simulator's own ledger:
#   - every charge the acquirer made belongs to exactly one payment;
#   - no payment was charged twice, and none the acquirer charged is
#     recorded failed or closed;
#   - a payment's refunds at the acquirer never exceed it, and equal what
#     the gateway recorded as refunded;
#   - nothing stays unknown/processing (payments) or pending/unknown
#     (refunds) once the faults stopped and the settler ran;
#   - every payment in a final state has its one outbox event.
# It prints the counts it checked and exits 1 on any violation.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/../lib";
use JSON::PP ();
use POSIX ();
use File::Temp ();
use Time::HiRes qw(time sleep);

use PayGW::Gateway qw(sql_quote);
use PayGW::Test qw(wait_until);

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
    my (%count, @paid);
    open my $out, '>', "$dir/client-$n.json" or die "$!";
    while (time < $until) {
        my $op = rand;
        my $r;
        if ($op < 0.55 || !@paid) {
            $r = $gw->create(amount => 100 + int rand 10000);
            $count{"create $r->{status}"}++;
            push @paid, [$r->{json}{payment_no}, $r->{json}{amount} // 0]
                if ($r->{status} == 201 || $r->{status} == 202)
                   && $r->{json}{payment_no};
        } elsif ($op < 0.8) {
            my ($no, $amount) = @{ $paid[rand @paid] };
            $r = $gw->api(POST => "/v1/payments/$no/refunds",
                          json => {refund_no => "DR-$n-" . int(rand 1e9),
                                   amount => 1 + int rand($amount / 2 + 1)},
                          idempotency_key => $gw->fresh_key("dr$n"), timeout => 30);
            $count{"refund $r->{status}"}++;
        } else {
            my ($no) = @{ $paid[rand @paid] };
            $r = $gw->get_payment($no);
            $count{"get $r->{status}"}++;
        }
    }
    print $out JSON::PP->new->encode(\%count);
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

my %load;
for my $f (glob "$dir/client-*.json") {
    my $c = eval { JSON::PP->new->decode(PayGW::Test::_slurp($f)) } // {};
    $load{$_} += $c->{$_} for keys %$c;
}

# ---- settle ---------------------------------------------------------------

sub open_rows {
    $gw->sql1("SELECT (SELECT COUNT(*) FROM payments WHERE status IN "
              . "('unknown', 'processing')) + (SELECT COUNT(*) FROM refunds "
              . "WHERE status IN ('pending', 'unknown'))");
}

print "drill: faults stopped; settling (", open_rows(), " open)\n";
my $t0 = time;
wait_until(sub {
    $gw->api(POST => '/v1/admin/resolve', json => {}, key => 'ops',
             idempotency_key => $gw->fresh_key('drill'), timeout => 60);
    open_rows() == 0;
}, timeout => 240, interval => 2);
printf "drill: settled in %.0f s\n", time - $t0;

# ---- invariants -----------------------------------------------------------

my $ledger = $sim->charges;
my (%pay, @violations);
for (split /\n/, $gw->db->sql("SELECT payment_no, status, amount, refunded_amount, "
                              . "refund_reserved FROM paygw.payments")) {
    my ($no, $st, $amount, $ref, $res) = split /\t/;
    $pay{$no} = {status => $st, amount => $amount, refunded => $ref, reserved => $res};
}

my %charges;
$charges{ $_->{out_trade_no} }++ for @{ $ledger->{charges} };
my $charged = 0;
for my $c (@{ $ledger->{charges} }) {
    my $p = $pay{ $c->{out_trade_no} };
    if (!$p) {
        push @violations, "charge $c->{charge_id} ($c->{out_trade_no}) belongs to no payment";
        next;
    }
    next unless ($c->{status} // '') eq 'approved';
    $charged++;
    push @violations, "payment $c->{out_trade_no} charged but recorded $p->{status}"
        unless $p->{status} =~ /^(succeeded|partially_refunded|refunded)$/;
}
for my $no (grep { $charges{$_} > 1 } keys %charges) {
    push @violations, "payment $no charged $charges{$no} times";
}

my %refunded;
for my $r (@{ $ledger->{refunds} }) {
    $refunded{ $r->{out_trade_no} } += $r->{amount}
        if ($r->{status} // '') eq 'succeeded';
}
for my $no (keys %refunded) {
    my $p = $pay{$no} // {amount => 0, refunded => 0};
    push @violations, "payment $no refunded $refunded{$no} > amount $p->{amount}"
        if $refunded{$no} > $p->{amount};
    push @violations, "payment $no refunded $refunded{$no} at the acquirer, "
                      . "$p->{refunded} here"
        if $refunded{$no} != $p->{refunded};
}

my $open = open_rows();
push @violations, "$open payments or refunds still open after the settler ran"
    if $open;

my $missing = $gw->sql1(
    "SELECT COUNT(*) FROM payments p WHERE p.status IN ('succeeded', "
    . "'partially_refunded', 'refunded', 'failed', 'closed') AND (SELECT COUNT(*) "
    . "FROM outbox_events e WHERE e.object_no = p.payment_no AND e.type IN "
    . "('payment.succeeded', 'payment.failed', 'payment.closed')) <> 1");
push @violations, "$missing final payments without exactly one payment event"
    if $missing;

my $final = grep { $_->{status} ne 'unknown' && $_->{status} ne 'processing' } values %pay;

print "drill: load: ", join(', ', map { "$_ $load{$_}" } sort keys %load), "\n";
print "drill: faults: ", join(', ', map { "$_ x$fault_count{$_}" } sort keys %fault_count), "\n";
printf "drill: checked %d payments (%d final), %d acquirer charges (%d approved), "
       . "%d acquirer refunds over %d payments, outbox of %d final payments\n",
       scalar(keys %pay), $final, scalar(@{ $ledger->{charges} }), $charged,
       scalar(@{ $ledger->{refunds} }), scalar(keys %refunded), $final;
print "drill: violation: $_\n" for @violations;
printf "drill: %d violations\n", scalar @violations;

exit(@violations ? 1 : 0);
