#!/usr/bin/perl
# The alipay channel end to end against the simulator's Alipay (real RSA2
# signatures both ways, its own keys): create -> QR code -> notify ->
# succeeded; refund; close; callbacks forged, tampered, mismatched,
# replayed, late and racing the create; a lost create answer settled by a
# query; Alipay down during create, then the resolver; expiry.
use strict;
use warnings;

use POSIX ();
use Test::More;

use PayGW::Test qw(http wait_until);
use PayGW::Gateway;

# Two tries per call of at most 1 s + 2 s each; unknown_grace no less than
# the time a create may still run (MySQL 1 s + 2 s, 2 x 3 s), or nginx -t
# refuses it; a payment Alipay never saw is created there again.
my $gw = PayGW::Gateway->start(http => <<'EOF');
    paygw_zone  paygw:1m;
    upstream paygw_redis { server 127.0.0.1:%%REDIS_PORT%%; keepalive 16; }
    paygw_mysql main host=127.0.0.1 port=%%MYSQL_PORT%% user=paygw
                password_file=%%MYSQL_PASSWORD_FILE%%
                database=paygw max_conns=8 connect_timeout=1s
                query_timeout=2s;
    paygw_keys  %%REPO%%/conf/demo/keys.conf;

    paygw_channel bank_card location=/_paygw/bank merchant_id=ACQ-M100
                  secret_file=%%REPO%%/conf/demo/acquirer.secret
                  attempts=2 unknown_grace=9s breaker_failures=0;
    paygw_channel alipay location=/_paygw/alipay app_id=%%ALIPAY_APP_ID%%
                  private_key=%%SIM_KEYS%%/alipay_app_private.pem
                  alipay_public_key=%%SIM_KEYS%%/alipay_public.pem
                  notify_url=http://127.0.0.1:%%PORT%%/v1/notify/alipay
                  attempts=2 unknown_grace=9s breaker_failures=0;
    paygw_channel wechat location=/_paygw/wechat
                  merchant_id=%%WECHAT_MCHID%% app_id=%%WECHAT_APPID%%
                  private_key=%%SIM_KEYS%%/wechat_merchant_private.pem
                  serial_no=%%WECHAT_MERCHANT_SERIAL%%
                  apiv3_key_file=%%SIM_KEYS%%/wechat_apiv3.key
                  platform_key=%%WECHAT_SERIAL_1%%:%%SIM_KEYS%%/wechat_platform1_public.pem
                  platform_key=%%WECHAT_SERIAL_2%%:%%SIM_KEYS%%/wechat_platform2_public.pem
                  notify_url=http://127.0.0.1:%%PORT%%/v1/notify/wechat
                  attempts=2 unknown_grace=9s breaker_failures=0;

    upstream paygw_acquirer { server 127.0.0.1:%%SIM_PORT%%; keepalive 16; }
    upstream paygw_alipay   { server 127.0.0.1:%%SIM_PORT%%; keepalive 16; }
    upstream paygw_wechat   { server 127.0.0.1:%%SIM_PORT%%; keepalive 16; }

    server {
        listen 127.0.0.1:%%PORT%%;

        location = /_paygw/redis {
            internal;
            paygw_redis_pass paygw_redis;
            paygw_redis_timeout 5s;
        }
        location = /_paygw/mysql { internal; paygw_mysql_pass main; }
        location /_paygw/bank/ {
            internal;
            proxy_pass http://paygw_acquirer/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_connect_timeout 1s;
            proxy_send_timeout 2s;
            proxy_read_timeout 2s;
            subrequest_output_buffer_size 64k;
        }
        location /_paygw/alipay/ {
            internal;
            proxy_pass http://paygw_alipay/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_connect_timeout 1s;
            proxy_send_timeout 2s;
            proxy_read_timeout 2s;
            subrequest_output_buffer_size 64k;
        }
        location /_paygw/wechat/ {
            internal;
            proxy_pass http://paygw_wechat/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_connect_timeout 1s;
            proxy_send_timeout 2s;
            proxy_read_timeout 2s;
            subrequest_output_buffer_size 64k;
        }
        location /v1/ { paygw_api; }
        location = /metrics { paygw_metrics; }
    }
EOF
my $sim = $gw->sim;
sub trade {
    my ($no) = @_;
    my ($t) = grep { $_->{out_trade_no} eq $no } @{ $sim->trades->{alipay} };
    return $t;
}

sub notify_raw {
    my ($body) = @_;
    return http(POST => $gw->url('/v1/notify/alipay'), body => $body,
                headers => {'Content-Type' => 'application/x-www-form-urlencoded'});
}


# ---- create -> pay -> notify -> succeeded ---------------------------------------

my $r = $gw->create(channel => 'alipay', amount => 1999);
is($r->{status}, 201, 'alipay create: 201') or diag $r->{body};
my $p = $r->{json};
is($p->{status}, 'pending', 'pending: waiting for the buyer');
is($p->{channel}, 'alipay', 'channel alipay');
like($p->{qr_code}, qr{^https://qr\.alipay\.com/}, 'the QR code from precreate');
my $t = trade($p->{payment_no});
ok($t, 'the simulator has the trade (it accepted our RSA2 signature)');
is($t->{status} // $t->{trade_status}, 'WAIT_BUYER_PAY', 'waiting at Alipay');
is($gw->payment($p->{payment_no})->{qr_code}, $p->{qr_code}, 'GET shows the QR code');

my $accepted = $gw->callbacks('alipay', 'accepted');
my $rejected = $gw->callbacks('alipay', 'rejected');

my $cb = $sim->alipay_notify(out_trade_no => $p->{payment_no});
is($cb->{status}, 200, 'notify: HTTP 200');
is($cb->{body}, 'success', 'notify: exactly "success"');
my $g = $gw->payment($p->{payment_no});
is($g->{status}, 'succeeded', 'the notify settled the payment');
like($g->{channel_trade_no}, qr/^\d{20,}$/, 'Alipay trade_no kept');
ok(!defined $g->{failure_code} && !defined $g->{failure_message},
   'no failure recorded on it');
is($gw->event_count($p->{payment_no}, 'payment.succeeded'), 1, 'one payment.succeeded event');
{
    my $payload = $gw->db->sql("SELECT payload FROM paygw.outbox_events WHERE "
                               . "object_no = '$p->{payment_no}' AND type = 'payment.succeeded'");
    like($payload, qr/"status":"succeeded"/, 'the event shows the payment succeeded');
    like($payload, qr/"channel_trade_no":"\d+"/, '... with Alipay\'s trade_no');
}
is($gw->callbacks('alipay', 'accepted'), $accepted + 1, 'counted accepted');

# the same notify again (Alipay repeats until it reads "success")
my $again = notify_raw($cb->{sent}{body});
is($again->{body}, 'success', 'a replayed notify: "success" again');
is($gw->event_count($p->{payment_no}, 'payment.succeeded'), 1, 'and still one event');
is($gw->callbacks('alipay', 'accepted'), $accepted + 2, 'the duplicate is counted accepted');

# a failure (close) after the success changes nothing
$cb = $sim->alipay_notify(out_trade_no => $p->{payment_no},
                          trade_status => 'TRADE_CLOSED', apply => 0);
is($cb->{body}, 'success', 'TRADE_CLOSED after success: acknowledged');
is($gw->payment($p->{payment_no})->{status}, 'succeeded', 'and the payment stays succeeded');
is($gw->event_count($p->{payment_no}, 'payment.closed'), 0, 'no payment.closed event');


# a card has no place in a QR payment: refused, nothing written
{
    my $rows = $gw->count_rows('payments');
    my $r = $gw->api(POST => '/v1/payments', idempotency_key => "acard-$$",
        json => PayGW::Gateway->payment_body(channel => 'alipay',
            card => {number => '4242424242424242', exp_month => 12,
                     exp_year => 2030, cvc => '123'}));
    is($r->{status}, 400, 'a card given for alipay: 400');
    like($r->{json}{error}{message}, qr/\bcard\b/, '... naming the card');
    is($gw->count_rows('payments'), $rows, '... nothing written');
}


# QR payments are in yuan
{
    my $r = $gw->create(channel => 'alipay', currency => 'USD');
    is($r->{status}, 400, 'alipay in USD: 400');
    like($r->{json}{error}{message}, qr/currency must be CNY/, '... currency must be CNY');
}


# ---- refunds ---------------------------------------------------------------------

$r = $gw->api(POST => "/v1/payments/$p->{payment_no}/refunds",
              json => {refund_no => 'AR-1', amount => 500, reason => 'damaged'},
              idempotency_key => "aref-1-$$");
is($r->{status}, 201, 'refund: 201') or diag $r->{body};
is($r->{json}{status}, 'succeeded', 'refund succeeded at Alipay');
is($gw->payment($p->{payment_no})->{status}, 'partially_refunded', 'partially refunded');
$t = trade($p->{payment_no});
is(scalar @{ $t->{refunds} // [] }, 1, 'one refund at the simulator');
$r = $gw->api(POST => "/v1/payments/$p->{payment_no}/refunds",
              json => {refund_no => 'AR-2', amount => 1499},
              idempotency_key => "aref-2-$$");
is($r->{json}{status}, 'succeeded', 'the rest refunded');
is($gw->payment($p->{payment_no})->{status}, 'refunded', 'fully refunded');
my $rf = $gw->api(GET => "/v1/refunds/AR-1")->{json};
is($rf->{status}, 'succeeded', 'GET refund');


# ---- close; then a late success ------------------------------------------------

$p = $gw->create(channel => 'alipay')->{json};
$r = $gw->api(POST => "/v1/payments/$p->{payment_no}/close",
              idempotency_key => "aclose-$$");
is($r->{status}, 200, 'close: 200') or diag $r->{body};
is($r->{json}{status}, 'closed', 'closed');
is(trade($p->{payment_no})->{status} // trade($p->{payment_no})->{trade_status},
   'TRADE_CLOSED', 'closed at Alipay first');
is($gw->event_count($p->{payment_no}, 'payment.closed'), 1, 'a payment.closed event');
$cb = $sim->alipay_notify(out_trade_no => $p->{payment_no}, apply => 0);
is($cb->{body}, 'success', 'a success after the close: acknowledged');
is($gw->payment($p->{payment_no})->{status}, 'closed', 'states only move forward: closed');
is($gw->event_count($p->{payment_no}, 'payment.succeeded'), 0, 'no payment.succeeded event');

# paid meanwhile: close is refused and the payment recorded as paid
$p = $gw->create(channel => 'alipay')->{json};
$sim->alipay_notify(out_trade_no => $p->{payment_no},
                    url => $sim->url('/health'));   # paid at Alipay, notify lost
$r = $gw->api(POST => "/v1/payments/$p->{payment_no}/close",
              idempotency_key => "aclose2-$$");
is($r->{status}, 409, 'closing a payment paid meanwhile: 409');
is($r->{json}{error}{code}, 'invalid_state', 'invalid_state');
is($gw->payment($p->{payment_no})->{status}, 'succeeded', 'and it is now recorded as paid');


# ---- callbacks that must be refused ----------------------------------------------

$p = $gw->create(channel => 'alipay', amount => 2500)->{json};
$rejected = $gw->callbacks('alipay', 'rejected');
for my $tamper (qw(signature amount app_id body out_trade_no)) {
    $cb = $sim->alipay_notify(out_trade_no => $p->{payment_no}, tamper => $tamper);
    isnt($cb->{body}, 'success', "tampered ($tamper): not \"success\"");
    is($cb->{body}, 'fail', "tampered ($tamper): \"fail\"");
}
is($gw->payment($p->{payment_no})->{status}, 'pending', 'the payment did not move');
is($gw->event_count($p->{payment_no}, 'payment.succeeded'), 0, 'no event');
is($gw->callbacks('alipay', 'rejected'), $rejected + 5, 'five rejected callbacks counted');

# amount of another payment: verified, but does not match this one
$cb = $sim->alipay_notify(out_trade_no => $p->{payment_no}, total_amount => '24.99',
                          apply => 0);
is($cb->{body}, 'fail', 'a signed notify with another amount: "fail"');
is($gw->payment($p->{payment_no})->{status}, 'pending', 'still pending');
# a signed notify with a parameter added twice: the second value would be
# read where the first was signed
$cb = $sim->alipay_notify(out_trade_no => $p->{payment_no}, apply => 0,
                          url => $sim->url('/health'));
is(notify_raw("trade_status=&$cb->{sent}{body}")->{body}, 'fail',
   'a repeated parameter: "fail"');
# garbage
is(notify_raw('a=b&c')->{body}, 'fail', 'a malformed form: "fail"');
is(notify_raw('')->{body}, 'fail', 'an empty body: "fail"');
is($gw->payment($p->{payment_no})->{status}, 'pending', 'still pending after garbage');
# and the genuine one still works
is($sim->alipay_notify(out_trade_no => $p->{payment_no})->{body}, 'success',
   'the genuine notify afterwards: "success"');
is($gw->payment($p->{payment_no})->{status}, 'succeeded', 'succeeded');


# ---- a notify racing the create's answer ---------------------------------------

$sim->mode('slow', delay_ms => 1500, times => 1, path_prefix => '/gateway.do');
my $body = PayGW::Gateway->payment_body(channel => 'alipay', business_no => "RACE-$$");
my $create_url = '/v1/payments';
my $out = "/tmp/paygw-race-$$";
my $pid = fork // die;
if (!$pid) {
    my $res = $gw->api(POST => $create_url, json => $body,
                       idempotency_key => "race-$$", timeout => 20);
    open my $fh, '>', $out or die;
    print $fh "$res->{status}\n$res->{body}";
    close $fh;
    POSIX::_exit(0);
}
my $no;
ok(wait_until(sub {
    my $row = $gw->db->sql("SELECT payment_no FROM paygw.payments "
                           . "WHERE business_no = 'RACE-$$'");
    chomp $row;
    $no = $row if $row;
    return $no && trade($no);
}, timeout => 5), 'the create is in flight, the trade exists at Alipay');
$cb = $sim->alipay_notify(out_trade_no => $no);
is($cb->{body}, 'success', 'the notify that overtook the create: "success"');
waitpid $pid, 0;
open my $fh, '<', $out or die "$out: $!";
my ($status, $json) = split /\n/, do { local $/; <$fh> }, 2;
unlink $out;
is($status, 201, 'the create still answers 201');
like($json, qr/"status":"succeeded"/, 'and shows the payment as succeeded');
{ my $g = $gw->get_payment($no);
  is($g->{json}{status}, 'succeeded', 'stored succeeded') or diag("$g->{status} $g->{body}"); }
is($gw->event_count($no, 'payment.succeeded'), 1, 'one event');


# ---- the create's answer lost: unknown, then a query ---------------------------

$sim->mode('reset_after', times => 2, path_prefix => '/gateway.do');
$r = $gw->create(channel => 'alipay');
is($r->{status}, 202, 'precreate answer lost twice: 202');
is($r->{json}{status}, 'unknown', 'unknown, never guessed');
$p = $r->{json};
ok(trade($p->{payment_no}), 'Alipay did create the trade');
$g = $gw->payment($p->{payment_no});
is($g->{status}, 'pending', 'GET queried Alipay: the trade waits for its buyer');
ok(!defined $g->{failure_message}, 'and no failure message is left from the lost answer');
is($g->{qr_code}, trade($p->{payment_no})->{qr_code},
   'and the QR code was fetched again (precreate is idempotent)');
my $reqs = trade($p->{payment_no});
ok(($reqs->{queries} // 0) >= 1, 'Alipay was queried');


# ---- Alipay down during create; the resolver; expiry -----------------------------

$sim->mode('reset', times => 2, path_prefix => '/gateway.do');
$r = $gw->create(channel => 'alipay', expire_seconds => 60);
is($r->{status}, 202, 'Alipay down: 202 unknown');
$p = $r->{json};
ok(!trade($p->{payment_no}), 'nothing reached Alipay');
ok($gw->wait_unknown_grace($p->{payment_no}, 1), 'past unknown_grace (1 s)');
$r = $gw->api(POST => '/v1/admin/resolve', key => 'ops',
              idempotency_key => "resolve-1-$$");
is($r->{status}, 200, 'resolve: 200') or diag $r->{body};
$g = $gw->payment($p->{payment_no});
is($g->{status}, 'pending', 'the resolver created the trade again: pending');
like($g->{qr_code}, qr{^https://}, 'with its QR code');

# nobody paid: once expired, the resolver closes it there and here
$gw->db->sql("UPDATE paygw.payments SET expire_at = UTC_TIMESTAMP(3) - "
             . "INTERVAL 1 SECOND WHERE payment_no = '$p->{payment_no}'");
$r = $gw->api(POST => '/v1/admin/resolve', key => 'ops',
              idempotency_key => "resolve-2-$$");
is($r->{status}, 200, 'resolve again: 200');
is($gw->payment($p->{payment_no})->{status}, 'closed', 'expired unpaid: closed');
is(trade($p->{payment_no})->{status} // trade($p->{payment_no})->{trade_status},
   'TRADE_CLOSED', 'closed at Alipay too');

# expired but paid meanwhile (notify lost): the query finds the money
$p = $gw->create(channel => 'alipay')->{json};
$sim->alipay_notify(out_trade_no => $p->{payment_no}, url => $sim->url('/health'));
$gw->db->sql("UPDATE paygw.payments SET expire_at = UTC_TIMESTAMP(3) - "
             . "INTERVAL 1 SECOND WHERE payment_no = '$p->{payment_no}'");
is($gw->payment($p->{payment_no})->{status}, 'succeeded',
   'expired, but paid at Alipay: succeeded, not closed');


# ---- a response that does not verify -------------------------------------------

$sim->mode('bad_signature', times => 2, path_prefix => '/gateway.do');
$r = $gw->create(channel => 'alipay');
is($r->{status}, 202, 'an answer signed with another key: 202');
is($r->{json}{status}, 'unknown', 'unknown: never trusted');
ok(wait_until(sub { $gw->ngx->error_log =~ /does not verify with the Alipay public key/ }),
   'logged');
unlike($gw->ngx->error_log, qr/BEGIN|PRIVATE KEY/, 'no key material in the log');

done_testing;
