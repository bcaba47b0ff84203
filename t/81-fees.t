#!/usr/bin/perl
# Fees (SPEC §7): paygw_fees FILE, checked by nginx -t with file:line and
# applied by a reload; fee = round_half_up(amount * bps / 10000) + fixed,
# clamped to [min, max], net_amount = amount - fee, both null until the
# payment succeeded; computed once at success and stored (a later schedule
# does not change them); refunds return the fee in proportion, rounded
# down, and the refund that completes the payment returns what is left.
use strict;
use warnings;

use Test::More;

use PayGW::Gateway qw(sql_quote);
use PayGW::Test ();

my $dir = PayGW::Test::_mkdir('fees');
my $fees = "$dir/fees.conf";

sub schedule { PayGW::Test::_spew($fees, join '', map { "$_\n" } @_) }

# M100's demo schedule: bank_card 50 bps + 10
schedule('# merchant channel bps fixed min max',
         'M100 alipay 60 0 - -', 'M100 wechat 60 0 - -',
         'M100 bank_card 50 10 - -  # the demo one');

(my $http = $PayGW::Gateway::DEFAULT_HTTP)
    =~ s{%%REPO%%/conf/demo/fees\.conf}{%%FEES%%} or die 'no paygw_fees';

my $gw = PayGW::Gateway->start(http => $http, vars => {FEES => $fees});

sub pay {
    my ($amount, %o) = @_;
    my $r = $gw->create(amount => $amount, %o);
    return $r->{json} // {};
}

# ---- the payment object ---------------------------------------------------

{
    my $p = pay(1999);
    is($p->{status}, 'succeeded', 'a card payment succeeds');
    is($p->{fee}, 20, 'fee of 1999 at 50 bps + 10: 9.995 rounds to 10, +10');
    is($p->{net_amount}, 1979, 'net_amount = amount - fee');
    is_deeply([@{ $gw->payment($p->{payment_no}) }{qw(fee net_amount)}],
              [20, 1979], 'GET shows the stored fee and net');
    is($gw->sql1('SELECT CONCAT(fee, " ", net_amount, " ", '
                 . 'succeeded_at IS NOT NULL) FROM payments WHERE '
                 . 'payment_no = ' . sql_quote($p->{payment_no})),
       '20 1979 1', '... stored with the payment, with its success time');

    my $q = $gw->create(channel => 'alipay', amount => 1000)->{json} // {};
    is($q->{status}, 'pending', 'a QR payment waits for its buyer');
    ok(exists $q->{fee} && !defined $q->{fee}, '... fee is null')
        or diag explain $q;
    ok(exists $q->{net_amount} && !defined $q->{net_amount},
       '... net_amount is null');
}

# ---- rounding half up on the boundary ----------------------------------------

for ([100, 11, 'exactly 0.5 rounds up'], [99, 10, '0.495 rounds down'],
     [300, 12, '1.5 rounds up'], [1, 10, 'the fixed part alone'],
     [1000000000000, 5000000010, 'the largest amount']) {
    my ($amount, $fee, $what) = @$_;
    my $p = pay($amount);
    is($p->{fee}, $fee, "fee of $amount: $what");
    is($p->{net_amount}, $amount - $fee, "... net $amount - $fee");
}

# ---- refunds return the fee in proportion ---------------------------------

sub refund {
    my ($pno, $amount) = @_;
    my $r = $gw->api(POST => "/v1/payments/$pno/refunds",
                     json => {refund_no => $gw->fresh_key('R'),
                              amount => $amount},
                     idempotency_key => $gw->fresh_key('k81'));
    return $r->{json} // {};
}

sub returned {
    $gw->sql1('SELECT fee_returned FROM refunds WHERE refund_no = '
              . sql_quote($_[0]));
}

{
    my $p = pay(1999);    # fee 20
    my $pno = $p->{payment_no};
    my $r1 = refund($pno, 1000);
    is($r1->{status}, 'succeeded', 'partial refund 1000 of 1999');
    is(returned($r1->{refund_no}), 10, '... returns floor(20*1000/1999) = 10');
    my $r2 = refund($pno, 333);
    is(returned($r2->{refund_no}), 3, '333 returns floor(20*333/1999) = 3');
    my $r3 = refund($pno, 666);
    is($r3->{status}, 'succeeded', 'the last 666 completes the refund');
    is(returned($r3->{refund_no}), 7, '... and returns the rest: 20-10-3');
    is($gw->sql1('SELECT CONCAT(status, " ", fee, " ", fee_returned) FROM '
                 . 'payments WHERE payment_no = ' . sql_quote($pno)),
       'refunded 20 20', 'the payment: refunded, all its fee returned');
    is($gw->payment($pno)->{fee}, 20, 'its fee stays what it was');

    my $f = pay(5000);    # fee 25 + 10 = 35
    my $rf = refund($f->{payment_no}, 5000);
    is(returned($rf->{refund_no}), 35, 'a full refund returns the whole fee');

    my $small = pay(3);   # fee 10
    my $rs = refund($small->{payment_no}, 1);
    is(returned($rs->{refund_no}), 3, 'floor(10*1/3) = 3');
}

# ---- a new schedule: new payments only --------------------------------------

my $before = pay(10000);
is($before->{fee}, 60, 'fee of 10000 under the demo schedule: 50 + 10');

schedule('M100 bank_card 100 0 50 200', '* alipay 60 0 - -');
$gw->reload;

{
    is(pay(1000)->{fee}, 50, 'reloaded: 10 clamped up to the minimum 50');
    is(pay(100000)->{fee}, 200, '1000 clamped down to the maximum 200');
    is(pay(10000)->{fee}, 100, '100 between the bounds');
    is($gw->payment($before->{payment_no})->{fee}, 60,
       'a payment made before keeps its stored fee');
}

schedule('M100 alipay 60 0 - -');
$gw->reload;
{
    my $p = pay(10000);
    is($p->{fee}, 0, 'no schedule for the channel: fee 0');
    is($p->{net_amount}, 10000, '... net is the amount');
}

# ---- nginx -t -------------------------------------------------------------------

for (['M100 bank_card 50 10 -', qr/expected "merchant_id channel bps fixed/,
      'five words'],
     ['M100 bank_card 10001 0 - -', qr/invalid rate "10001"/, 'bps > 10000'],
     ['M100 bank_card 50 x - -', qr/invalid fixed, min or max/, 'fixed "x"'],
     ['M100 bank_card 50 0 20 10', qr/minimum above its maximum/, 'min > max'],
     ["M100 wechat 1 0 - -\nM100 wechat 2 0 - -",
      qr/duplicate fee schedule for merchant "M100" channel "wechat"/,
      'duplicate']) {
    my ($text, $re, $what) = @$_;
    schedule('# a comment', '', $text);
    my $line = 3 + ($text =~ tr/\n//);
    my ($rc, $out) = $gw->test_config($http);
    isnt($rc, 0, "nginx -t refuses a schedule with $what");
    like($out, $re, '... saying why') or diag($out);
    like($out, qr/\Q$fees\E:$line\b/, "... at fees.conf:$line") or diag($out);
}

{
    schedule('M100 bank_card 50 10 - -');
    my ($rc, $out) = $gw->test_config($http);
    is($rc, 0, 'the demo schedule passes nginx -t') or diag($out);
    PayGW::Test::_spew($fees, '');
    ($rc, $out) = $gw->test_config($http =~ s{%%FEES%%}{$dir/none.conf}r);
    isnt($rc, 0, 'a missing schedule file fails nginx -t');
    like($out, qr/cannot open paygw_fees file/, '... saying so');
}

done_testing;
