#!/usr/bin/perl
# Several channels of one provider: two card acquirers, each its own
# paygw_channel (bank_card, and bank_card_hk with provider=bank_card)
# against its own simulator with its own merchant id.  A payment goes to
# the channel it names, is counted under that channel's name, and has
# its own circuit breaker.  And the registry's configuration errors, as
# nginx -t reports them.
use strict;
use warnings;

use Test::More;

use PayGW::Test ();
use PayGW::Gateway;

my $repo = PayGW::Test::repo_root();

# the second acquirer: another simulator, another merchant id
my $hk = PayGW::Test::Sim->start(acquirer_merchant => 'ACQ-HK', no_keys => 1);
my $hkp = $hk->port;

my $hk_channel = <<"CONF";
    paygw_channel bank_card_hk provider=bank_card location=/_paygw/bank_hk
                  merchant_id=ACQ-HK
                  secret_file=$repo/conf/demo/acquirer.secret
                  breaker_failures=0;
    upstream paygw_acquirer_hk { server 127.0.0.1:$hkp; keepalive 4; }
CONF

my $gw = PayGW::Gateway->start(
    extra_http => $hk_channel,
    extra_server => <<'CONF');
        location /_paygw/bank_hk/ {
            internal;
            proxy_pass http://paygw_acquirer_hk/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_connect_timeout 1s;
            proxy_read_timeout 10s;
            subrequest_output_buffer_size 64k;
        }
CONF

my $n = 0;
my %CARD = (card => { number => '4242424242424242', exp_month => 12,
                      exp_year => 2030, cvc => '123' });

sub create {
    my (%over) = @_;
    $n++;
    return $gw->api(POST => '/v1/payments', idempotency_key => "ch-$n-$$",
        json => PayGW::Gateway->payment_body(business_no => "CH-$n-$$",
                                             %over));
}

sub charges { [map { $_->{out_trade_no} } @{ $_[0]->charges->{charges} }] }

# ---- one payment through each acquirer ------------------------------------

my $r = create(channel => 'bank_card');
is($r->{status}, 201, 'created on bank_card') or diag $r->{body};
is($r->{json}{channel}, 'bank_card', '... its channel is bank_card');
is($r->{json}{status}, 'succeeded', '... and it succeeded');
my $home = $r->{json}{payment_no};

$r = create(channel => 'bank_card_hk', %CARD);
is($r->{status}, 201, 'created on bank_card_hk') or diag $r->{body};
is($r->{json}{channel}, 'bank_card_hk', '... its channel is bank_card_hk');
is($r->{json}{status}, 'succeeded', '... and it succeeded');
my $away = $r->{json}{payment_no};

is_deeply(charges($gw->sim), [$home], 'the first acquirer charged the first');
is_deeply(charges($hk), [$away], 'the second acquirer (ACQ-HK) the second');

$r = $gw->api(GET => "/v1/payments/$away");
is($r->{json}{channel}, 'bank_card_hk', 'read back: bank_card_hk');
is($r->{json}{status}, 'succeeded', '... succeeded');

# a card channel wants a card, whatever its name
$r = create(channel => 'bank_card_hk');
is($r->{status}, 400, 'no card: 400');
like($r->{json}{error}{message}, qr/card is required for the bank_card_hk channel/,
     '... naming the channel');

# ---- metrics: the configured name is the label --------------------------------

PayGW::Test::wait_until(sub {
    ($gw->metric('paygw_payments_total{channel="bank_card_hk",status="succeeded"}')
     // 0) >= 1 });
is($gw->metric('paygw_payments_total{channel="bank_card_hk",status="succeeded"}'),
   1, 'paygw_payments_total counts bank_card_hk on its own');
is($gw->metric('paygw_payments_total{channel="bank_card",status="succeeded"}'),
   1, '... and bank_card on its own');
ok($gw->metric('paygw_channel_requests_total{channel="bank_card_hk",result="ok"}'),
   'provider calls of bank_card_hk');
is($gw->metric('paygw_circuit_state{channel="bank_card_hk"}'), 0,
   'bank_card_hk has a circuit of its own');
for my $ch (qw(bank_card alipay wechat)) {
    is($gw->metric(qq{paygw_circuit_state{channel="$ch"}}), 0,
       "the series of $ch are still there");
}

# ---- configuration errors -------------------------------------------------

sub nginx_t {
    my ($extra) = @_;
    return $gw->ngx->test_config(
        http => $gw->_http_conf(%{ $gw->{o} }, extra_http => $extra));
}

my $ch = sub {
    "paygw_channel $_[0] location=/_paygw/bank merchant_id=M "
    . "secret_file=$repo/conf/demo/acquirer.secret;\n";
};

my ($rc, $out) = nginx_t($hk_channel =~ s/provider=bank_card/provider=paypal/r);
isnt($rc, 0, 'nginx -t fails: an unknown provider');
like($out, qr/unknown provider "paypal": bank_card, alipay or wechat/,
     '... naming the providers');

($rc, $out) = nginx_t($ch->('paypal'));
isnt($rc, 0, 'nginx -t fails: a channel named after no provider');
like($out, qr/unknown channel "paypal": bank_card, alipay or wechat/,
     '... as before');

($rc, $out) = nginx_t($hk_channel . $ch->('bank_card_hk provider=bank_card'));
isnt($rc, 0, 'nginx -t fails: a channel twice');
like($out, qr/"paygw_channel" directive is duplicate/, '... duplicate');

($rc, $out) = nginx_t($ch->('bank.card provider=bank_card'));
isnt($rc, 0, 'nginx -t fails: a name that is no label');
like($out, qr/invalid channel name "bank\.card"/, '... invalid channel name');

($rc, $out) = nginx_t($ch->('other provider=bank_card'));
isnt($rc, 0, 'nginx -t fails: a channel named "other"');
like($out, qr/invalid channel name "other"/, '... the label of unknown names');

# bank_card, alipay, wechat, bank_card_hk and 12 more: 16; one more fails
my $many = $hk_channel . join '', map { $ch->("acq$_ provider=bank_card") } 1 .. 12;
($rc, $out) = nginx_t($many);
is($rc, 0, 'nginx -t passes with 16 channels') or diag $out;
($rc, $out) = nginx_t($many . $ch->('acq13 provider=bank_card'));
isnt($rc, 0, 'nginx -t fails with 17 channels');
like($out, qr/too many channels: at most 16/, '... at most 16');

# a policy names a configured channel like a provider's
my $dir = PayGW::Test::_mkdir('policy');
PayGW::Test::_spew("$dir/ok.policy",
    "allow channel=bank_card_hk,alipay\nallow api=get_payment\n", 0644);
PayGW::Test::_spew("$dir/bad.policy", "allow channel=bank_card_xx\n", 0644);
($rc, $out) = nginx_t("$hk_channel    paygw_policy $dir/ok.policy;\n");
is($rc, 0, 'a policy naming bank_card_hk passes nginx -t') or diag $out;
($rc, $out) = nginx_t("$hk_channel    paygw_policy $dir/bad.policy;\n");
isnt($rc, 0, 'a policy naming no channel fails');
like($out, qr/unknown channel in "channel=bank_card_xx"/, '... as before');

($rc, $out) = nginx_t($hk_channel);
is($rc, 0, 'the correct configuration passes nginx -t');

done_testing;
