#!/usr/bin/perl
# POST /v1/notify/bank_card: the acquirer's HMAC-signed charge callback
# settles a payment whose answer was lost; forged, tampered, stale and
# foreign callbacks are refused and change nothing; late ones are kept
# out.  Counted in paygw_callbacks_total{channel="bank_card"}.
use strict;
use warnings;

use Test::More;

use PayGW::Test qw(http);
use PayGW::Gateway qw(sql_quote);

# One try per call, of at most 2 s; the acquirer's callbacks come to
# /v1/notify/bank_card (paygw_api) and are counted in /metrics.
my $gw = PayGW::Gateway->start(http => <<'EOF');
    paygw_zone  paygw:1m;
    upstream paygw_redis { server 127.0.0.1:%%REDIS_PORT%%; keepalive 16; }
    paygw_mysql main host=127.0.0.1 port=%%MYSQL_PORT%% user=paygw
                password_file=%%MYSQL_PASSWORD_FILE%%
                database=paygw max_conns=8 query_timeout=10s;
    paygw_keys  %%REPO%%/conf/demo/keys.conf;

    paygw_channel bank_card location=/_paygw/bank merchant_id=ACQ-M100
                  secret_file=%%REPO%%/conf/demo/acquirer.secret
                  attempts=1 unknown_grace=60s breaker_failures=0;
    upstream paygw_acquirer { server 127.0.0.1:%%SIM_PORT%%; keepalive 16; }

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
        location /v1/ { paygw_api; }
        location = /metrics { paygw_metrics; }
    }
EOF
my $sim = $gw->sim;
my $url = $gw->url('/v1/notify/bank_card');

# the stored status (a GET of an unknown payment would query the acquirer)
sub stored {
    $gw->sql1("SELECT status FROM payments WHERE payment_no = " . sql_quote($_[0]))
}

# the acquirer charged, but its answer was lost
$sim->mode('reset_after', times => 1, path_prefix => '/acquirer/v1/charges');
my $r = $gw->api(POST => '/v1/payments', idempotency_key => "bn-1-$$",
                 json => PayGW::Gateway->payment_body(amount => 4200));
is($r->{status}, 202, 'answer lost: 202 unknown');
my $no = $r->{json}{payment_no};

my $rejected = $gw->callbacks('bank_card', 'rejected');
my %status = (signature => 401, body => 401, merchant => 401, amount => 400);
for my $tamper (sort keys %status) {
    my $cb = $sim->notify(url => $url, out_trade_no => $no, tamper => $tamper);
    is($cb->{status}, $status{$tamper}, "tampered ($tamper): $status{$tamper}");
}
my $cb = $sim->notify(url => $url, out_trade_no => $no, timestamp => time - 900);
is($cb->{status}, 401, 'a callback signed 15 minutes ago: 401');
is(stored($no), 'unknown', 'nothing changed');
is($gw->callbacks('bank_card', 'rejected'), $rejected + 5, 'five rejected, counted');

my $accepted = $gw->callbacks('bank_card', 'accepted');
$cb = $sim->notify(url => $url, out_trade_no => $no);
is($cb->{status}, 204, 'the genuine callback: 204');
is(stored($no), 'succeeded', 'settled succeeded by the callback');
my $p = $gw->payment($no);
like($p->{channel_trade_no}, qr/^ch_/, 'the acquirer charge id');
is($gw->callbacks('bank_card', 'accepted'), $accepted + 1, 'accepted, counted');

# replayed, and a late decline: acknowledged, nothing moves
is(http(POST => $url, body => $cb->{sent}{body}, headers => $cb->{sent}{headers})
       ->{status}, 204, 'the same callback again: 204');
$cb = $sim->notify(url => $url, out_trade_no => $no, status => 'declined',
                   decline_code => 'card_declined');
is($cb->{status}, 204, 'a decline after the success: acknowledged');
is($gw->payment($no)->{status}, 'succeeded', 'still succeeded');
my $events = $gw->db->sql("SELECT COUNT(*) FROM paygw.outbox_events "
                          . "WHERE object_no = '$no'");
chomp $events;
is($events, 1, 'one event in all');

# a callback for no payment of ours
$cb = $sim->notify(url => $url, out_trade_no => 'P-NONE', amount => 1, currency => 'CNY');
is($cb->{status}, 404, 'an unknown out_trade_no: 404');

done_testing;
