#!/usr/bin/perl
# POST /v1/notify/bank_card: the acquirer's HMAC-signed charge callback
# settles a payment whose answer was lost; forged, tampered, stale and
# foreign callbacks are refused and change nothing; late ones are kept
# out.  Counted in paygw_callbacks_total{channel="bank_card"}.
use strict;
use warnings;

use Test::More;

use PayGW::Test qw(http);
use PayGW::Gateway;

my $gw = PayGW::Gateway->start(attempts => 1, provider_timeout => '2s');
my $sim = $gw->sim;
my $url = $gw->url('/v1/notify/bank_card');

sub get { $gw->api(GET => "/v1/payments/$_[0]")->{json} }

# the stored status (a GET of an unknown payment would query the acquirer)
sub stored {
    my $s = $gw->db->sql("SELECT status FROM paygw.payments WHERE payment_no = '$_[0]'");
    chomp $s;
    return $s;
}

sub callbacks {
    my ($result) = @_;
    return $gw->metric(qq{paygw_callbacks_total{channel="bank_card",result="$result"}})
        // -1;
}

# the acquirer charged, but its answer was lost
$sim->mode('reset_after', times => 1, path_prefix => '/acquirer/v1/charges');
my $r = $gw->api(POST => '/v1/payments', idempotency_key => "bn-1-$$",
                 json => PayGW::Gateway->payment_body(amount => 4200));
is($r->{status}, 202, 'answer lost: 202 unknown');
my $no = $r->{json}{payment_no};

my $rejected = callbacks('rejected');
my %status = (signature => 401, body => 401, merchant => 401, amount => 400);
for my $tamper (sort keys %status) {
    my $cb = $sim->notify(url => $url, out_trade_no => $no, tamper => $tamper);
    is($cb->{status}, $status{$tamper}, "tampered ($tamper): $status{$tamper}");
}
my $cb = $sim->notify(url => $url, out_trade_no => $no, timestamp => time - 900);
is($cb->{status}, 401, 'a callback signed 15 minutes ago: 401');
is(stored($no), 'unknown', 'nothing changed');
is(callbacks('rejected'), $rejected + 5, 'five rejected, counted');

my $accepted = callbacks('accepted');
$cb = $sim->notify(url => $url, out_trade_no => $no);
is($cb->{status}, 204, 'the genuine callback: 204');
is(stored($no), 'succeeded', 'settled succeeded by the callback');
my $p = get($no);
like($p->{channel_trade_no}, qr/^ch_/, 'the acquirer charge id');
is(callbacks('accepted'), $accepted + 1, 'accepted, counted');

# replayed, and a late decline: acknowledged, nothing moves
is(http(POST => $url, body => $cb->{sent}{body}, headers => $cb->{sent}{headers})
       ->{status}, 204, 'the same callback again: 204');
$cb = $sim->notify(url => $url, out_trade_no => $no, status => 'declined',
                   decline_code => 'card_declined');
is($cb->{status}, 204, 'a decline after the success: acknowledged');
is(get($no)->{status}, 'succeeded', 'still succeeded');
my $events = $gw->db->sql("SELECT COUNT(*) FROM paygw.outbox_events "
                          . "WHERE object_no = '$no'");
chomp $events;
is($events, 1, 'one event in all');

# a callback for no payment of ours
$cb = $sim->notify(url => $url, out_trade_no => 'P-NONE', amount => 1, currency => 'CNY');
is($cb->{status}, 404, 'an unknown out_trade_no: 404');

done_testing;
