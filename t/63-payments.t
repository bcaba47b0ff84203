#!/usr/bin/perl
# The bank-card payment lifecycle as a merchant sees it (SPEC §3, §5):
# create -> succeeded / failed with the decline reason, read it back by
# payment_no and by business_no, the stored row (last4 only, never the card
# number or CVC), one outbox event per state change carrying the payment,
# merchant isolation, idempotent replay, and close refused for payments
# that are not pending.
use strict;
use warnings;

use Test::More;
use JSON::PP ();

use PayGW::Gateway qw(err_code sql_quote);

my $PAN = '4242424242424242';
my $CVC = '987';

# The lifecycle needs no directive of its own: the gateway runs the
# harness's default http{} configuration, $PayGW::Gateway::DEFAULT_HTTP
# (t/lib/PayGW/Gateway.pm).
my $gw = PayGW::Gateway->start;

sub card { PayGW::Gateway->card(number => $_[0], cvc => $CVC) }

sub acq_charge { ($gw->charges_for($_[0]))[0] }

my $ISO = qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/;

# ---- create: succeeded --------------------------------------------------

my $bno = "ORD-63-$$";
my $r = $gw->create(business_no => $bno, amount => 2599, card => card($PAN),
               subject => 'Green tea');
is($r->{status}, 201, 'create with an approving card: 201') or diag($r->{body});
my $p = $r->{json} // {};
my $pno = $p->{payment_no} // '';
like($pno, qr/^\S{8,40}$/, 'payment_no assigned');
is_deeply({map { $_ => $p->{$_} } qw(merchant_id business_no amount currency
                                        channel status refunded_amount card)},
          {merchant_id => 'M100', business_no => $bno, amount => 2599,
           currency => 'CNY', channel => 'bank_card', status => 'succeeded',
           refunded_amount => 0, card => {brand => 'visa', last4 => '4242'}},
          'payment object: merchant, order, amount, status, card brand/last4');
like($p->{created_at} // '', $ISO, 'created_at is ISO 8601 UTC');
like($p->{updated_at} // '', $ISO, 'updated_at is ISO 8601 UTC');
ok(!exists $p->{failure_code} || !defined $p->{failure_code},
   'a succeeded payment has no failure_code');
unlike($r->{body}, qr/\Q$PAN\E|"cvc"|"number"/,
       'the response carries neither the card number nor the CVC');
like($r->{headers}{'x-request-id'} // '', qr/^\S+$/, 'X-Request-Id present');

my $ch = acq_charge($pno);
ok($ch, 'the acquirer holds a charge under out_trade_no = payment_no')
    and is_deeply([@$ch{qw(amount currency status)}], [2599, 'CNY', 'approved'],
                  '... for the amount and currency, approved');
is($p->{channel_trade_no}, $ch && $ch->{charge_id},
   'channel_trade_no is the acquirer\'s charge id');
is(scalar @{ $gw->sim->charges->{charges} }, 1, 'exactly one charge at the acquirer');

# ---- the stored row -----------------------------------------------------

my ($st, $amt, $last4, $brand, $ctn) = split /\t/, $gw->sql1(
    "SELECT status, amount, card_last4, card_brand, channel_trade_no "
    . "FROM payments WHERE payment_no = " . sql_quote($pno));
is_deeply([$st, $amt, $last4, $brand], ['succeeded', 2599, '4242', 'visa'],
          'DB row: status, amount, card_last4, card_brand');
is($ctn, $p->{channel_trade_no}, 'DB row: channel_trade_no');

my $dump = $gw->db->sql("SELECT * FROM payments");
unlike($dump, qr/\Q$PAN\E/, 'no full card number anywhere in payments');
unlike($dump, qr/424242\d{6}/, 'not even a partial PAN beyond last4');
unlike($dump, qr/cvc/i, 'no CVC field in payments');
my @cols = map { [split /\t/] } split /\n/, $dump;
ok(!grep({ $_ eq $CVC } map { @$_ } @cols),
   'no payments column holds the CVC value');

# ---- read back ----------------------------------------------------------

my $g = $gw->api(GET => "/v1/payments/$pno");
is($g->{status}, 200, 'GET /v1/payments/{no}: 200');
is_deeply($g->{json}, $p, '... the same payment object as create returned');

my $f = $gw->api(GET => "/v1/payments?business_no=$bno");
is($f->{status}, 200, 'GET /v1/payments?business_no=: 200') or diag($f->{body});
is($f->{json}{payment_no}, $pno, '... finds the payment of that order');
is($f->{json}{status}, 'succeeded', '... with its status');

my $f404 = $gw->api(GET => "/v1/payments?business_no=ORD-63-none-$$");
is($f404->{status}, 404, 'business_no without a payment: 404');
is(err_code($f404), 'not_found', '... not_found');

my $a = $gw->api(GET => "/v1/payments/$pno", key => 'ops');
is($a->{status}, 200, 'admin key reads any merchant\'s payment');
is($a->{json}{merchant_id}, 'M100', '... and sees its merchant');

# ---- idempotency on create ----------------------------------------------

{
    my $body = PayGW::Gateway->payment_body(card => card($PAN));
    my $k = $gw->fresh_key('k63');
    my $r1 = $gw->api(POST => '/v1/payments', json => $body, idempotency_key => $k);
    my $r2 = $gw->api(POST => '/v1/payments', json => $body, idempotency_key => $k);
    is($r1->{status}, 201, 'create (idempotency check): 201');
    is($r2->{status}, 201, 'same key, same body: the stored status');
    is($r2->{body}, $r1->{body}, '... and body byte for byte');
    is($r2->{headers}{'idempotent-replayed'}, 'true', '... Idempotent-Replayed: true');
    my $c = acq_charge($r1->{json}{payment_no} // '');
    is($c && $c->{requests}, 1, 'the replay sent no second charge to the acquirer');

    my $r3 = $gw->api(POST => '/v1/payments', json => $body, idempotency_key => $gw->fresh_key('k63'));
    is($r3->{status}, 409, 'new key for an existing business_no: 409');
    is(err_code($r3), 'duplicate_business_no', '... duplicate_business_no');
    is($r3->{json}{error}{payment_no}, $r1->{json}{payment_no},
       '... naming the existing payment_no');
    is($gw->sql1("SELECT COUNT(*) FROM payments WHERE business_no = "
            . sql_quote($body->{business_no})), 1, '... and no second payment row');
}

# ---- declines -----------------------------------------------------------

my %decl;
for my $case (['4000000000000002', 'card_declined', '0002'],
              ['4000000000009995', 'insufficient_funds', '9995']) {
    my ($number, $code, $l4) = @$case;
    my $d = $gw->create(card => card($number));
    is($d->{status}, 201, "declining card ($code): 201, a definitive outcome")
        or diag($d->{body});
    my $j = $d->{json} // {};
    is($j->{status}, 'failed', "... status failed");
    is($j->{failure_code}, $code, "... failure_code $code");
    ok(defined $j->{failure_message} && length $j->{failure_message},
       '... with a failure_message');
    is_deeply($j->{card}, {brand => 'visa', last4 => $l4}, '... card last4');
    is($j->{refunded_amount}, 0, '... nothing refunded');
    my $row = $gw->sql1("SELECT status, failure_code FROM payments WHERE payment_no = "
                   . sql_quote($j->{payment_no} // ''));
    is($row, "failed\t$code", '... DB row failed with the code');
    my $gg = $gw->api(GET => "/v1/payments/" . ($j->{payment_no} // ''));
    is_deeply([$gg->{status}, $gg->{json}{status}, $gg->{json}{failure_code}],
              [200, 'failed', $code], '... GET reports it failed with the code');
    $decl{$code} = $j;
}
is(scalar(grep { $_->{queries} } @{ $gw->sim->charges->{charges} }), 0,
   'reading definitive payments never queried the acquirer');

# ---- outbox: one event per state change ---------------------------------

{
    my @ev = $gw->events($pno);
    is(scalar @ev, 1, 'succeeded payment: exactly one outbox event (GETs added none)');
    my $e = $ev[0] // {};
    is($e->{type}, 'payment.succeeded', '... payment.succeeded');
    is($e->{merchant_id}, 'M100', '... for the merchant');
    is($e->{status}, 'pending', '... waiting for delivery');
    my $pl = $e->{payload} // {};
    is($pl->{type}, 'payment.succeeded', 'payload: type');
    is($pl->{id}, $e->{event_id}, 'payload: id is the event id');
    is($pl->{data}{payment_no}, $pno, 'payload: data.payment_no');
    is($pl->{data}{status}, 'succeeded', 'payload: data.status');
    is($pl->{data}{amount}, 2599, 'payload: data.amount');
    is($pl->{data}{business_no}, $bno, 'payload: data.business_no');
    is_deeply($pl->{data}{card}, {brand => 'visa', last4 => '4242'},
              'payload: data.card brand/last4');
    unlike($e->{raw} // '', qr/\Q$PAN\E|cvc/i, 'payload: no card number, no CVC');

    for my $code (sort keys %decl) {
        my @f = $gw->events($decl{$code}{payment_no} // '');
        is(scalar @f, 1, "$code payment: exactly one outbox event");
        is($f[0] && $f[0]{type}, 'payment.failed', '... payment.failed');
        is($f[0] && $f[0]{payload}{data}{failure_code}, $code,
           '... payload data.failure_code');
        is($f[0] && $f[0]{payload}{data}{payment_no}, $decl{$code}{payment_no},
           '... payload data.payment_no');
    }
}

# ---- merchant isolation -------------------------------------------------

{
    my $o = $gw->create(card => card($PAN));
    my $ono = $o->{json}{payment_no} // '';
    my $obno = $o->{json}{business_no} // '';
    is($o->{status}, 201, 'a payment to hand to another merchant');
    # the row now belongs to merchant M200: the demo key (M100) must not see it
    $gw->db->sql("UPDATE payments SET merchant_id = 'M200' WHERE payment_no = "
                 . sql_quote($ono));

    my $x = $gw->api(GET => "/v1/payments/$ono");
    is($x->{status}, 404, 'another merchant\'s payment: GET 404');
    is(err_code($x), 'not_found', '... not_found (no hint it exists)');
    unlike($x->{body}, qr/M200/, '... and nothing of the other merchant leaks');

    my $y = $gw->api(GET => "/v1/payments?business_no=$obno");
    is($y->{status}, 404, 'another merchant\'s order: find by business_no 404');

    my $c = $gw->api(POST => "/v1/payments/$ono/close", json => {},
                     idempotency_key => $gw->fresh_key('k63'));
    is($c->{status}, 404, 'another merchant\'s payment: close 404');

    my $rf = $gw->api(POST => "/v1/payments/$ono/refunds",
                      json => {refund_no => "R63-$$", amount => 1, reason => 'x'},
                      idempotency_key => $gw->fresh_key('k63'));
    is($rf->{status}, 404, 'another merchant\'s payment: refund 404');
    is(scalar @{ $gw->sim->charges->{refunds} }, 0, '... and nothing refunded');

    my $adm = $gw->api(GET => "/v1/payments/$ono", key => 'ops');
    is($adm->{status}, 200, 'admin key sees it');
    is($adm->{json}{merchant_id}, 'M200', '... as merchant M200\'s');

    my $none = $gw->api(GET => '/v1/payments/P00000000000000000000');
    is($none->{status}, 404, 'nonexistent payment_no: 404');
    my $ej = $none->{json}{error} // {};
    is($ej->{code}, 'not_found', '... not_found');
    ok(length($ej->{message} // ''), '... with a message');
    is($ej->{request_id}, $none->{headers}{'x-request-id'},
       '... request_id equals the X-Request-Id header');
    is($gw->api(GET => '/v1/payments/P00000000000000000000', key => 'ops')->{status},
       404, 'nonexistent payment_no for the admin key: 404');
}

# ---- close --------------------------------------------------------------

{
    my $before = $gw->count_rows('outbox_events');
    for my $case ([$pno, 'succeeded'],
                  [$decl{card_declined}{payment_no} // '', 'failed']) {
        my ($no, $state) = @$case;
        my $c = $gw->api(POST => "/v1/payments/$no/close", json => {},
                         idempotency_key => $gw->fresh_key('k63'));
        is($c->{status}, 409, "close a $state payment: 409");
        is(err_code($c), 'invalid_state', '... invalid_state');
        is($gw->api(GET => "/v1/payments/$no")->{json}{status}, $state,
           "... it stays $state");
    }
    my $c = $gw->api(POST => '/v1/payments/P00000000000000000000/close',
                     json => {}, idempotency_key => $gw->fresh_key('k63'));
    is($c->{status}, 404, 'close an unknown payment_no: 404');
    is(err_code($c), 'not_found', '... not_found');
    is($gw->count_rows('outbox_events'), $before,
       'refused closes wrote no outbox event');
    is($gw->sql1("SELECT COUNT(*) FROM outbox_events WHERE type = 'payment.closed'"), 0,
       'no payment.closed event at all');
}

# ---- a rejected request writes nothing and charges nothing ---------------

{
    my ($pay, $ev) = ($gw->count_rows('payments'), $gw->count_rows('outbox_events'));
    my $charges = scalar @{ $gw->sim->charges->{charges} };
    my $bad = $gw->create(amount => 0, card => card($PAN));
    is($bad->{status}, 400, 'amount 0: 400');
    is(err_code($bad), 'invalid_request', '... invalid_request');
    like($bad->{json}{error}{message} // '', qr/amount/, '... naming the field');
    my $luhn = $gw->create(card => card('4242424242424241'));
    is($luhn->{status}, 400, 'card number failing Luhn: 400');
    is($gw->count_rows('payments'), $pay, 'no payment row written');
    is($gw->count_rows('outbox_events'), $ev, 'no outbox row written');
    is(scalar @{ $gw->sim->charges->{charges} }, $charges, 'nothing sent to the acquirer');
}

# Every outbox row belongs to a payment that changed state: 1 succeeded
# + 1 replayed-create + 2 declines + 1 (handed to M200) = 5.
is($gw->count_rows('outbox_events'), 5, 'exactly one outbox row per state change');
is($gw->sql1("SELECT COUNT(*) FROM payments p LEFT JOIN outbox_events e "
        . "ON e.object_no = p.payment_no WHERE e.id IS NULL"), 0,
   'every settled payment has its event');

done_testing;
