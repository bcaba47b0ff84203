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

use PayGW::Test ();
use PayGW::Gateway;

my $gw = PayGW::Gateway->start(workers => 2, attempts => 1,
    qr_breaker => 'breaker_failures=3 breaker_timeout=2s',
    alipay_extra => 'fallback=wechat');
my $sim = $gw->sim;
my $n = 0;

sub create {
    my ($channel) = @_;
    $n++;
    return $gw->api(POST => '/v1/payments', idempotency_key => "qb-$n-$$",
        json => PayGW::Gateway->payment_body(channel => $channel,
                                             business_no => "QB-$n"));
}

sub state { $gw->metric(qq{paygw_circuit_state{channel="$_[0]"}}) }

sub alipay_requests {
    scalar grep { $_->{path} =~ m{^/gateway\.do} } @{ $sim->requests };
}

my $r = create('alipay');
is($r->{status}, 201, 'healthy: created on alipay');
is($r->{json}{channel}, 'alipay', 'alipay');
is(state('alipay'), 0, 'alipay circuit closed');

# clients that give up while Alipay thinks are not Alipay failing
$sim->mode('slow', delay_ms => 1500, times => 4, path_prefix => '/gateway.do');
for my $i (1 .. 4) {
    $n++;
    my $r = $gw->api(POST => '/v1/payments', idempotency_key => "qb-$n-$$",
        json => PayGW::Gateway->payment_body(channel => 'alipay',
                                             business_no => "QB-$n"),
        timeout => 0.3);
    isnt($r->{status}, 201, "a client gone after 0.3 s ($i)");
}
sleep 2;
is(state('alipay'), 0, 'four abandoned requests do not open the circuit');
$r = create('alipay');
is($r->{json}{channel}, 'alipay', 'alipay still takes payments');

$sim->mode('error500', path_prefix => '/gateway.do');
for my $i (1 .. 3) {
    $r = create('alipay');
    is($r->{json}{status}, 'unknown', "Alipay failing: unknown ($i)");
}
is(state('alipay'), 1, 'after 3 failures: open (seen from any worker)');

# open: every worker sends alipay payments to wechat, Alipay hears nothing
my $sent = alipay_requests();
my %pid;
for my $i (1 .. 6) {
    $r = create('alipay');
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
create('wechat') for 1 .. 3;
is(state('wechat'), 1, 'wechat circuit open');
$r = create('alipay');
is($r->{status}, 503, 'both open: 503');
is($r->{json}{error}{code}, 'channel_unavailable', 'channel_unavailable');
$r = create('wechat');
is($r->{status}, 503, 'wechat open, no fallback: 503');

# after the ejection time: one probe to Alipay; it succeeds, closing it
$sim->mode('normal');
sleep 2.5;
$r = create('alipay');
is($r->{status}, 201, 'half-open: the probe went through');
is($r->{json}{channel}, 'alipay', 'on alipay itself');
is(state('alipay'), 0, 'the probe closed the circuit');
$r = create('alipay');
is($r->{json}{channel}, 'alipay', 'and alipay takes payments again');


# ---- configuration errors ---------------------------------------------------------

my $k = sub { $sim->key_file($_[0]) };
my $dir = PayGW::Test::_mkdir('badkeys');
PayGW::Test::_spew("$dir/garbage.pem", "not a key\n", 0600);
system("openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 "
       . "-out $dir/short.pem 2>/dev/null") == 0 or die 'openssl';
PayGW::Test::_spew("$dir/apiv3.key", "too-short\n", 0600);

sub nginx_t {
    my (%o) = @_;
    return $gw->ngx->test_config(http => $gw->_http_conf(%{ $gw->{o} }, %o));
}

my @bad = (
    [alipay_extra => 'fallback=bank_card',
     qr/fallback=bank_card must name another configured QR channel/,
     'fallback to a card channel'],
    [alipay_extra => 'fallback=nope',
     qr/fallback=nope must name another configured QR channel/,
     'fallback to an unknown channel'],
    [alipay_extra => "alipay_public_key=$dir/garbage.pem",
     qr/"\Q$dir\E\/garbage\.pem" is not a PEM public key/, 'a public key that is not PEM'],
    [alipay_extra => "private_key=$dir/short.pem",
     qr/is not an RSA key of 2048 bits or more/, 'a 1024-bit key'],
    [alipay_extra => "private_key=$dir/missing.pem",
     qr/missing\.pem/, 'a key file that is missing'],
    [wechat_extra => "apiv3_key_file=$dir/apiv3.key",
     qr/must hold a 32-byte key/, 'an APIv3 key of the wrong length'],
    [wechat_extra => "platform_key=$dir/garbage.pem",
     qr/platform_key=.*: SERIAL:FILE expected|is not a PEM public key/,
     'a platform key without its serial'],
    [wechat_extra => 'colour=blue', qr/invalid parameter "colour=blue"/,
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
    my ($rc, $out) = $gw->ngx->test_config(http => $gw->_http_conf(%{ $gw->{o} })
        =~ s/app_id=\S+\s+private_key=\S+/app_id=2021000000000001/r);
    isnt($rc, 0, 'alipay without its private key: nginx -t fails');
    like($out, qr/paygw_channel "alipay" needs app_id=, private_key= and alipay_public_key=/,
         '... saying what it needs');
}
my ($rc) = nginx_t();
is($rc, 0, 'the correct configuration passes nginx -t');

done_testing;
