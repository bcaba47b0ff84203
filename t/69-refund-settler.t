#!/usr/bin/perl
# Refunds settle by themselves (issue 10, item 3): the settler (POST
# /v1/admin/resolve, which paygw_resolver sends on a timer) settles open
# refunds as it settles payments -- a refund whose answer was lost, a
# WeChat Pay refund left PROCESSING -- without anyone GETting them.  A
# refund the provider has no trace of is never "failed" on absence alone
# (its reservation would be released while the money may still move): it
# is sent again under the same out_refund_no and settled by the answer.
use strict;
use warnings;

use Test::More;
use POSIX ();

use PayGW::Gateway qw(err_code sql_quote);
use PayGW::Test qw(http_parallel sign_request);

# the default template: bank_card, alipay, wechat; unknown_grace=60s
my $gw = PayGW::Gateway->start();
my $sim = $gw->sim;

sub refund {
    my ($pno, $rno, $amount) = @_;
    return $gw->api(POST => "/v1/payments/$pno/refunds",
                    json => {refund_no => $rno, amount => $amount},
                    idempotency_key => $gw->fresh_key('k69'));
}
sub rstatus {
    $gw->sql1("SELECT status FROM refunds WHERE refund_no = " . sql_quote($_[0]))
}
sub reserved {
    $gw->sql1("SELECT CONCAT(refunded_amount, '/', refund_reserved) FROM payments "
              . "WHERE payment_no = " . sql_quote($_[0]))
}
sub resolve {
    my $r = $gw->api(POST => '/v1/admin/resolve', json => {}, key => 'ops',
                     idempotency_key => $gw->fresh_key('k69'));
    is($r->{status}, 200, 'admin resolve: 200') or diag($r->{body});
    return $r->{json} // {};
}
sub acq_refunds {
    my ($rno_out) = @_;
    return grep { $_->{out_trade_no} eq $_[0] } @{ $sim->charges->{refunds} };
}

# ---- a lost answer: the settler settles it ------------------------------

my $p = $gw->create(amount => 1000)->{json} // {};
my $pno = $p->{payment_no} // '';
$sim->mode('error500_after', path_prefix => '/acquirer/v1/refunds');
my $r = refund($pno, "R69a-$$", 300);
$sim->mode('normal');
is($r->{status}, 202, 'refund answer lost: 202') or diag($r->{body});
is(rstatus("R69a-$$"), 'unknown', '... stored unknown');
is(reserved($pno), '0/300', '... 300 reserved');

my $res = resolve();
is_deeply($res, {examined => 1, settled => 1},
          'the settler examined the open refund and settled it (nobody GET it)');
is(rstatus("R69a-$$"), 'succeeded', '... succeeded');
is(reserved($pno), '300/0', '... refunded 300, nothing reserved');
is($gw->event_count("R69a-$$", 'refund.succeeded'), 1, '... one refund.succeeded event');

# ---- never received: sent again, never failed on absence ----------------

$sim->mode('error500', path_prefix => '/acquirer/v1/refunds');
$r = refund($pno, "R69b-$$", 200);
$sim->mode('normal');
is($r->{status}, 202, 'the acquirer never got the refund: 202');
is(scalar(acq_refunds($pno)), 1, '... it has only the first refund');

$res = resolve();
is_deeply($res, {examined => 1, settled => 1}, 'the settler settled it');
is(rstatus("R69b-$$"), 'succeeded',
   '... by sending it again (same out_refund_no), not by guessing failed');
is(reserved($pno), '500/0', '... refunded 500 in all');
my $sum = 0;
$sum += $_->{amount} for acq_refunds($pno);
is($sum, 500, '... and the acquirer refunded exactly 500');
is($gw->event_count("R69b-$$", 'refund.failed'), 0, '... no refund.failed event');

# ---- WeChat Pay PROCESSING: the settler settles it ----------------------

my $w = $gw->create(channel => 'wechat', amount => 500)->{json} // {};
my $cb = $sim->wechat_notify(out_trade_no => $w->{payment_no});
is($gw->payment($w->{payment_no})->{status}, 'succeeded', 'a paid WeChat payment');
$sim->mode('refund_processing', times => 1, path_prefix => '/v3/refund/');
$r = refund($w->{payment_no}, "R69w-$$", 500);
is($r->{json}{status}, 'pending', 'a PROCESSING WeChat refund: pending') or diag($r->{body});

$res = resolve();
is_deeply($res, {examined => 1, settled => 1}, 'the settler settled it');
is(rstatus("R69w-$$"), 'succeeded', '... succeeded');
is($gw->payment($w->{payment_no})->{status}, 'refunded', '... the payment is refunded');


# ---- WeChat Pay REFUND.SUCCESS callback: accepted, settles the refund ----

my $w2 = $gw->create(channel => 'wechat', amount => 800)->{json} // {};
$sim->wechat_notify(out_trade_no => $w2->{payment_no});
$sim->mode('refund_processing', times => 1, path_prefix => '/v3/refund/');
$r = refund($w2->{payment_no}, "R69c-$$", 300);
is($r->{json}{status}, 'pending', 'another PROCESSING WeChat refund: pending');
my $accepted = $gw->callbacks('wechat', 'accepted');
my ($out) = map { $_->{out_refund_no} }
            grep { $_->{out_trade_no} eq $w2->{payment_no} } @{ $sim->charges->{refunds} // [] };
$out //= $gw->sql1("SELECT out_refund_no FROM refunds WHERE refund_no = "
                   . sql_quote("R69c-$$"));
my $cb2 = $sim->wechat_refund_notify(out_refund_no => $out);
is($cb2->{status}, 204, 'its verified REFUND.SUCCESS callback: 204 (not "not a transaction")')
    or diag(explain($cb2));
is(rstatus("R69c-$$"), 'succeeded', '... the refund is settled (by a query)');
is($gw->callbacks('wechat', 'accepted'), $accepted + 1, '... counted accepted');
is($gw->event_count("R69c-$$", 'refund.succeeded'), 1, '... one refund.succeeded event');
is($sim->wechat_refund_notify(out_refund_no => $out)->{status}, 204,
   'the same callback again: 204');
is($gw->event_count("R69c-$$", 'refund.succeeded'), 1, '... still one event');

# ---- two settlers at once: one settles, the other steps aside quietly ----
# Both ask the acquirer, which answers both 500 ms later; both then settle
# the same refund.  The loser's payment update must match nothing (its
# reservation is gone), not break the table's CHECK: an [error] line per
# lost race is what operators saw under load.

my $p2 = $gw->create(amount => 1000)->{json} // {};
my $pno2 = $p2->{payment_no} // '';
$sim->mode('error500_after', path_prefix => '/acquirer/v1/refunds');
$r = refund($pno2, "R69d-$$", 1000);
$sim->mode('normal');
is($r->{status}, 202, 'another refund answer lost: 202') or diag($r->{body});
is(reserved($pno2), '0/1000', '... 1000 reserved');
$sim->mode('slow', delay_ms => 500, times => 2,
           path_prefix => '/acquirer/v1/refunds');
my @both = http_parallel([map {
    my $nonce = PayGW::Test::random_token(24);
    [POST => $gw->url('/v1/admin/resolve'), body => '{}', timeout => 30,
     headers => {'Content-Type' => 'application/json',
                 'Idempotency-Key' => $gw->fresh_key('k69'),
                 Authorization => sign_request('ops', 'ops-secret', 'POST',
                                               '/v1/admin/resolve', '{}',
                                               nonce => $nonce)}]
} 1 .. 2]);
$sim->mode('normal');
is_deeply([map { $_->{status} } @both], [200, 200], 'two resolves at once: 200 each')
    or diag(explain(\@both));
my $settled = 0;
$settled += ($_->{json} // {})->{settled} // 0 for @both;
cmp_ok($settled, '>=', 1, '... the refund was settled');
is(rstatus("R69d-$$"), 'succeeded', '... succeeded');
is(reserved($pno2), '1000/0', '... refunded 1000 once, nothing reserved');
is($gw->event_count("R69d-$$", 'refund.succeeded'), 1, '... one refund.succeeded event');
unlike($gw->ngx->error_log, qr/chk_refunds|query failed/,
       '... and the lost race is no error in the log');

# ---- the settler settles a refund still in flight: its answer is the row -
#
# The settler claims every open refund, one whose request still waits for
# the provider too.  When it settles it first, the request's own
# settlement matches nothing; the request then answers the refund as
# settled (201 succeeded), not "pending" as if nothing were known.

my $p3 = $gw->create(amount => 1000)->{json} // {};
my $pno3 = $p3->{payment_no} // '';
$sim->mode('slow', delay_ms => 1500, times => 1,
           path_prefix => '/acquirer/v1/refunds');
my $kid = fork // die "fork: $!\n";
if (!$kid) {
    select(undef, undef, undef, 0.5);           # the refund is in flight
    my $rr = $gw->api(POST => '/v1/admin/resolve', json => {}, key => 'ops',
                      idempotency_key => $gw->fresh_key('k69'));
    POSIX::_exit(($rr->{status} == 200
                  && ($rr->{json}{settled} // 0) == 1) ? 0 : 1);
}
$r = refund($pno3, "R69e-$$", 400);
waitpid($kid, 0);
is($? >> 8, 0, 'the settler settled the refund while its request waited');
$sim->mode('normal');
is($r->{status}, 201, 'the refund request answers 201, not 202')
    or diag($r->{body});
is($r->{json}{status}, 'succeeded', '... succeeded, as its row says');
ok(defined $r->{json}{channel_refund_no},
   '... with the acquirer\'s refund number');
is(rstatus("R69e-$$"), 'succeeded', '... stored succeeded');
is(reserved($pno3), '400/0', '... refunded 400 once, nothing reserved');
$sum = 0;
$sum += $_->{amount} for acq_refunds($pno3);
is($sum, 400, '... the acquirer refunded exactly 400');
is($gw->event_count("R69e-$$", 'refund.succeeded'), 1,
   '... one refund.succeeded event');
my $again = $gw->api(GET => "/v1/refunds/R69e-$$");
is($again->{json}{status}, 'succeeded', '... and a GET says the same');

is_deeply(resolve(), {examined => 0, settled => 0}, 'nothing left open');
is($gw->sql1("SELECT COUNT(*) FROM refunds WHERE status IN ('pending', 'unknown')"), 0,
   'no refund stays open');

done_testing;
