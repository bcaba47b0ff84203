#!/usr/bin/perl
# The wechat channel end to end against the simulator's WeChat Pay API v3
# (WECHATPAY2-SHA256-RSA2048 requests, signed answers, encrypted
# callbacks, its own keys): native -> code_url -> callback -> succeeded;
# refunds (also PROCESSING ones); close; callbacks forged, stale,
# replayed, mismatched, from an unknown or a rotated platform key; a lost
# create answer settled by a query; nginx -s reload picking up keys.
use strict;
use warnings;

use POSIX ();
use Test::More;

use PayGW::Test qw(http wait_until);
use PayGW::Gateway;

# Two tries per call of at most 1 s + 2 s each; unknown_grace no less than
# the time a create may still run (MySQL 1 s + 2 s, 2 x 3 s), or nginx -t
# refuses it; a payment WeChat Pay never saw is created again.  conf(1) or
# conf(1, 2): the WeChat Pay platform keys the gateway trusts -- key 1
# only, at first (rotation below).
sub conf {
    my (@platform) = @_;
    my $platform_keys = join "\n" . (' ' x 18), map {
        "platform_key=%%WECHAT_SERIAL_$_%%:%%SIM_KEYS%%/wechat_platform${_}_public.pem"
    } @platform;
    return <<"EOF";
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
                  $platform_keys
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
}

my $gw = PayGW::Gateway->start(http => conf(1));
my $sim = $gw->sim;
sub order {
    my ($no) = @_;
    my ($o) = grep { $_->{out_trade_no} eq $no } @{ $sim->trades->{wechat} };
    return $o;
}

sub resend {
    my ($sent) = @_;
    return http(POST => $gw->url('/v1/notify/wechat'), body => $sent->{body},
                headers => $sent->{headers});
}


# ---- create -> pay -> callback -> succeeded -------------------------------------

my $r = $gw->create(channel => 'wechat', amount => 1999);
is($r->{status}, 201, 'wechat create: 201') or diag $r->{body};
my $p = $r->{json};
is($p->{status}, 'pending', 'pending: waiting for the buyer');
like($p->{code_url}, qr{^weixin://wxpay/bizpayurl\?pr=}, 'the code_url from native pay');
my $o = order($p->{payment_no});
ok($o, 'the simulator has the order (it accepted our v3 signature)');
is($o->{trade_state}, 'NOTPAY', 'NOTPAY there');
is($o->{total}, 1999, 'amount in fen');

my $accepted = $gw->callbacks('wechat', 'accepted');
my $cb = $sim->wechat_notify(out_trade_no => $p->{payment_no});
is($cb->{status}, 204, 'callback: 204');
is($cb->{body}, '', 'no body');
my $g = $gw->payment($p->{payment_no});
is($g->{status}, 'succeeded', 'the callback settled the payment');
like($g->{channel_trade_no}, qr/^\d{20,}$/, 'transaction_id kept');
is($gw->event_count($p->{payment_no}, 'payment.succeeded'), 1, 'one payment.succeeded event');
is($gw->callbacks('wechat', 'accepted'), $accepted + 1, 'counted accepted');

# replayed within the window: a harmless duplicate
is(resend($cb->{sent})->{status}, 204, 'the same callback again: 204');
is($gw->event_count($p->{payment_no}, 'payment.succeeded'), 1, 'still one event');

# a failure after the success changes nothing
$cb = $sim->wechat_notify(out_trade_no => $p->{payment_no}, trade_state => 'CLOSED',
                          apply => 0);
is($cb->{status}, 204, 'CLOSED after success: acknowledged');
is($gw->payment($p->{payment_no})->{status}, 'succeeded', 'the payment stays succeeded');


# ---- refunds -------------------------------------------------------------------

$r = $gw->api(POST => "/v1/payments/$p->{payment_no}/refunds",
              json => {refund_no => 'WR-1', amount => 999},
              idempotency_key => "wref-1-$$");
is($r->{status}, 201, 'refund: 201') or diag $r->{body};
is($r->{json}{status}, 'succeeded', 'refund SUCCESS');
like($r->{json}{channel_refund_no}, qr/\S/, 'refund_id kept');
is($gw->payment($p->{payment_no})->{status}, 'partially_refunded', 'partially refunded');

# WeChat Pay settles this one later: pending, then a query settles it
$sim->mode('refund_processing', times => 1, path_prefix => '/v3/refund/');
$r = $gw->api(POST => "/v1/payments/$p->{payment_no}/refunds",
              json => {refund_no => 'WR-2', amount => 999},
              idempotency_key => "wref-2-$$");
is($r->{status}, 202, 'a PROCESSING refund: 202');
is($r->{json}{status}, 'pending', 'pending');
is($gw->api(GET => '/v1/refunds/WR-2')->{json}{status}, 'succeeded',
   'GET asked WeChat Pay: succeeded');
is($gw->payment($p->{payment_no})->{status}, 'partially_refunded', 'one fen left');

# a query WeChat Pay refuses (here: 400) says nothing of the refund
$sim->mode('refund_processing', times => 1, path_prefix => '/v3/refund/');
$r = $gw->api(POST => "/v1/payments/$p->{payment_no}/refunds",
              json => {refund_no => 'WR-Q', amount => 1},
              idempotency_key => "wref-q-$$");
is($r->{json}{status}, 'pending', 'another PROCESSING refund: pending') or diag $r->{body};
$sim->mode('error500', times => 1, path_prefix => '/v3/refund/');
is($gw->api(GET => '/v1/refunds/WR-Q')->{json}{status}, 'pending',
   'its query failing (500): still pending, never failed');
is($gw->api(GET => '/v1/refunds/WR-Q')->{json}{status}, 'succeeded',
   'the next query settles it');
is($gw->payment($p->{payment_no})->{status}, 'refunded', 'fully refunded');

# more than is left: refused here, never sent
$r = $gw->api(POST => "/v1/payments/$p->{payment_no}/refunds",
              json => {refund_no => 'WR-3', amount => 1},
              idempotency_key => "wref-3-$$");
is($r->{status}, 422, 'nothing left to refund: 422');


# ---- close, then a late success -------------------------------------------------

$p = $gw->create(channel => 'wechat')->{json};
$r = $gw->api(POST => "/v1/payments/$p->{payment_no}/close",
              idempotency_key => "wclose-$$");
is($r->{status}, 200, 'close: 200') or diag $r->{body};
is($r->{json}{status}, 'closed', 'closed');
is(order($p->{payment_no})->{trade_state}, 'CLOSED', 'closed at WeChat Pay first');
$cb = $sim->wechat_notify(out_trade_no => $p->{payment_no}, apply => 0);
is($cb->{status}, 204, 'a success after the close: acknowledged');
is($gw->payment($p->{payment_no})->{status}, 'closed', 'states only move forward');
is($gw->event_count($p->{payment_no}, 'payment.succeeded'), 0, 'no payment.succeeded event');

# paid meanwhile (callback lost): close is refused, the payment recorded paid
$p = $gw->create(channel => 'wechat')->{json};
$sim->wechat_notify(out_trade_no => $p->{payment_no}, url => $sim->url('/health'));
$r = $gw->api(POST => "/v1/payments/$p->{payment_no}/close",
              idempotency_key => "wclose2-$$");
is($r->{status}, 409, 'closing a paid order: 409');
is($gw->payment($p->{payment_no})->{status}, 'succeeded', 'recorded as paid');


# ---- callbacks that must be refused --------------------------------------------

$p = $gw->create(channel => 'wechat', amount => 3000)->{json};
my $rejected = $gw->callbacks('wechat', 'rejected');
my %expect = (signature => 401, serial => 401, body => 401, apiv3_key => 401,
              amount => 400, currency => 400, mchid => 401);
for my $tamper (sort keys %expect) {
    $cb = $sim->wechat_notify(out_trade_no => $p->{payment_no}, tamper => $tamper);
    is($cb->{status}, $expect{$tamper}, "tampered ($tamper): $expect{$tamper}");
    like($cb->{body}, qr/"code":"FAIL"/, "tampered ($tamper): {\"code\":\"FAIL\"}");
}
# stale and future timestamps, correctly signed
# 2 s past the window: the test and the gateway read the clock a moment
# apart (at exactly 300 s a second boundary between them made it 299: 204)
for my $skew (-302, -600, 302) {
    $cb = $sim->wechat_notify(out_trade_no => $p->{payment_no},
                              timestamp => time + $skew);
    is($cb->{status}, 401, "timestamp ${skew}s away: 401");
}
# a callback for an order we never made
$cb = $sim->wechat_notify(out_trade_no => 'P-NOT-OURS', total => 3000, apply => 0,
                          url => $gw->url('/v1/notify/wechat'));
is($cb->{status}, 404, 'unknown out_trade_no: 404');
is($gw->payment($p->{payment_no})->{status}, 'pending', 'the payment did not move');
is($gw->event_count($p->{payment_no}, 'payment.succeeded'), 0, 'no event');
is($gw->callbacks('wechat', 'rejected'), $rejected + scalar(keys %expect) + 4,
   'every refused callback counted rejected');

# an unsigned request
$r = http(POST => $gw->url('/v1/notify/wechat'), body => '{}',
          headers => {'Content-Type' => 'application/json'});
is($r->{status}, 401, 'no Wechatpay headers: 401');
like($r->{body}, qr/"code":"FAIL"/, 'FAIL');


# ---- key rotation: a new platform key needs a reload --------------------------

my $s2 = $sim->wechat_serial(2);
$sim->wechat_platform($s2);
$cb = $sim->wechat_notify(out_trade_no => $p->{payment_no});
is($cb->{status}, 401, 'signed by platform key 2, not yet trusted: 401');
is($gw->payment($p->{payment_no})->{status}, 'pending', 'still pending');

# the operator adds key 2 (keeping 1) and reloads
$gw->reload(conf(1, 2));
ok(wait_until(sub {
    my $x = $sim->wechat_notify(out_trade_no => $p->{payment_no});
    return $x->{status} == 204;
}, timeout => 10), 'after nginx -s reload, platform key 2 verifies');
is($gw->payment($p->{payment_no})->{status}, 'succeeded', 'and the payment succeeded');
$sim->wechat_platform($sim->wechat_serial(1));


# ---- answers: lost, unverifiable ------------------------------------------------

$sim->mode('reset_after', times => 2, path_prefix => '/v3/pay/');
$r = $gw->create(channel => 'wechat');
is($r->{status}, 202, 'native answer lost twice: 202');
is($r->{json}{status}, 'unknown', 'unknown');
$p = $r->{json};
$g = $gw->payment($p->{payment_no});
is($g->{status}, 'pending', 'GET queried: NOTPAY -> pending');
is($g->{code_url}, order($p->{payment_no})->{code_url},
   'the code_url fetched again (native pay is idempotent)');

$sim->mode('bad_signature', times => 2, path_prefix => '/v3/pay/');
$r = $gw->create(channel => 'wechat');
is($r->{json}{status}, 'unknown', 'an answer signed by another key: unknown');
ok(wait_until(sub { $gw->ngx->error_log =~ /paygw wechat: answer to .* refused: signature does not verify/ }),
   'logged why');

# WeChat Pay down at create, then GET after the grace: created again
$sim->mode('error500', times => 2, path_prefix => '/v3/pay/');
$r = $gw->create(channel => 'wechat');
is($r->{status}, 202, 'WeChat Pay 500 twice: 202');
ok(!order($r->{json}{payment_no}), 'no order there');
ok($gw->wait_unknown_grace($r->{json}{payment_no}, 1), 'past unknown_grace (1 s)');
$g = $gw->payment($r->{json}{payment_no});
is($g->{status}, 'pending', 'GET after the grace: order created, pending');
like($g->{code_url}, qr{^weixin://}, 'with its code_url');


# ---- the Authorization header and what reached WeChat Pay ---------------------

my ($req) = grep { $_->{path} eq '/v3/pay/transactions/native' } @{ $sim->requests };
like($req->{headers}{authorization},
     qr/^WECHATPAY2-SHA256-RSA2048 mchid="\d+",nonce_str="\w{32}",timestamp="\d+",serial_no="[0-9A-F]+",signature="[A-Za-z0-9+\/=]{344}"$/,
     'Authorization: WECHATPAY2-SHA256-RSA2048 with every field');
like($req->{headers}{traceparent}, qr/^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$/,
     'traceparent forwarded');
unlike($gw->ngx->error_log, qr/PRIVATE KEY|signature="/, 'no key or signature in the log');

done_testing;
