#!/usr/bin/perl
# SPEC §6: logs never contain a card number, CVC, secret, signature key or
# full Authorization header; PANs appear at most as first6/last4.  Drive a
# gateway through successes, declines, validation errors that carry the
# PAN in the wrong place, acquirer faults, a bad signature and refunds --
# once at error_log level info and once at debug -- then search everything
# the gateway wrote: error log, access log, the payments, refunds and
# outbox tables, and the Redis idempotency store.
use strict;
use warnings;

use Test::More;
use Digest::SHA qw(hmac_sha256_hex sha256_hex);
use JSON::PP ();

use PayGW::Gateway;
use PayGW::Test qw(http sign_request);

my $PAN   = '4242424242424242';
my $DPAN  = '4000000000000002';         # declining test card
my $CVC   = '987';
my %SECRET = (demo => 'demo-secret', ops => 'ops-secret');
my @SECRETS = ('demo-secret', 'ops-secret', 'viewer-secret', 'acq-demo-secret');

my $enc = JSON::PP->new->canonical;

sub card { my ($number, %o) = @_; PayGW::Gateway->card(number => $number, cvc => $CVC, %o) }

# One signed request; every Authorization value sent is remembered.
my @AUTH;
my %EXPECTED;     # tag => signatures the bad-secret requests should have had
my $n = 0;
sub call {
    my ($gw, $method, $path, %o) = @_;
    my $body = exists $o{json} ? $enc->encode($o{json}) : ($o{body} // '');
    my $key = $o{key} // 'demo';
    my $auth = sign_request($key, $o{secret} // $SECRET{$key}, $method, $path, $body);
    push @AUTH, $auth;
    my %h = (Authorization => $auth);
    $h{'Content-Type'} = 'application/json' if length $body;
    $h{'Idempotency-Key'} = 'k66-' . $$ . '-' . ++$n if $method eq 'POST';
    return http($method, $gw->url($path), body => $body, headers => \%h, timeout => 30);
}

sub code_of { ($_[0]{json} && ref $_[0]{json}{error} eq 'HASH')
              ? $_[0]{json}{error}{code} : ($_[0]{json} // {})->{status} }

# The traffic: returns the number of requests that went as expected.
sub traffic {
    my ($gw, $tag) = @_;
    my @want;
    my $ok = sub { my ($name, $r, $status, $code) = @_;
                   my $good = is_deeply([$r->{status}, code_of($r)], [$status, $code],
                                        "$tag: $name -> $status " . ($code // ''));
                   diag($r->{body}) unless $good;
                   return $r };

    my $s = $ok->('approved card', call($gw, POST => '/v1/payments',
                  json => PayGW::Gateway->payment_body(amount => 1000, card => card($PAN))),
                  201, 'succeeded');
    my $pno = $s->{json}{payment_no} // '';
    $ok->('declined card', call($gw, POST => '/v1/payments',
          json => PayGW::Gateway->payment_body(card => card($DPAN))), 201, 'failed');
    $ok->('insufficient funds', call($gw, POST => '/v1/payments',
          json => PayGW::Gateway->payment_body(card => card('4000000000009995'))),
          201, 'failed');

    # validation errors with the PAN / CVC where they do not belong
    $ok->('bad CVC next to a PAN', call($gw, POST => '/v1/payments',
          json => PayGW::Gateway->payment_body(card => card($PAN, cvc => "${CVC}x"))),
          400, 'invalid_request');
    $ok->('PAN in an unknown field', call($gw, POST => '/v1/payments',
          json => {%{ PayGW::Gateway->payment_body(card => card($PAN)) },
                   pan => $PAN, cvc => $CVC}), 400, 'invalid_request');
    $ok->('PAN as business_no', call($gw, POST => '/v1/payments',
          json => PayGW::Gateway->payment_body(business_no => "$PAN/$CVC",
                                                card => card($PAN))),
          400, 'invalid_request');
    $ok->('PAN as a number', call($gw, POST => '/v1/payments',
          body => qq({"business_no":"B-$tag","amount":100,"currency":"CNY",)
                  . qq("channel":"bank_card","card":{"number":$PAN,"exp_month":12,)
                  . qq("exp_year":2030,"cvc":"$CVC"}})), 400, 'invalid_request');
    $ok->('PAN in malformed JSON', call($gw, POST => '/v1/payments',
          body => qq({"business_no":"B-$tag","card":{"number":"$PAN","cvc":"$CVC"})),
          400, 'invalid_request');
    $ok->('PAN with a Luhn error', call($gw, POST => '/v1/payments',
          json => PayGW::Gateway->payment_body(card => card('4242424242424241'))),
          400, 'invalid_request');

    # a bad request signature: the log may say why, never the expected value
    my $body = $enc->encode(PayGW::Gateway->payment_body(card => card($PAN)));
    my $r = call($gw, POST => '/v1/payments', body => $body, secret => 'not-the-secret');
    is($r->{status}, 401, "$tag: wrong secret -> 401");
    my ($ts, $nonce) = $AUTH[-1] =~ /ts=(\d+),nonce=([^,]+)/;
    push @{ $EXPECTED{$tag} }, hmac_sha256_hex(
        join("\n", 'POST', '/v1/payments', $ts, $nonce, sha256_hex($body)),
        'demo-secret');

    # acquirer faults log errors: they must not log the charge request
    for my $mode (qw(reset amount_mismatch bad_signature)) {
        $gw->sim->mode($mode, path_prefix => '/acquirer/v1/charges');
        $ok->("acquirer $mode", call($gw, POST => '/v1/payments',
              json => PayGW::Gateway->payment_body(card => card($PAN))),
              202, 'unknown');
        $gw->sim->mode('normal');
    }

    # refunds, one of them refused, and reads
    $ok->('refund', call($gw, POST => "/v1/payments/$pno/refunds",
          json => {refund_no => "R66-$tag-$$", amount => 400, reason => "damaged"}),
          201, 'succeeded');
    $ok->('over-refund', call($gw, POST => "/v1/payments/$pno/refunds",
          json => {refund_no => "R66o-$tag-$$", amount => 700}),
          422, 'refund_exceeds_payment');
    $ok->('GET payment', call($gw, GET => "/v1/payments/$pno"), 200, 'partially_refunded');
    $ok->('admin resolve', call($gw, POST => '/v1/admin/resolve', key => 'ops',
          json => {}), 200, undef);
    return;
}

# Everything the gateway wrote, by where it wrote it.
sub written {
    my ($gw) = @_;
    my %w = (error_log => $gw->ngx->error_log, access_log => $gw->ngx->access_log);
    $w{database} = join "\n", map { $gw->db->sql("SELECT * FROM $_") }
                                  qw(payments refunds outbox_events);
    my @keys = grep { length } split /\n/, $gw->redis->cli('--scan');
    $w{redis} = join "\n", map { "$_ " . $gw->redis->cli('DUMP', $_) } @keys;
    return \%w;
}

sub no_secrets {
    my ($gw, $tag) = @_;
    my $w = written($gw);
    my $pw = $gw->db->password;
    for my $where (sort keys %$w) {
        my $text = $w->{$where};
        my $ctx = sub { my ($re) = @_; my @l = grep { /$re/ } split /\n/, $text;
                        diag("  $where: $_") for @l[0 .. ($#l < 2 ? $#l : 2)]; };
        for my $pan ($PAN, $DPAN, '4000000000009995') {
            ok($text !~ qr/\Q$pan\E/, "$tag $where: no card number $pan")
                or $ctx->(qr/\Q$pan\E/);
        }
        ok($text !~ qr/"cvc"/i, "$tag $where: no \"cvc\" field")
            or $ctx->(qr/"cvc"/i);
        ok($text !~ qr/cvc\W{0,6}\Q$CVC\E/i, "$tag $where: no CVC value")
            or $ctx->(qr/cvc\W{0,6}\Q$CVC\E/i);
        for my $s (@SECRETS, $pw) {
            ok($text !~ qr/\Q$s\E/, "$tag $where: no secret "
                   . ($s eq $pw ? '(MySQL password)' : $s)) or $ctx->(qr/\Q$s\E/);
        }
        # nginx core logs every request header at debug level ("http
        # header: ..."): the module's log writer blanks the secrets in them.
        my @full = grep { index($text, $_) >= 0 } @AUTH;
        is(scalar @full, 0, "$tag $where: no full Authorization header value")
            or diag("  $where: $full[0]");
        ok($text !~ qr/sig=[0-9a-f]{64}/, "$tag $where: no request signature")
            or $ctx->(qr/sig=[0-9a-f]{64}/);
        my @exp = grep { index($text, $_) >= 0 } @{ $EXPECTED{$tag} // [] };
        is(scalar @exp, 0, "$tag $where: not the signature a bad request should have had");
    }
    ok($w->{database} =~ /\b4242\b/, "$tag: the database keeps last4 (sanity)");
    ok($w->{error_log} =~ /\[error\]/, "$tag: the faults were logged (sanity)");
    return $w;
}

# Every channel configured, so that their keys are loaded (and must not
# be logged either); one try per provider call.
my $CONF = <<'EOF';
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
                  attempts=1 unknown_grace=60s breaker_failures=0;
    paygw_channel wechat location=/_paygw/wechat
                  merchant_id=%%WECHAT_MCHID%% app_id=%%WECHAT_APPID%%
                  private_key=%%SIM_KEYS%%/wechat_merchant_private.pem
                  serial_no=%%WECHAT_MERCHANT_SERIAL%%
                  apiv3_key_file=%%SIM_KEYS%%/wechat_apiv3.key
                  platform_key=%%WECHAT_SERIAL_1%%:%%SIM_KEYS%%/wechat_platform1_public.pem
                  platform_key=%%WECHAT_SERIAL_2%%:%%SIM_KEYS%%/wechat_platform2_public.pem
                  notify_url=http://127.0.0.1:%%PORT%%/v1/notify/wechat
                  attempts=1 unknown_grace=60s breaker_failures=0;

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

# ---- info ---------------------------------------------------------------

my $gw = PayGW::Gateway->start(http => $CONF);
traffic($gw, 'info');
no_secrets($gw, 'info');
$gw->ngx->stop;

# ---- debug --------------------------------------------------------------

@AUTH = ();
# another nginx, the same Redis, MariaDB and simulator
my $dbg = PayGW::Gateway->start(share => $gw, error_log_level => 'debug',
                                http => $CONF);
traffic($dbg, 'debug');
my $w = no_secrets($dbg, 'debug');
ok($w->{error_log} =~ /\[debug\]/, 'debug: the error log really is at debug level');
like($w->{error_log}, qr/http header: "Authorization: \[redacted\]"/,
     'debug: nginx logged the Authorization header, its value blanked');

done_testing;
