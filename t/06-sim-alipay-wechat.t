#!/usr/bin/perl
# The provider simulator's Alipay open API and WeChat Pay API v3
# (t/sim/alipay.js, t/sim/wechat.js) and scripts/provider-keys.sh: real RSA
# signatures both ways, trade lifecycles, refunds, bills, fault modes,
# signed (and encrypted) callbacks with their tampers, platform key
# rotation. The simulator alone, no nginx. RSA with the openssl CLI,
# AES-GCM decryption with node.
use strict;
use warnings;

use Digest::SHA qw(sha1_hex);
use File::Temp ();
use IO::Socket::IP;
use JSON::PP ();
use POSIX qw(strftime);
use Test::More;
use Time::HiRes qw(time sleep);

use PayGW::Test qw(free_port http wait_until rsa_sign rsa_verify repo_root);

my $JSON = JSON::PP->new->canonical;
my $KEYS_SH = repo_root() . '/scripts/provider-keys.sh';
my $CST_TODAY = strftime('%Y-%m-%d', gmtime(time + 8 * 3600));

# ---- scripts/provider-keys.sh ------------------------------------------------

my @KEY_FILES = (
    (map { ("${_}_private.pem", "${_}_public.pem") }
     qw(alipay_app alipay wechat_merchant wechat_platform1 wechat_platform2)),
    qw(wechat_merchant_serial wechat_platform1_serial wechat_platform2_serial
       wechat_apiv3.key));
{
    my ($rc, $out, $err) = PayGW::Test::_run(['bash', '-n', $KEYS_SH]);
    is($rc, 0, 'provider-keys.sh: bash -n') or diag($err);
    my $tmp = File::Temp::tempdir('paygw-keys-XXXXXX', TMPDIR => 1, CLEANUP => 1);
    my $dir = "$tmp/sub/keys";
    my $t0 = time;
    ($rc, $out, $err) = PayGW::Test::_run(['bash', $KEYS_SH, $dir]);
    is($rc, 0, 'provider-keys.sh DIR: exit 0') or diag($err);
    diag(sprintf 'provider-keys.sh took %.1f s', time - $t0) if time - $t0 > 3;
    my %before = map { $_ => PayGW::Test::_slurp("$dir/$_") } @KEY_FILES;
    is(join(' ', grep { !length $before{$_} } @KEY_FILES), '', 'all files made');
    for my $f (grep { /_private\.pem$|apiv3/ } @KEY_FILES) {
        is((stat "$dir/$f")[2] & 0777, 0600, "$f: mode 600");
    }
    like($before{'alipay_private.pem'}, qr/^-----BEGIN PRIVATE KEY-----\n/, 'PKCS#8 PEM');
    like($before{'alipay_public.pem'}, qr/^-----BEGIN PUBLIC KEY-----\n/, 'SPKI PEM');
    like($before{$_}, qr/^[0-9A-F]{40}\n?\z/, "$_: 40 upper-case hex")
        for grep { /_serial$/ } @KEY_FILES;
    isnt($before{wechat_platform1_serial}, $before{wechat_platform2_serial},
         'two platform serials');
    like($before{'wechat_apiv3.key'}, qr/^[A-Za-z0-9]{32}\z/,
         'wechat_apiv3.key: 32 alphanumerics, no newline');
    for my $k (qw(alipay_app alipay wechat_merchant wechat_platform1 wechat_platform2)) {
        my ($rc2, $pub) = PayGW::Test::_run(['openssl', 'pkey', '-in',
                                             "$dir/${k}_private.pem", '-pubout']);
        is($pub, $before{"${k}_public.pem"}, "$k: public key matches the private key");
    }
    my ($rc3, $text) = PayGW::Test::_run(['openssl', 'pkey', '-in', "$dir/alipay_private.pem",
                                          '-noout', '-text']);
    like($text, qr/2048 bit/, 'RSA 2048');
    ($rc, $out, $err) = PayGW::Test::_run(['bash', $KEYS_SH, $dir]);
    is($rc, 0, 'second run: exit 0');
    is(join(' ', grep { PayGW::Test::_slurp("$dir/$_") ne $before{$_} } @KEY_FILES), '',
       'second run keeps every file');
    unlink "$dir/alipay_public.pem", "$dir/wechat_platform2_serial";
    PayGW::Test::_run(['bash', $KEYS_SH, $dir]);
    is(PayGW::Test::_slurp("$dir/alipay_public.pem"), $before{'alipay_public.pem'},
       'a missing public key is derived from the kept private key');
    like(PayGW::Test::_slurp("$dir/wechat_platform2_serial"), qr/^[0-9A-F]{40}\n?\z/,
         'a missing serial is made again');
    is(PayGW::Test::_slurp("$dir/alipay_app_private.pem"), $before{'alipay_app_private.pem'},
       '... and the rest kept');
    ($rc) = PayGW::Test::_run(['bash', $KEYS_SH]);
    is($rc, 2, 'no DIR: usage, exit 2');
}

# ---- the simulator, helpers ----------------------------------------------------

my $sim = PayGW::Test::Sim->start;
my $APP_ID = $sim->alipay_app_id;
my $MCHID = $sim->wechat_mchid;
my $APPID = $sim->wechat_appid;
my $S1 = $sim->wechat_serial(1);
my $S2 = $sim->wechat_serial(2);

like($S1, qr/^[0-9A-F]{40}\z/, 'wechat_serial(1)');
is(length $sim->apiv3_key, 32, 'apiv3_key');
ok(-s $sim->key_file('alipay_public.pem'), 'key_file');
is($sim->keys_dir, $sim->dir . '/keys', 'keys in the simulator dir');

sub ali {
    my ($method, $biz, %o) = @_;
    return $sim->alipay(method => "alipay.trade.$method", biz => $biz, %o);
}

sub precreate {
    my ($otn, $amount, %o) = @_;
    return ali(precreate => {out_trade_no => $otn, total_amount => $amount // '19.99',
                             subject => "\x{6d4b}\x{8bd5} order"}, %o);
}

sub ali_query { ali(query => {out_trade_no => $_[0]}) }

# "code sub_code" of an Alipay answer.
sub codes {
    my ($r) = @_;
    return join ' ', grep { defined } @{$r->{res} // {}}{qw(code sub_code)};
}

sub ali_entry {
    my ($otn) = @_;
    my ($e) = grep { $_->{out_trade_no} eq $otn } @{$sim->trades->{alipay}};
    return $e;
}

sub wx_entry {
    my ($otn) = @_;
    my ($e) = grep { $_->{out_trade_no} eq $otn } @{$sim->trades->{wechat}};
    return $e;
}

sub form_decode {
    my ($body) = @_;
    my @pairs;
    for my $part (split /&/, $body) {
        my ($k, $v) = map { my $s = $_ // ''; $s =~ tr/+/ /;
                            $s =~ s/%([0-9A-Fa-f]{2})/chr hex $1/ge; $s }
                      split /=/, $part, 2;
        push @pairs, [$k, $v];
    }
    return @pairs;
}

# AES-256-GCM decryption of a WeChat resource (node: Perl's core has no
# GCM); undef when it does not decrypt.
my $GCM_JS = <<'JS';
let s = '';
process.stdin.on('data', (d) => { s += d; }).on('end', () => {
    const r = JSON.parse(s);
    try {
        const b = Buffer.from(r.ciphertext, 'base64');
        const d = require('crypto').createDecipheriv('aes-256-gcm', Buffer.from(r.key),
                                                     Buffer.from(r.nonce));
        d.setAAD(Buffer.from(r.associated_data));
        d.setAuthTag(b.subarray(b.length - 16));
        process.stdout.write(Buffer.concat([d.update(b.subarray(0, b.length - 16)),
                                            d.final()]));
    } catch (e) {
        process.stdout.write('DECRYPT-FAILED');
    }
});
JS

sub gcm_decrypt {
    my ($resource, $key) = @_;
    my ($rc, $out, $err) = PayGW::Test::_run(
        ['node', '-e', $GCM_JS],
        stdin => $JSON->encode({%$resource, key => $key // $sim->apiv3_key}));
    die "node: $err" if $rc;
    return $out eq 'DECRYPT-FAILED' ? undef : $out;
}

# A receiver for callbacks: records each request, answers "success" (Alipay)
# or 204 (WeChat).
my $CB_PORT = free_port();
my $CB_FILE = $sim->dir . '/callbacks';
my $cb_pid;
{
    my $srv = IO::Socket::IP->new(LocalHost => '127.0.0.1', LocalPort => $CB_PORT,
                                  Listen => 8, ReuseAddr => 1) or die "listen: $!";
    $cb_pid = fork // die "fork: $!";
    if (!$cb_pid) {
        $SIG{TERM} = 'DEFAULT';
        while (my $c = $srv->accept) {
            binmode $c;
            my $head = '';
            while (defined(my $l = <$c>)) { $head .= $l; last if $l eq "\r\n" }
            my ($len) = $head =~ /^content-length:\s*(\d+)/mi;
            my $body = '';
            read($c, $body, $len) if $len;
            open my $fh, '>>:raw', $CB_FILE;
            print {$fh} JSON::PP->new->canonical->encode({head => $head, body => $body}), "\n";
            close $fh;
            print {$c} $head =~ m{^POST /alipay}
                ? "HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n\r\nsuccess"
                : "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n";
            close $c;
        }
        POSIX::_exit(0);
    }
    close $srv;
}
my $ALI_URL = "http://127.0.0.1:$CB_PORT/alipay/notify";
my $WX_URL = "http://127.0.0.1:$CB_PORT/wechat/notify";

sub last_callback {
    my @got = map { JSON::PP->new->decode($_) } split /\n/, PayGW::Test::_slurp($CB_FILE);
    my $h = {};
    $h->{lc $1} = $2 while ($got[-1]{head} // '') =~ /^([\w-]+):\s*(.*?)\r$/mg;
    return {%{$got[-1] // {}}, headers => $h, count => scalar @got};
}

# Checks a received Alipay notify: {params (hash), pairs, sig_ok (over the
# sorted params without sign and sign_type), sig_ok_with_type}.
sub alipay_received {
    my $cb = last_callback();
    my @pairs = form_decode($cb->{body});
    my %p = map { @$_ } @pairs;
    my $pub = $sim->key_file('alipay_public.pem');
    return {%$cb, params => \%p, pairs => \@pairs,
            sig_ok => rsa_verify($pub, $sim->alipay_canonical(\%p, 'sign', 'sign_type'),
                                 $p{sign}),
            sig_ok_with_type => rsa_verify($pub, $sim->alipay_canonical(\%p, 'sign'),
                                           $p{sign})};
}

# ---- Alipay: authentication, signed answers ----------------------------------

my $qr;
{
    my $r = precreate('A1001', '19.99', notify_url => $ALI_URL);
    is($r->{status}, 200, 'precreate: 200');
    like($r->{headers}{'content-type'}, qr{^application/json;charset=utf-8}, 'JSON utf-8');
    like($r->{body},
         qr/^\{"alipay_trade_precreate_response":\{.*\},"sign":"[A-Za-z0-9+\/]+={0,2}"\}\z/s,
         'exactly {"alipay_trade_precreate_response":INNER,"sign":"..."}');
    is($r->{name}, 'alipay_trade_precreate_response', 'response name');
    ok($r->{sig_ok}, 'sign verifies over the exact INNER bytes with alipay_public.pem');
    my ($sign) = $r->{body} =~ /"sign":"([^"]+)"/;
    ok(!rsa_verify($sim->key_file('alipay_public.pem'), "$r->{inner} ", $sign),
       '... and not over other bytes');
    ok(!rsa_verify($sim->key_file('alipay_app_public.pem'), $r->{inner}, $sign),
       '... nor with another key');
    is(codes($r), '10000', 'code 10000');
    is($r->{res}{msg}, 'Success', 'msg Success');
    $qr = $r->{res}{qr_code};
    like($qr, qr{^https://qr\.alipay\.com/bax0[0-9a-z]+$}, 'qr_code');
    is($r->{res}{out_trade_no}, 'A1001', 'out_trade_no');
    ok(!exists $r->{res}{total_amount}, 'no total_amount in a normal precreate answer');

    $r = precreate('A1001', '19.99');
    is($r->{res}{qr_code}, $qr, 'precreate again: the same qr_code');
    is(codes(precreate('A1001', '20.00')), '40004 ACQ.CONTEXT_INCONSISTENT',
       'same out_trade_no, other amount: ACQ.CONTEXT_INCONSISTENT');
    my $e = ali_entry('A1001');
    is_deeply([@$e{qw(requests duplicates trade_status total_amount notify_url)}],
              [3, 1, 'WAIT_BUYER_PAY', '19.99', $ALI_URL],
              '/_sim/trades: 3 requests, 1 duplicate, WAIT_BUYER_PAY, notify_url');
    is(scalar @{$sim->trades->{alipay}}, 1, 'one trade');
}

{
    my $biz = {out_trade_no => 'A-auth', total_amount => '1.00', subject => 's'};
    my $r = ali(precreate => $biz, sign => 'AAAA');
    is(codes($r), '40002 isv.invalid-signature', 'garbage sign: 40002 isv.invalid-signature');
    is($r->{res}{msg}, 'Invalid Arguments', '... Invalid Arguments');
    ok($r->{sig_ok}, '... the error answer is signed too');
    is($r->{status}, 200, '... HTTP 200');
    is(codes(ali(precreate => $biz, key => $sim->key_file('alipay_private.pem'))),
       '40002 isv.invalid-signature', 'signed with another key: rejected');
    is(codes(ali(precreate => $biz, params => {app_id => '2021000000000002'})),
       '40002 isv.invalid-app-id', 'wrong app_id: isv.invalid-app-id');
    is(codes(ali(precreate => $biz, params => {timestamp => $sim->alipay_time(time - 1200)})),
       '40002 isv.invalid-timestamp', 'timestamp 20 min old: rejected');
    is(codes(ali(precreate => $biz, params => {timestamp => $sim->alipay_time(time + 1200)})),
       '40002 isv.invalid-timestamp', 'timestamp 20 min ahead: rejected');
    is(codes(ali(precreate => $biz, params => {timestamp => '2024-02-30 10:00:00'})),
       '40002 isv.invalid-timestamp', 'impossible timestamp: rejected');
    is(codes(ali(precreate => {%$biz, out_trade_no => 'A-auth-ok'},
                 params => {timestamp => $sim->alipay_time(time - 600)})),
       '10000', 'timestamp 10 min old: accepted');
    is(codes(ali(precreate => {%$biz, out_trade_no => 'A-auth2'},
                 params => {timestamp => strftime('%Y-%m-%d %H:%M:%S', gmtime)})),
       '40002 isv.invalid-timestamp', 'a UTC timestamp (not UTC+8): rejected');
    is(codes(ali(precreate => $biz, params => {sign_type => 'RSA'})),
       '40002 isv.invalid-signature-type', 'sign_type RSA: rejected');
    is(codes(ali(precreate => $biz, params => {method => undef})),
       '40002 isv.missing-method', 'no method: 40002');

    # sign_type is part of the signed string of a request.
    my %p = (app_id => $APP_ID, method => 'alipay.trade.precreate', format => 'JSON',
             charset => 'utf-8', sign_type => 'RSA2', timestamp => $sim->alipay_time,
             version => '1.0', biz_content => $JSON->encode({%$biz, out_trade_no => 'A-st'}));
    my $without = rsa_sign($sim->key_file('alipay_app_private.pem'),
                           $sim->alipay_canonical(\%p, 'sign', 'sign_type'));
    is(codes(ali(precreate => {}, biz_content => $p{biz_content}, params => {%p},
                 sign => $without)),
       '40002 isv.invalid-signature', 'signature without sign_type: rejected');

    # Parameters in the query string and the form body together.
    $p{biz_content} = $JSON->encode({%$biz, out_trade_no => 'A-query'});
    $p{notify_url} = $ALI_URL;
    $p{sign} = rsa_sign($sim->key_file('alipay_app_private.pem'),
                        $sim->alipay_canonical(\%p, 'sign'));
    my $esc = sub { my $s = shift; $s =~ s/([^A-Za-z0-9._~-])/sprintf('%%%02X', ord $1)/ge; $s };
    my $q = join '&', map { "$_=" . $esc->($p{$_}) } grep { $_ ne 'biz_content' } sort keys %p;
    $r = http(POST => $sim->url("/gateway.do?$q"),
              body => 'biz_content=' . $esc->($p{biz_content}),
              headers => {'Content-Type' => 'application/x-www-form-urlencoded;charset=utf-8'});
    $sim->alipay_parse($r);
    is(codes($r), '10000', 'common parameters in the query string, biz_content in the body');
    ok($r->{sig_ok}, '... signed answer');
    $r = http(POST => $sim->url("/gateway.do?$q&biz_content=x"),
              body => 'biz_content=' . $esc->($p{biz_content}),
              headers => {'Content-Type' => 'application/x-www-form-urlencoded'});
    is(codes($sim->alipay_parse($r)), '40002 isv.invalid-parameter',
       'a parameter both in the query and the body: 40002');

    $r = ali('nothing.here' => {});
    is(codes($r), '40004 isv.invalid-method', 'unknown method: 40004 isv.invalid-method');
    is($r->{name}, 'error_response', '... in error_response');
    ok($r->{sig_ok}, '... signed');
    ok(!ali_entry('A-auth'), 'rejected requests create nothing');

    my %bad = ('19.9' => '1 decimal', '0.00' => 'zero', '-1.00' => 'negative',
               '1,00' => 'comma', '12345678901.00' => '11 digits');
    for my $amount (sort keys %bad) {
        is(codes(precreate('A-v', $amount)), '40002 isv.invalid-parameter',
           "total_amount $amount ($bad{$amount}): 40002");
    }
    is(codes(ali(precreate => {out_trade_no => 'A-v', total_amount => 19.99, subject => 's'})),
       '40002 isv.invalid-parameter', 'total_amount as a JSON number: 40002');
    is(codes(ali(precreate => {out_trade_no => 'A-v', total_amount => '1.00'})),
       '40002 isv.invalid-parameter', 'no subject: 40002');
    is(codes(ali(precreate => {}, biz_content => '{not json')),
       '40002 isv.invalid-biz-content', 'biz_content not JSON: 40002');
    ok(!ali_entry('A-v'), 'invalid requests create nothing');
}

# ---- Alipay: query, notify, close, refunds -------------------------------------

{
    my $r = ali_query('A1001');
    is(codes($r), '10000', 'query: 10000');
    ok($r->{sig_ok}, 'query: signed');
    is($r->{name}, 'alipay_trade_query_response', 'query: response name');
    like($r->{res}{trade_no}, qr/^\d{28}$/, 'trade_no: 28 digits');
    is_deeply([@{$r->{res}}{qw(out_trade_no trade_status total_amount)}],
              ['A1001', 'WAIT_BUYER_PAY', '19.99'], 'query: WAIT_BUYER_PAY 19.99');
    ok(!exists $r->{res}{buyer_logon_id}, 'no buyer before payment');
    my $trade_no = $r->{res}{trade_no};
    is(codes(ali_query('A-none')), '40004 ACQ.TRADE_NOT_EXIST', 'unknown: ACQ.TRADE_NOT_EXIST');
    is(ali_entry('A1001')->{queries}, 1, 'queries counted');
    is(ali(query => {trade_no => $trade_no})->{res}{out_trade_no}, 'A1001',
       'query by trade_no');

    # The notify, as real Alipay sends it.
    my $n = $sim->alipay_notify(out_trade_no => 'A1001');
    is("$n->{status} $n->{body}", '200 success', 'notify: POSTed to the trade notify_url');
    my $got = alipay_received();
    is($got->{body}, $n->{sent}{body}, 'received as sent');
    like($got->{head}, qr{^POST /alipay/notify HTTP/1\.1\r\n}, 'POST');
    like($got->{head}, qr{^content-type: application/x-www-form-urlencoded;charset=utf-8\r$}mi,
         'form-encoded, utf-8');
    ok($got->{sig_ok}, 'sign verifies over the sorted params without sign and sign_type');
    ok(!$got->{sig_ok_with_type}, '... and not with sign_type kept');
    my $p = $got->{params};
    is_deeply([@$p{qw(app_id auth_app_id out_trade_no trade_no total_amount receipt_amount
                      buyer_pay_amount trade_status notify_type charset version sign_type)}],
              [$APP_ID, $APP_ID, 'A1001', $trade_no, '19.99', '19.99', '19.99',
               'TRADE_SUCCESS', 'trade_status_sync', 'utf-8', '1.0', 'RSA2'],
              'notify parameters');
    is($p->{subject}, "\xe6\xb5\x8b\xe8\xaf\x95 order", 'subject in UTF-8');
    like($p->{$_}, qr/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/, "$_: yyyy-MM-dd HH:mm:ss")
        for qw(gmt_create gmt_payment notify_time);
    like($p->{notify_id}, qr/^\w{20,}$/, 'notify_id');
    like($p->{buyer_id}, qr/^2088\d{12}$/, 'buyer_id');
    like($p->{seller_id}, qr/^2088\d{12}$/, 'seller_id');
    $r = ali_query('A1001');
    is($r->{res}{trade_status}, 'TRADE_SUCCESS', 'notify applied: TRADE_SUCCESS');
    like($r->{res}{buyer_logon_id}, qr/^\w{3}\*\*\*\@example\.com$/, 'buyer_logon_id masked');
    is(codes(precreate('A1001')), '40004 ACQ.TRADE_HAS_SUCCESS',
       'precreate of a paid trade: ACQ.TRADE_HAS_SUCCESS');

    # Tampers: never applied unless asked.
    precreate('A1002', '8.00', notify_url => $ALI_URL);
    $n = $sim->alipay_notify(out_trade_no => 'A1002', tamper => 'signature');
    $got = alipay_received();
    ok(!$got->{sig_ok} && !$got->{sig_ok_with_type}, 'tamper signature: does not verify');
    is(ali_query('A1002')->{res}{trade_status}, 'WAIT_BUYER_PAY', 'tampered: not applied');
    $sim->alipay_notify(out_trade_no => 'A1002', tamper => 'amount');
    $got = alipay_received();
    ok($got->{sig_ok}, 'tamper amount: verifies');
    is($got->{params}{total_amount}, '9.00', 'tamper amount: total_amount + 1.00');
    $sim->alipay_notify(out_trade_no => 'A1002', tamper => 'app_id');
    $got = alipay_received();
    ok($got->{sig_ok}, 'tamper app_id: verifies');
    isnt($got->{params}{app_id}, $APP_ID, 'tamper app_id: another app_id');
    $sim->alipay_notify(out_trade_no => 'A1002', tamper => 'body');
    $got = alipay_received();
    ok(!$got->{sig_ok}, 'tamper body: does not verify');
    is($got->{params}{total_amount}, '9.00', 'tamper body: total_amount changed');
    $sim->alipay_notify(out_trade_no => 'A1002', tamper => 'out_trade_no');
    $got = alipay_received();
    ok($got->{sig_ok}, 'tamper out_trade_no: verifies');
    isnt($got->{params}{out_trade_no}, 'A1002', 'tamper out_trade_no: another one');
    ok(!ali_entry($got->{params}{out_trade_no}), '... unknown to the simulator');
    $sim->alipay_notify(out_trade_no => 'A1002', total_amount => '7.50', apply => 0);
    is(alipay_received()->{params}{total_amount}, '7.50', 'total_amount override');
    is(ali_entry('A1002')->{total_amount}, '8.00', '... the stored trade keeps its amount');

    precreate('A1003', '3.00', notify_url => $ALI_URL);
    $sim->alipay_notify(out_trade_no => 'A1003', apply => 0);
    is(ali_query('A1003')->{res}{trade_status}, 'WAIT_BUYER_PAY', 'apply => 0: not applied');
    ok(alipay_received()->{sig_ok}, '... but sent');
    $sim->alipay_notify(out_trade_no => 'A1003', trade_status => 'TRADE_CLOSED');
    $got = alipay_received();
    is($got->{params}{trade_status}, 'TRADE_CLOSED', 'TRADE_CLOSED notify');
    ok(!exists $got->{params}{gmt_payment}, '... without gmt_payment');
    is(ali_query('A1003')->{res}{trade_status}, 'TRADE_CLOSED', '... applied');

    $n = $sim->alipay_notify(out_trade_no => 'A-unknown', total_amount => '5.00',
                             url => $ALI_URL);
    $got = alipay_received();
    ok($got->{sig_ok} && $got->{params}{out_trade_no} eq 'A-unknown'
       && $got->{params}{total_amount} eq '5.00', 'notify for an unknown trade');
    ok(!ali_entry('A-unknown'), '... not stored');
    eval { $sim->alipay_notify(out_trade_no => 'A-unknown2', url => $ALI_URL) };
    like($@, qr/^sim \S+: 400 .*total_amount/, 'unknown trade without total_amount: 400');
    eval { $sim->alipay_notify(out_trade_no => 'A1001', tamper => 'bogus') };
    like($@, qr/400/, 'unknown tamper: 400');

    # close
    precreate('A2001', '2.00');
    $r = ali(close => {out_trade_no => 'A2001'});
    is(codes($r), '10000', 'close: 10000');
    is($r->{name}, 'alipay_trade_close_response', 'close: response name');
    is($r->{res}{out_trade_no}, 'A2001', 'close: out_trade_no');
    like($r->{res}{trade_no}, qr/^\d{28}$/, 'close: trade_no');
    is(ali_query('A2001')->{res}{trade_status}, 'TRADE_CLOSED', 'closed');
    is(codes(ali(close => {out_trade_no => 'A2001'})), '10000', 'close again: success');
    is(codes(precreate('A2001', '2.00')), '40004 ACQ.TRADE_HAS_CLOSE',
       'precreate a closed trade: ACQ.TRADE_HAS_CLOSE');
    is(codes(ali(close => {out_trade_no => 'A1001'})), '40004 ACQ.TRADE_STATUS_ERROR',
       'close a paid trade: ACQ.TRADE_STATUS_ERROR');
    is(codes(ali(close => {out_trade_no => 'A-none'})), '40004 ACQ.TRADE_NOT_EXIST',
       'close unknown: ACQ.TRADE_NOT_EXIST');

    # refunds (A1001: 19.99, paid)
    my $refund = sub {
        my ($otn, $orn, $amount) = @_;
        return ali(refund => {out_trade_no => $otn, out_request_no => $orn,
                              refund_amount => $amount, refund_reason => 'customer'});
    };
    $r = $refund->('A1001', 'R1', '5.00');
    is(codes($r), '10000', 'refund: 10000');
    ok($r->{sig_ok}, 'refund: signed');
    is($r->{name}, 'alipay_trade_refund_response', 'refund: response name');
    is_deeply([@{$r->{res}}{qw(out_trade_no trade_no fund_change refund_fee)}],
              ['A1001', $trade_no, 'Y', '5.00'], 'refund: fund_change Y, refund_fee 5.00');
    like($r->{res}{gmt_refund_pay}, qr/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$/, 'gmt_refund_pay');
    like($r->{res}{buyer_logon_id}, qr/\*\*\*/, 'buyer_logon_id');
    $r = $refund->('A1001', 'R1', '5.00');
    is("$r->{res}{code} $r->{res}{fund_change} $r->{res}{refund_fee}", '10000 N 5.00',
       'repeat: success, fund_change N');
    is(codes($refund->('A1001', 'R1', '6.00')), '40004 ACQ.CONTEXT_INCONSISTENT',
       'same out_request_no, other amount: ACQ.CONTEXT_INCONSISTENT');
    is(codes($refund->('A1001', 'R2', '15.00')), '40004 ACQ.REFUND_AMT_NOT_EQUAL_TOTAL',
       '5.00 + 15.00 > 19.99: ACQ.REFUND_AMT_NOT_EQUAL_TOTAL');
    $r = $refund->('A1001', 'R2', '14.99');
    is("$r->{res}{code} $r->{res}{refund_fee}", '10000 19.99', 'refund of the rest: 19.99');
    is(codes($refund->('A1001', 'R3', '0.01')), '40004 ACQ.REFUND_AMT_NOT_EQUAL_TOTAL',
       'one fen more: refused');
    is(codes($refund->('A1002', 'R1', '1.00')), '40004 ACQ.TRADE_STATUS_ERROR',
       'unpaid trade: ACQ.TRADE_STATUS_ERROR');
    is(codes($refund->('A-none', 'R1', '1.00')), '40004 ACQ.TRADE_NOT_EXIST',
       'unknown trade: ACQ.TRADE_NOT_EXIST');
    is(codes($refund->('A1001', 'R4', '0.00')), '40002 isv.invalid-parameter',
       'refund 0.00: 40002');

    $r = ali('fastpay.refund.query' => {out_trade_no => 'A1001', out_request_no => 'R1'});
    is($r->{name}, 'alipay_trade_fastpay_refund_query_response', 'refund query: name');
    is_deeply([@{$r->{res}}{qw(code out_trade_no out_request_no refund_amount total_amount
                               refund_status)}],
              ['10000', 'A1001', 'R1', '5.00', '19.99', 'REFUND_SUCCESS'],
              'refund query: REFUND_SUCCESS');
    $r = ali('fastpay.refund.query' => {out_trade_no => 'A1001', out_request_no => 'R9'});
    is(codes($r), '10000', 'refund query, no such refund: 10000');
    ok(!exists $r->{res}{refund_status}, '... without refund_status');
    is(codes(ali('fastpay.refund.query' => {out_trade_no => 'A-none',
                                            out_request_no => 'R1'})),
       '40004 ACQ.TRADE_NOT_EXIST', 'refund query, unknown trade');

    my $e = ali_entry('A1001');
    is($e->{refunded_amount}, '19.99', '/_sim/trades: refunded_amount');
    my ($r1) = grep { $_->{out_request_no} eq 'R1' } @{$e->{refunds}};
    is_deeply([@$r1{qw(refund_amount requests duplicates queries)}], ['5.00', 3, 1, 1],
              '/_sim/trades: refund R1 with 3 requests, 1 duplicate, 1 query');

    # bill
    $r = $sim->alipay(method => 'alipay.data.dataservice.bill.downloadurl.query',
                      biz => {bill_type => 'trade', bill_date => $CST_TODAY});
    is($r->{name}, 'alipay_data_dataservice_bill_downloadurl_query_response', 'bill: name');
    is($r->{res}{bill_download_url},
       $sim->url("/_sim/alipay/bill/$CST_TODAY.zip"),
       'bill_download_url: the zip (t/86 reads it)');
    my $zip = http(GET => $r->{res}{bill_download_url});
    like($zip->{body}, qr/^PK\x03\x04/, '... a zip');
    my $csv = http(GET => $sim->url("/_sim/alipay/bill/$CST_TODAY"));
    is($csv->{status}, 200, 'bill file: 200');
    like($csv->{headers}{'content-type'}, qr{^text/csv}, 'text/csv');
    my @lines = split /\n/, $csv->{body};
    is($lines[0], 'type,out_trade_no,out_request_no,trade_no,amount_yuan,status,time',
       'bill header');
    like((grep { /^trade,A1001,/ } @lines)[0] // '',
         qr/^trade,A1001,,$trade_no,19\.99,TRADE_SUCCESS,\Q$CST_TODAY\E \d\d:\d\d:\d\d$/,
         'trade line');
    ok((grep { /^refund,A1001,R2,$trade_no,14\.99,REFUND_SUCCESS,/ } @lines), 'refund line');
    is(http(GET => $sim->url('/_sim/alipay/bill/2001-01-01'))->{body},
       "$lines[0]\n", 'day without trades: header only');
    is(codes($sim->alipay(method => 'alipay.data.dataservice.bill.downloadurl.query',
                          biz => {bill_type => 'trade', bill_date => '2024-13-01'})),
       '40002 isv.invalid-parameter', 'bad bill_date: 40002');
}

# ---- Alipay: fault modes ----------------------------------------------------------

{
    $sim->mode('error500', times => 1, path_prefix => '/gateway.do');
    my $r = precreate('AF1');
    is($r->{status}, 500, 'error500: HTTP 500');
    ok($r->{sig_ok}, 'error500: signed');
    is(codes(ali_query('AF1')), '40004 ACQ.TRADE_NOT_EXIST', 'error500: not created');
    is(codes(precreate('AF1')), '10000', 'then normal');
    is(ali_entry('AF1')->{requests}, 2, 'requests counts the 500 one');

    $sim->mode('error500_after', times => 1, path_prefix => '/gateway.do');
    is(precreate('AF2')->{status}, 500, 'error500_after: 500');
    is(ali_query('AF2')->{res}{trade_status}, 'WAIT_BUYER_PAY', 'error500_after: created');

    $sim->mode('reset', times => 1, path_prefix => '/gateway.do');
    is(precreate('AF3')->{status}, 599, 'reset: no answer');
    is(codes(ali_query('AF3')), '40004 ACQ.TRADE_NOT_EXIST', 'reset: not created');

    $sim->mode('reset_after', times => 1, path_prefix => '/gateway.do');
    is(precreate('AF4')->{status}, 599, 'reset_after: no answer');
    is(codes(ali_query('AF4')), '10000', 'reset_after: created');

    $sim->mode('bad_signature', times => 1, path_prefix => '/gateway.do');
    $r = precreate('AF5');
    is(codes($r), '10000', 'bad_signature: processed');
    like($r->{body}, qr/"sign":"[A-Za-z0-9+\/]{300,}={0,2}"/,
         'bad_signature: a well-formed sign');
    ok(!$r->{sig_ok}, 'bad_signature: that does not verify');
    ok(ali_query('AF5')->{sig_ok}, 'then verifies again');

    $sim->mode('amount_mismatch', times => 2, path_prefix => '/gateway.do');
    $r = precreate('AF6', '10.00');
    is($r->{res}{total_amount}, '10.01', 'amount_mismatch: precreate reports 10.01');
    ok($r->{sig_ok}, '... signed');
    is(ali_query('AF6')->{res}{total_amount}, '10.01', 'amount_mismatch: query reports 10.01');
    is(ali_query('AF6')->{res}{total_amount}, '10.00', 'then 10.00');

    $sim->mode('decline', times => 1, path_prefix => '/gateway.do');
    is(codes(precreate('AF7')), '40004 ACQ.TOTAL_FEE_EXCEED', 'decline: ACQ.TOTAL_FEE_EXCEED');
    is(codes(ali_query('AF7')), '40004 ACQ.TRADE_NOT_EXIST', 'decline: not created');

    $sim->mode('slow', delay_ms => 1500, times => 1, path_prefix => '/gateway.do');
    is(precreate('AF8', '1.00', timeout => 0.5)->{status}, 599, 'slow: client times out');
    is(codes(ali_query('AF8')), '10000', 'slow: created');

    $sim->mode('error500', times => 1, path_prefix => '/v3/');
    is(precreate('AF9')->{status}, 200, 'path_prefix /v3/: Alipay not affected');
    $sim->mode('normal');
}

# ---- WeChat: authentication, signed answers -------------------------------------

sub native_body {
    my ($otn, $total, %o) = @_;
    return {appid => $APPID, mchid => $MCHID, description => "\x{6d4b}\x{8bd5}",
            out_trade_no => $otn, notify_url => $WX_URL,
            amount => {total => $total // 1999, currency => 'CNY'}, %o};
}

sub native { $sim->wechat(POST => '/v3/pay/transactions/native', json => native_body(@_)) }

sub wx_query {
    my ($otn, %o) = @_;
    return $sim->wechat(GET => "/v3/pay/transactions/out-trade-no/$otn?mchid=$MCHID", %o);
}

sub wx_code { my ($r) = @_; "$r->{status} " . ($r->{json}{code} // '') }

my $code_url;
{
    my $r = native('W1001');
    is($r->{status}, 200, 'native: 200');
    is($r->{sig_ok}, 1, 'native: signed with platform key 1');
    like($r->{headers}{'content-type'}, qr{^application/json}, 'JSON');
    is($r->{headers}{'wechatpay-serial'}, $S1, 'Wechatpay-Serial: platform 1');
    like($r->{headers}{'wechatpay-nonce'}, qr/^[A-Za-z0-9]{32}$/, 'Wechatpay-Nonce');
    ok(abs($r->{headers}{'wechatpay-timestamp'} - time) < 10, 'Wechatpay-Timestamp: now');
    ok(length($r->{headers}{'request-id'} // ''), 'Request-ID');
    my %h = %{$r->{headers}};
    ok(!rsa_verify($sim->key_file('wechat_platform1_public.pem'),
                   "$h{'wechatpay-timestamp'}\n$h{'wechatpay-nonce'}\n$r->{body} \n",
                   $h{'wechatpay-signature'}), 'the signature covers the exact body');
    $code_url = $r->{json}{code_url};
    like($code_url, qr{^weixin://wxpay/bizpayurl\?pr=\w+$}, 'code_url');
    is_deeply([keys %{$r->{json}}], ['code_url'], 'only code_url');
    is(native('W1001')->{json}{code_url}, $code_url, 'again: the same code_url');
    $r = native('W1001', 2000);
    is(wx_code($r), '400 INVALID_REQUEST', 'other amount: 400 INVALID_REQUEST');
    is($r->{json}{message}, '201 商户订单号重复', '... 201 商户订单号重复');
    ok($r->{sig_ok}, '... signed');
    is(wx_code($sim->wechat(POST => '/v3/pay/transactions/native',
                            json => native_body('W-v', 100, appid => 'wx0000000000000000'))),
       '400 PARAM_ERROR', 'wrong appid: 400 PARAM_ERROR');
    is(wx_code($sim->wechat(POST => '/v3/pay/transactions/native',
                            json => native_body('W-v', 100, mchid => '1900000009'))),
       '400 MCH_NOT_EXISTS', 'wrong mchid in the body: 400 MCH_NOT_EXISTS');
    for my $bad ([0, 'total 0'], [-1, 'total -1'], ['100', 'total as a string'],
                 [1.5, 'total 1.5']) {
        is(wx_code(native('W-v', $bad->[0])), '400 PARAM_ERROR', "$bad->[1]: 400 PARAM_ERROR");
    }
    is(wx_code($sim->wechat(POST => '/v3/pay/transactions/native',
                            json => native_body('W-v', 100, amount => {total => 100,
                                                                       currency => 'USD'}))),
       '400 PARAM_ERROR', 'currency USD: 400');
    is(wx_code($sim->wechat(POST => '/v3/pay/transactions/native',
                            json => native_body('W-v', 100, time_expire => 'tomorrow'))),
       '400 PARAM_ERROR', 'bad time_expire: 400');
    is($sim->wechat(POST => '/v3/pay/transactions/native',
                    json => native_body('W1002', 100,
                                        time_expire => '2030-01-01T12:00:00+08:00'))->{status},
       200, 'time_expire RFC 3339: 200');
    ok(!wx_entry('W-v'), 'invalid requests create nothing');
    my $e = wx_entry('W1001');
    is_deeply([@$e{qw(requests duplicates trade_state total notify_url)}],
              [3, 1, 'NOTPAY', 1999, $WX_URL], '/_sim/trades: 3 requests, 1 duplicate');
}

{
    my $path = '/v3/pay/transactions/native';
    my $body = native_body('W-auth');
    my $auth = sub { $sim->wechat(POST => $path, json => $body, @_) };
    my $r = $auth->(signature => 'AAAA');
    is(wx_code($r), '401 SIGN_ERROR', 'garbage signature: 401 SIGN_ERROR');
    ok($r->{sig_ok}, '401 is signed');
    is(wx_code($auth->(key => $sim->key_file('wechat_platform1_private.pem'))),
       '401 SIGN_ERROR', 'signed with another key: 401');
    is(wx_code($auth->(serial_no => $S1)), '401 SIGN_ERROR', 'wrong serial_no: 401');
    is(wx_code($auth->(mchid => '1900000009')), '401 SIGN_ERROR', 'wrong mchid: 401');
    is(wx_code($auth->(ts => int(time) - 330)), '401 SIGN_ERROR', 'timestamp 330 s old: 401');
    is(wx_code($auth->(ts => int(time) + 330)), '401 SIGN_ERROR', 'timestamp 330 s ahead: 401');
    is(wx_code($auth->(authorization => undef)), '401 SIGN_ERROR', 'no Authorization: 401');
    my $good = $sim->wechat_auth(POST => $path, '{}');
    is(wx_code($auth->(authorization => $good)), '401 SIGN_ERROR',
       'signature over another body: 401');
    (my $bearer = $good) =~ s/^WECHATPAY2-SHA256-RSA2048/Bearer/;
    is(wx_code($auth->(authorization => $bearer)), '401 SIGN_ERROR', 'other scheme: 401');
    ok(!wx_entry('W-auth'), 'rejected requests create nothing');

    # key="value" pairs in any order.
    my $json = JSON::PP->new->utf8->canonical->encode($body);
    my $h = $sim->wechat_auth(POST => $path, $json);
    my ($scheme, $list) = $h =~ /^(\S+) (.*)$/;
    my $reordered = "$scheme " . join(',', reverse split /,/, $list);
    $r = $sim->wechat(POST => $path, body => $json, authorization => $reordered);
    is($r->{status}, 200, 'Authorization fields in another order: 200');
    $r = $auth->(ts => int(time) - 280);
    is($r->{status}, 200, 'timestamp 280 s old: accepted');

    # The URL signed is the path with its query.
    my $url = "/v3/pay/transactions/out-trade-no/W1001?mchid=$MCHID";
    $r = $sim->wechat(GET => $url, authorization =>
                      $sim->wechat_auth(GET => '/v3/pay/transactions/out-trade-no/W1001', ''));
    is($r->{status}, 401, 'signature without the query string: 401');
    is($sim->wechat(GET => $url)->{status}, 200, 'with it: 200');
    $r = $sim->wechat(GET => '/v3/nothing');
    is(wx_code($r), '404 NOT_FOUND', 'unknown API: 404');
    ok($r->{sig_ok}, '... signed');
}

# ---- WeChat: query, callbacks, close, refunds -------------------------------------

# The last WeChat callback received: headers, body, sig (platform key number
# that verifies it, 0 if none), json, plain (decrypted resource or undef).
sub wechat_received {
    my $cb = last_callback();
    my $v = $sim->wechat_verify({headers => $cb->{headers}, body => $cb->{body}});
    my $json = eval { JSON::PP->new->decode($cb->{body}) } // {};
    my $plain = $json->{resource} ? gcm_decrypt($json->{resource}) : undef;
    return {%$cb, sig => $v, json => $json, plain_text => $plain,
            plain => defined $plain ? JSON::PP->new->decode($plain) : undef};
}

{
    my $r = wx_query('W1001');
    is($r->{status}, 200, 'query: 200');
    is($r->{sig_ok}, 1, 'query: signed');
    is_deeply($r->{json}, {appid => $APPID, mchid => $MCHID, out_trade_no => 'W1001',
                           trade_type => 'NATIVE', trade_state => 'NOTPAY',
                           trade_state_desc => '未支付',
                           amount => {total => 1999, currency => 'CNY',
                                      payer_currency => 'CNY'}},
              'query: NOTPAY, no transaction_id');
    $r = wx_query('W-none');
    is(wx_code($r), '404 ORDER_NOT_EXIST', 'unknown: 404 ORDER_NOT_EXIST');
    is($r->{json}{message}, '订单不存在', '... 订单不存在');
    is(wx_code($sim->wechat(GET => '/v3/pay/transactions/out-trade-no/W1001')),
       '400 PARAM_ERROR', 'no mchid: 400');
    is(wx_entry('W1001')->{queries}, 2, 'queries counted');

    my $n = $sim->wechat_notify(out_trade_no => 'W1001');
    is($n->{status}, 204, 'callback: POSTed to the order notify_url, 204');
    my $got = wechat_received();
    is($got->{body}, $n->{sent}{body}, 'received as sent');
    like($got->{head}, qr{^POST /wechat/notify HTTP/1\.1\r\n}, 'POST');
    is($got->{headers}{'content-type'}, 'application/json', 'JSON');
    is($got->{sig}, 1, 'Wechatpay-Signature verifies with platform key 1');
    is($got->{headers}{'wechatpay-serial'}, $S1, 'Wechatpay-Serial: platform 1');
    ok(abs($got->{headers}{'wechatpay-timestamp'} - time) < 10, 'timestamp now');
    my $j = $got->{json};
    is_deeply([@$j{qw(resource_type event_type summary)}],
              ['encrypt-resource', 'TRANSACTION.SUCCESS', '支付成功'], 'envelope');
    like($j->{id}, qr/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/,
         'id: uuid');
    like($j->{create_time}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+08:00$/, 'create_time +08:00');
    is_deeply([@{$j->{resource}}{qw(original_type algorithm associated_data)}],
              ['transaction', 'AEAD_AES_256_GCM', 'transaction'], 'resource');
    like($j->{resource}{nonce}, qr/^[A-Za-z0-9]{12}$/, 'resource nonce: 12 alphanumerics');
    ok(defined $got->{plain}, 'resource decrypts with AES-256-GCM and the APIv3 key');
    $r = wx_query('W1001');
    is_deeply($got->{plain}, $r->{json}, 'plaintext = the transaction the query answers');
    my $tx = $r->{json};
    is($tx->{trade_state}, 'SUCCESS', 'applied: SUCCESS');
    like($tx->{transaction_id}, qr/^\d{28}$/, 'transaction_id');
    like($tx->{success_time}, qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+08:00$/, 'success_time');
    is($tx->{amount}{payer_total}, 1999, 'payer_total');
    like($tx->{payer}{openid}, qr/^\w+$/, 'payer openid');
    ok(!defined gcm_decrypt({%{$j->{resource}}, associated_data => 'x'}),
       'another associated_data does not decrypt');
    is(wx_code(native('W1001')), '400 ORDERPAID', 'native for a paid order: 400 ORDERPAID');

    # Tampers
    native('W1003', 800);
    $sim->wechat_notify(out_trade_no => 'W1003', tamper => 'signature');
    $got = wechat_received();
    is($got->{sig}, 0, 'tamper signature: does not verify');
    is($got->{headers}{'wechatpay-serial'}, $S1, '... with the platform serial');
    is(wx_query('W1003')->{json}{trade_state}, 'NOTPAY', 'tampered: not applied');
    $sim->wechat_notify(out_trade_no => 'W1003', tamper => 'amount');
    $got = wechat_received();
    is($got->{sig}, 1, 'tamper amount: verifies');
    is($got->{plain}{amount}{total}, 801, 'tamper amount: total + 1');
    $sim->wechat_notify(out_trade_no => 'W1003', tamper => 'mchid');
    $got = wechat_received();
    ok($got->{sig} && $got->{plain}{mchid} ne $MCHID, 'tamper mchid: verifies, other mchid');
    $sim->wechat_notify(out_trade_no => 'W1003', tamper => 'currency');
    $got = wechat_received();
    ok($got->{sig} && $got->{plain}{amount}{currency} eq 'USD',
       'tamper currency: verifies, USD');
    $sim->wechat_notify(out_trade_no => 'W1003', tamper => 'body');
    $got = wechat_received();
    is($got->{sig}, 0, 'tamper body: does not verify');
    ok(defined $got->{plain}, '... the resource still decrypts');
    $sim->wechat_notify(out_trade_no => 'W1003', tamper => 'serial');
    $got = wechat_received();
    like($got->{headers}{'wechatpay-serial'}, qr/^[0-9A-F]{40}$/, 'tamper serial: a serial');
    ok($got->{headers}{'wechatpay-serial'} ne $S1 && $got->{headers}{'wechatpay-serial'} ne $S2,
       '... that is no platform key');
    my %h = %{$got->{headers}};
    ok(rsa_verify($sim->key_file('wechat_platform1_public.pem'),
                  "$h{'wechatpay-timestamp'}\n$h{'wechatpay-nonce'}\n$got->{body}\n",
                  $h{'wechatpay-signature'}), '... signed by the real platform key');
    $sim->wechat_notify(out_trade_no => 'W1003', tamper => 'apiv3_key');
    $got = wechat_received();
    is($got->{sig}, 1, 'tamper apiv3_key: verifies');
    ok(!defined $got->{plain}, '... the resource does not decrypt with the APIv3 key');
    my $old = int(time) - 600;
    $sim->wechat_notify(out_trade_no => 'W1003', timestamp => $old, apply => 0);
    $got = wechat_received();
    is($got->{headers}{'wechatpay-timestamp'}, $old, 'timestamp override');
    is($got->{sig}, 1, '... still correctly signed');
    $sim->wechat_notify(out_trade_no => 'W1003', serial => $S2, apply => 0);
    $got = wechat_received();
    is("$got->{headers}{'wechatpay-serial'} $got->{sig}", "$S2 2",
       'serial: signed by platform 2');
    is(wx_query('W1003')->{json}{trade_state}, 'NOTPAY', 'apply => 0: not applied');
    $sim->wechat_notify(out_trade_no => 'W1003', total => 500, apply => 0);
    is(wechat_received()->{plain}{amount}{total}, 500, 'total override');
    is(wx_entry('W1003')->{total}, 800, '... the stored order keeps its amount');
    eval { $sim->wechat_notify(out_trade_no => 'W1003', serial => 'ABC') };
    like($@, qr/400/, 'unknown serial option: 400');
    $sim->wechat_notify(out_trade_no => 'W-unknown', total => 300, url => $WX_URL);
    $got = wechat_received();
    ok($got->{sig} && $got->{plain}{out_trade_no} eq 'W-unknown'
       && $got->{plain}{amount}{total} == 300, 'callback for an unknown order');
    ok(!wx_entry('W-unknown'), '... not stored');
    eval { $sim->wechat_notify(out_trade_no => 'W-unknown2', url => $WX_URL) };
    like($@, qr/400 .*total/, 'unknown order without total: 400');

    # Platform key rotation
    my $pl = $sim->wechat_platform;
    is_deeply($pl, {serial => $S1, serials => [$S1, $S2]}, 'GET platform');
    is($sim->wechat_platform($S2)->{serial}, $S2, 'switch to platform 2');
    $r = wx_query('W1001');
    is("$r->{headers}{'wechatpay-serial'} $r->{sig_ok}", "$S2 2",
       'answers now signed by platform 2');
    native('W1004', 100);
    $sim->wechat_notify(out_trade_no => 'W1004', apply => 0);
    is(wechat_received()->{sig}, 2, 'callbacks too');
    eval { $sim->wechat_platform('0' x 40) };
    like($@, qr/400/, 'unknown serial: 400');
    $sim->wechat_platform($S1);

    # close
    native('W2001', 200);
    $r = $sim->wechat(POST => '/v3/pay/transactions/out-trade-no/W2001/close',
                      json => {mchid => $MCHID});
    is("$r->{status} [$r->{body}]", '204 []', 'close: 204, empty');
    is($r->{sig_ok}, 1, 'the 204 is signed (over an empty body)');
    ok(!exists $r->{headers}{'content-length'} || $r->{headers}{'content-length'} eq '0',
       'no body');
    is(wx_query('W2001')->{json}{trade_state}, 'CLOSED', 'CLOSED');
    is($sim->wechat(POST => '/v3/pay/transactions/out-trade-no/W2001/close',
                    json => {mchid => $MCHID})->{status}, 204, 'close again: 204');
    is(wx_code(native('W2001', 200)), '400 ORDER_CLOSED', 'native for a closed order: 400');
    is(wx_code($sim->wechat(POST => '/v3/pay/transactions/out-trade-no/W1001/close',
                            json => {mchid => $MCHID})), '400 ORDERPAID',
       'close a paid order: 400 ORDERPAID');
    is(wx_code($sim->wechat(POST => '/v3/pay/transactions/out-trade-no/W-none/close',
                            json => {mchid => $MCHID})), '404 ORDER_NOT_EXIST',
       'close unknown: 404');

    # refunds (W1001: 1999, paid)
    my $refund = sub {
        my ($otn, $orn, $refund, %o) = @_;
        return $sim->wechat(POST => '/v3/refund/domestic/refunds', json => {
            out_trade_no => $otn, out_refund_no => $orn, reason => 'customer',
            amount => {refund => $refund, total => $o{total} // 1999, currency => 'CNY'}});
    };
    $r = $refund->('W1001', 'WR1', 500);
    is($r->{status}, 200, 'refund: 200');
    is($r->{sig_ok}, 1, 'refund: signed');
    my $re = $r->{json};
    like($re->{refund_id}, qr/^\d{29}$/, 'refund_id');
    is_deeply([@$re{qw(out_refund_no out_trade_no transaction_id channel status)}],
              ['WR1', 'W1001', $tx->{transaction_id}, 'ORIGINAL', 'SUCCESS'],
              'refund: SUCCESS');
    is_deeply($re->{amount}, {total => 1999, refund => 500, payer_total => 1999,
                              payer_refund => 500, currency => 'CNY'}, 'refund amount');
    like($re->{$_}, qr/\+08:00$/, $_) for qw(create_time success_time);
    ok(length $re->{user_received_account}, 'user_received_account');
    is_deeply($refund->('W1001', 'WR1', 500)->{json}, $re, 'repeat: the same refund');
    is(wx_code($refund->('W1001', 'WR1', 600)), '400 INVALID_REQUEST',
       'same out_refund_no, other amount: 400');
    is(wx_code($refund->('W1001', 'WR2', 100, total => 2000)), '400 PARAM_ERROR',
       'total not the order total: 400 PARAM_ERROR');
    is(wx_code($refund->('W1001', 'WR2', 1500)), '403 NOT_ENOUGH',
       '500 + 1500 > 1999: 403 NOT_ENOUGH');
    is($refund->('W1001', 'WR2', 1499)->{json}{status}, 'SUCCESS', 'the rest: SUCCESS');
    is(wx_code($refund->('W1003', 'WR3', 100, total => 800)), '400 INVALID_REQUEST',
       'unpaid order: 400 INVALID_REQUEST');
    is(wx_code($refund->('W-none', 'WR4', 100)), '404 ORDER_NOT_EXIST', 'unknown: 404');
    is(wx_query('W1001')->{json}{trade_state}, 'REFUND', 'order after a refund: REFUND');

    $r = $sim->wechat(GET => '/v3/refund/domestic/refunds/WR1');
    is($r->{sig_ok}, 1, 'GET refund: signed');
    is_deeply($r->{json}, $re, 'GET refund: the refund');
    $r = $sim->wechat(GET => '/v3/refund/domestic/refunds/WR-none');
    is(wx_code($r), '404 RESOURCE_NOT_EXISTS', 'GET unknown refund: 404 RESOURCE_NOT_EXISTS');

    # refund_processing
    native('W3001', 300);
    $sim->wechat_notify(out_trade_no => 'W3001');
    $sim->mode('refund_processing', times => 1, path_prefix => '/v3/refund');
    $r = $refund->('W3001', 'WR5', 100, total => 300);
    is("$r->{status} $r->{json}{status}", '200 PROCESSING', 'refund_processing: PROCESSING');
    ok(!exists $r->{json}{success_time}, '... no success_time');
    is($refund->('W3001', 'WR5', 100, total => 300)->{json}{status}, 'PROCESSING',
       '... a repeat still PROCESSING');
    $r = $sim->wechat(GET => '/v3/refund/domestic/refunds/WR5');
    is($r->{json}{status}, 'SUCCESS', 'next query: SUCCESS');
    ok($r->{json}{success_time}, '... with success_time');
    is($refund->('W3001', 'WR6', 100, total => 300)->{json}{status}, 'SUCCESS',
       'refund_processing times 1: then SUCCESS at once');

    my $e = wx_entry('W1001');
    my ($wr1) = grep { $_->{out_refund_no} eq 'WR1' } @{$e->{refunds}};
    is_deeply([@$wr1{qw(refund status requests duplicates queries)}],
              [500, 'SUCCESS', 3, 1, 1], '/_sim/trades: refund WR1 counters');
    is($e->{refunded}, 1999, '/_sim/trades: refunded');

    # bill
    $r = $sim->wechat(GET => "/v3/bill/tradebill?bill_date=$CST_TODAY&bill_type=ALL");
    is($r->{status}, 200, 'tradebill: 200');
    is($r->{json}{hash_type}, 'SHA1', 'hash_type SHA1');
    is($r->{json}{download_url}, $sim->url("/_sim/wechat/bill/$CST_TODAY"), 'download_url');
    my $csv = http(GET => $r->{json}{download_url});
    is(sha1_hex($csv->{body}), $r->{json}{hash_value}, 'hash_value = SHA1 of the file');
    my @lines = split /\n/, $csv->{body};
    is($lines[0], 'type,out_trade_no,out_refund_no,provider_id,amount_fen,status,time',
       'bill header');
    ok((grep { /^trade,W1001,,$tx->{transaction_id},1999,REFUND,/ } @lines), 'trade line');
    ok((grep { /^refund,W1001,WR1,$re->{refund_id},500,SUCCESS,/ } @lines), 'refund line');
    is(wx_code($sim->wechat(GET => '/v3/bill/tradebill?bill_date=2024-02-30')),
       '400 PARAM_ERROR', 'bad bill_date: 400');
}

# ---- WeChat: fault modes ------------------------------------------------------------

{
    $sim->mode('error500', times => 1, path_prefix => '/v3/');
    my $r = native('WF1', 100);
    is(wx_code($r), '500 SYSTEM_ERROR', 'error500: 500 SYSTEM_ERROR');
    is($r->{sig_ok}, 1, 'error500: signed');
    is(wx_query('WF1')->{status}, 404, 'error500: not created');
    is(native('WF1', 100)->{status}, 200, 'then normal');
    is(wx_entry('WF1')->{requests}, 2, 'requests counts the 500 one');

    $sim->mode('error500_after', times => 1, path_prefix => '/v3/');
    is(native('WF2', 100)->{status}, 500, 'error500_after: 500');
    is(wx_query('WF2')->{status}, 200, 'error500_after: created');

    $sim->mode('reset', times => 1, path_prefix => '/v3/');
    is(native('WF3', 100)->{status}, 599, 'reset: no answer');
    is(wx_query('WF3')->{status}, 404, 'reset: not created');

    $sim->mode('reset_after', times => 1, path_prefix => '/v3/');
    is(native('WF4', 100)->{status}, 599, 'reset_after: no answer');
    is(wx_query('WF4')->{status}, 200, 'reset_after: created');

    $sim->mode('bad_signature', times => 1, path_prefix => '/v3/');
    $r = native('WF5', 100);
    is($r->{status}, 200, 'bad_signature: processed');
    is($r->{headers}{'wechatpay-serial'}, $S1, 'bad_signature: the platform serial');
    like($r->{headers}{'wechatpay-signature'}, qr/^[A-Za-z0-9+\/]{300,}={0,2}$/,
         'bad_signature: a well-formed signature');
    is($r->{sig_ok}, 0, 'bad_signature: that does not verify');
    is(wx_query('WF5')->{sig_ok}, 1, 'then verifies again');

    $sim->mode('amount_mismatch', times => 1, path_prefix => '/v3/');
    is(wx_query('WF5')->{json}{amount}{total}, 101, 'amount_mismatch: total + 1');
    is(wx_query('WF5')->{json}{amount}{total}, 100, 'then 100');

    $sim->mode('decline', times => 1, path_prefix => '/v3/');
    is(wx_code(native('WF6', 100)), '403 TRADE_ERROR', 'decline: 403 TRADE_ERROR');

    $sim->mode('error500', times => 1, path_prefix => '/gateway.do');
    is(native('WF7', 100)->{status}, 200, 'path_prefix /gateway.do: WeChat not affected');
    $sim->mode('normal');

    my $big = 'x' x (1024 * 1024 + 10);
    $r = http(POST => $sim->url('/v3/pay/transactions/native'), body => $big,
              headers => {'Content-Type' => 'application/json'});
    is($r->{status}, 413, 'body over 1 MiB: 413');
}

# ---- reset; acquirer untouched; no keys -----------------------------------------------

{
    $sim->wechat_platform($S2);
    ok($sim->reset, 'reset');
    is_deeply($sim->trades, {alipay => [], wechat => []}, 'reset forgets trades and orders');
    is($sim->wechat_platform->{serial}, $S1, 'reset restores platform 1');
    my $r = $sim->acquirer(GET => '/acquirer/v1/charges/none');
    is("$r->{status} $r->{sig_ok}", '404 1', 'acquirer still answers');

    kill 'TERM', $cb_pid;
    waitpid $cb_pid, 0;
    precreate('A9', '1.00', notify_url => $ALI_URL);
    my $n = $sim->alipay_notify(out_trade_no => 'A9');
    like($n->{error} // '', qr/callback failed/, 'receiver down: 502 with error');
    ok($n->{sent}{body}, '... and what was sent');

    my $bare = PayGW::Test::Sim->start(no_keys => 1);
    is($bare->keys_dir, undef, 'no_keys: no keys dir');
    $r = http(POST => $bare->url('/gateway.do'), body => 'a=b');
    is("$r->{status} $r->{body}", '503 {"error":"not configured"}',
       'without --keys: Alipay 503 not configured');
    $r = http(GET => $bare->url('/v3/pay/transactions/out-trade-no/x?mchid=1'));
    is("$r->{status} $r->{body}", '503 {"error":"not configured"}', '... WeChat 503');
    is(http(POST => $bare->url('/_sim/wechat/notify'), json => {out_trade_no => 'x'})->{status},
       503, '... and its control routes');
    is_deeply($bare->trades, {alipay => [], wechat => []}, '... trades empty');
    is($bare->acquirer(GET => '/acquirer/v1/charges/none')->{status}, 404,
       '... the acquirer works');
    my $reuse = PayGW::Test::Sim->start(keys => $sim->keys_dir,
                                        alipay_app_id => '2021000000000077',
                                        wechat_mchid => '1900000077');
    is($reuse->keys_dir, $sim->keys_dir, 'keys => DIR: used as given');
    is(codes($reuse->alipay(method => 'alipay.trade.query', biz => {out_trade_no => 'x'})),
       '40004 ACQ.TRADE_NOT_EXIST', '--alipay-app-id: requests with that app_id accepted');
    is($reuse->wechat(GET => '/v3/pay/transactions/out-trade-no/x?mchid=1900000077')->{status},
       404, '--wechat-mchid: that mchid accepted');
}

done_testing;
