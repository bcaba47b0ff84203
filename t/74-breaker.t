#!/usr/bin/perl
# The circuit breaker: 3 consecutive failed acquirer calls open the
# bank_card circuit for every worker (2 here); while open, payments are
# refused at once with 503 channel_unavailable and nothing is written or
# sent; after the ejection time one probe goes through: its success
# closes the circuit, its failure opens it again.  paygw_circuit_state
# shows it.
use strict;
use warnings;

use Test::More;
use Time::HiRes qw(sleep);

use PayGW::Test ();
use PayGW::Gateway;

my $gw = PayGW::Gateway->start(workers => 2, attempts => 1,
    breaker => 'breaker_failures=3 breaker_timeout=2s');

my $n = 0;

sub create {
    $n++;
    return $gw->api(POST => '/v1/payments', idempotency_key => "br-$n",
        json => PayGW::Gateway->payment_body(business_no => "BR-$n"));
}

sub state { $gw->metric('paygw_circuit_state{channel="bank_card"}') }

sub acquirer_requests {
    scalar grep { $_->{path} =~ m{^/acquirer/} } @{ $gw->sim->requests };
}

is(create()->{status}, 201, 'healthy: created');
is(state(), 0, 'circuit closed');

# three failures in a row open it
$gw->sim->mode('error500');
is(create()->{status}, 202, "acquirer failing: unknown ($_)") for 1 .. 3;
is(state(), 1, 'after 3 failures: open');

# open: refused at once, by every worker, nothing written or sent
my $rows = $gw->count_rows('payments');
my $sent = acquirer_requests();
for my $i (1 .. 6) {
    my $r = create();
    is($r->{status}, 503, "open: 503 ($i)");
    is($r->{json}{error}{code}, 'channel_unavailable', "... channel_unavailable ($i)");
}
is($gw->count_rows('payments'), $rows, 'open: no payment written');
is(acquirer_requests(), $sent, 'open: nothing sent to the acquirer');

{
    my $pno = $gw->db->sql("SELECT payment_no FROM paygw.payments "
                           . "WHERE status = 'succeeded' LIMIT 1");
    chomp $pno;
    my $r = $gw->api(POST => "/v1/payments/$pno/refunds", idempotency_key => 'br-r',
                     json => { refund_no => 'BR-R1', amount => 1 });
    is($r->{status}, 503, 'open: a refund is refused too');
    is($gw->count_rows('refunds'), 0, '... and nothing reserved');
}

# half-open: a failed probe opens it again at once
sleep 2.2;
my $probe = create();
is($probe->{status}, 202, 'after the ejection time: one probe goes through');
is(state(), 1, 'the probe failed: open again');
is(create()->{status}, 503, 'and refused again right away');

# half-open: a successful probe closes it
$gw->sim->mode('normal');
sleep 2.2;
is(create()->{status}, 201, 'probe succeeds');
is(state(), 0, 'circuit closed');
is(create()->{status}, 201, 'payments flow again') for 1 .. 3;

done_testing;
