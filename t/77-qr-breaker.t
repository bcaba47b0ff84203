#!/usr/bin/perl
# Resilience of the QR channels, with 2 workers: 3 failed Alipay calls
# open the alipay circuit for every worker; while open, payments go to
# the configured fallback channel (wechat) and are paid there; after the
# ejection time one probe goes to Alipay again and its success closes
# the circuit.  A channel without a fallback answers 503.  And the
# channel directives' configuration errors, as nginx -t reports them.
use strict;
use warnings;

use Test::More;
use Time::HiRes qw(time);

use PayGW::Test qw(sleep_until wait_until);
use PayGW::Gateway;

# One try per call; the alipay and wechat breakers open after 3 failed
# calls in a row, for 2 s; alipay falls back to wechat.  conf(alipay =>
# PARAMETERS, wechat => PARAMETERS) replaces the last parameters of a
# channel (the configuration errors below).
sub conf {
    my (%o) = @_;
    my $alipay = $o{alipay} // 'fallback=wechat';
    my $wechat = $o{wechat} // '';
    return <<"EOF";
    paygw_zone  paygw:1m;
    upstream paygw_redis { server 127.0.0.1:%%REDIS_PORT%%; keepalive 16; }
    paygw_mysql main host=127.0.0.1 port=%%MYSQL_PORT%% user=paygw
                password_file=%%MYSQL_PASSWORD_FILE%%
                database=paygw max_conns=8 query_timeout=10s;
    paygw_keys  %%REPO%%/conf/demo/keys.conf;

    paygw_channel bank_card location=/_paygw/bank merchant_id=ACQ-M100
                  secret_file=%%REPO%%/conf/demo/acquirer.secret
                  attempts=1 unknown_grace=60s breaker_failures=0;
    paygw_channel alipay location=/_paygw/alipay app_id=%%ALIPAY_APP_ID%%
                  private_key=%%SIM_KEYS%%/alipay_app_private.pem
                  alipay_public_key=%%SIM_KEYS%%/alipay_public.pem
                  notify_url=http://127.0.0.1:%%PORT%%/v1/notify/alipay
                  attempts=1 unknown_grace=60s breaker_failures=3 breaker_timeout=2s
                  $alipay;
    paygw_channel wechat location=/_paygw/wechat
                  merchant_id=%%WECHAT_MCHID%% app_id=%%WECHAT_APPID%%
                  private_key=%%SIM_KEYS%%/wechat_merchant_private.pem
                  serial_no=%%WECHAT_MERCHANT_SERIAL%%
                  apiv3_key_file=%%SIM_KEYS%%/wechat_apiv3.key
                  platform_key=%%WECHAT_SERIAL_1%%:%%SIM_KEYS%%/wechat_platform1_public.pem
                  platform_key=%%WECHAT_SERIAL_2%%:%%SIM_KEYS%%/wechat_platform2_public.pem
                  notify_url=http://127.0.0.1:%%PORT%%/v1/notify/wechat
                  attempts=1 unknown_grace=60s breaker_failures=3 breaker_timeout=2s
                  $wechat;

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
            proxy_send_timeout 10s;
            proxy_read_timeout 10s;
            subrequest_output_buffer_size 64k;
        }
        location /_paygw/alipay/ {
            internal;
            proxy_pass http://paygw_alipay/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_connect_timeout 1s;
            proxy_send_timeout 10s;
            proxy_read_timeout 10s;
            subrequest_output_buffer_size 64k;
        }
        location /_paygw/wechat/ {
            internal;
            proxy_pass http://paygw_wechat/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_connect_timeout 1s;
            proxy_send_timeout 10s;
            proxy_read_timeout 10s;
            subrequest_output_buffer_size 64k;
        }
        location /v1/ { paygw_api; }
        location = /metrics { paygw_metrics; }
    }
EOF
}

my $gw = PayGW::Gateway->start(workers => 2, http => conf());
my $sim = $gw->sim;
sub alipay_requests {
    scalar grep { $_->{path} =~ m{^/gateway\.do} } @{ $sim->requests };
}

my $r = $gw->create(channel => 'alipay');
is($r->{status}, 201, 'healthy: created on alipay');
is($r->{json}{channel}, 'alipay', 'alipay');
is($gw->circuit_state('alipay'), 0, 'alipay circuit closed');

# clients that give up while Alipay thinks are not Alipay failing
$sim->mode('slow', delay_ms => 1500, times => 4, path_prefix => '/gateway.do');
for my $i (1 .. 4) {
    my $r = $gw->create({channel => 'alipay'}, timeout => 0.3);
    isnt($r->{status}, 201, "a client gone after 0.3 s ($i)");
}
# nginx logs each request once it is done with it: 499, the client left
ok(wait_until(sub { (() = $gw->ngx->access_log
                         =~ m{"POST /v1/payments HTTP/1\.1" 499 }g) >= 4 }),
   'nginx is done with the four abandoned requests');
is($gw->circuit_state('alipay'), 0, 'four abandoned requests do not open the circuit');
$r = $gw->create(channel => 'alipay');
is($r->{json}{channel}, 'alipay', 'alipay still takes payments');

$sim->mode('error500', path_prefix => '/gateway.do');
for my $i (1 .. 3) {
    $r = $gw->create(channel => 'alipay');
    is($r->{json}{status}, 'unknown', "Alipay failing: unknown ($i)");
}
my $opened = time;      # the third failure opened it before it was answered
is($gw->circuit_state('alipay'), 1, 'after 3 failures: open (seen from any worker)');

# open: every worker sends alipay payments to wechat, Alipay hears nothing
my $sent = alipay_requests();
my %pid;
for my $i (1 .. 6) {
    $r = $gw->create(channel => 'alipay');
    is($r->{status}, 201, "open: created ($i)") or diag $r->{body};
    is($r->{json}{channel}, 'wechat', "... on the fallback channel ($i)");
    like($r->{json}{code_url}, qr{^weixin://}, "... with a WeChat code_url ($i)");
}
is(alipay_requests(), $sent, 'open: nothing sent to Alipay');
my $fb = $r->{json};
is($sim->wechat_notify(out_trade_no => $fb->{payment_no})->{status}, 204,
   'the fallback payment is paid through WeChat Pay');
is($gw->api(GET => "/v1/payments/$fb->{payment_no}")->{json}{status}, 'succeeded',
   'succeeded');
my $bn = $gw->api(GET => "/v1/payments?business_no=$fb->{business_no}")->{json};
is($bn->{channel}, 'wechat', 'the merchant order shows where it went');

# wechat has no fallback: open, it refuses
$sim->mode('error500', path_prefix => '/v3/');
$gw->create(channel => 'wechat') for 1 .. 3;
is($gw->circuit_state('wechat'), 1, 'wechat circuit open');
$r = $gw->create(channel => 'alipay');
is($r->{status}, 503, 'both open: 503');
is($r->{json}{error}{code}, 'channel_unavailable', 'channel_unavailable');
$r = $gw->create(channel => 'wechat');
is($r->{status}, 503, 'wechat open, no fallback: 503');

# after the ejection time: one probe to Alipay; it succeeds, closing it
# The ejection time is what is tested, so it is waited out: breaker_timeout
# (2 s) from the moment the alipay circuit opened, plus 0.2 s for nginx's
# cached clock.
$sim->mode('normal');
sleep_until($opened + 2.2);
$r = $gw->create(channel => 'alipay');
is($r->{status}, 201, 'half-open: the probe went through');
is($r->{json}{channel}, 'alipay', 'on alipay itself');
is($gw->circuit_state('alipay'), 0, 'the probe closed the circuit');
$r = $gw->create(channel => 'alipay');
is($r->{json}{channel}, 'alipay', 'and alipay takes payments again');


# ---- configuration errors ---------------------------------------------------------

my $k = sub { $sim->key_file($_[0]) };
my $dir = PayGW::Test::_mkdir('badkeys');
PayGW::Test::_spew("$dir/garbage.pem", "not a key\n", 0600);
system("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 "
       . "-out $dir/short.pem 2>/dev/null") == 0 or die 'openssl';
PayGW::Test::_spew("$dir/apiv3.key", "too-short\n", 0600);

sub nginx_t { $gw->test_config(conf(@_)) }

my @bad = (
    [alipay => 'fallback=bank_card',
     qr/fallback=bank_card must name another configured QR channel/,
     'fallback to a card channel'],
    [alipay => 'fallback=nope',
     qr/fallback=nope must name another configured QR channel/,
     'fallback to an unknown channel'],
    [alipay => "alipay_public_key=$dir/garbage.pem",
     qr/"\Q$dir\E\/garbage\.pem" is not a PEM public key/, 'a public key that is not PEM'],
    [alipay => "private_key=$dir/short.pem",
     qr/is not an RSA key of 2048 bits or more/, 'a 1024-bit key'],
    [alipay => "private_key=$dir/missing.pem",
     qr/missing\.pem/, 'a key file that is missing'],
    [wechat => "apiv3_key_file=$dir/apiv3.key",
     qr/must hold a 32-byte key/, 'an APIv3 key of the wrong length'],
    [wechat => "platform_key=$dir/garbage.pem",
     qr/platform_key=.*: SERIAL:FILE expected|is not a PEM public key/,
     'a platform key without its serial'],
    [wechat => 'colour=blue', qr/invalid parameter "colour=blue"/,
     'an unknown parameter'],
);
for my $b (@bad) {
    my ($opt, $val, $re, $what) = @$b;
    my ($rc, $out) = nginx_t($opt => $val);
    isnt($rc, 0, "nginx -t fails: $what");
    like($out, $re, "... saying why ($what)");
    like($out, qr/nginx\.conf:\d+/, "... with file:line ($what)");
    unlike($out, qr/BEGIN|PRIVATE/, "... and no key material ($what)");
}
{
    my ($rc, $out) = $gw->test_config(conf()
        =~ s/app_id=\S+\s+private_key=\S+/app_id=2021000000000001/r);
    isnt($rc, 0, 'alipay without its private key: nginx -t fails');
    like($out, qr/paygw_channel "alipay" needs app_id=, private_key= and alipay_public_key=/,
         '... saying what it needs');
}
my ($rc) = nginx_t();
is($rc, 0, 'the correct configuration passes nginx -t');

done_testing;
