#!/usr/bin/perl
# The circuit breaker: 3 consecutive failed acquirer calls open the
# bank_card circuit for every worker (2 here); while open, payments are
# refused at once with 503 channel_unavailable and nothing is written or
# sent; after the ejection time one probe goes through: its success
# closes the circuit, its failure opens it again.  paygw_circuit_state
# shows it.
use strict;
use warnings;

use Test::More;
use Time::HiRes qw(time);

use PayGW::Test qw(sleep_until);
use PayGW::Gateway;

# One try per call, so that each failed create is one failed call; the
# breaker opens after 3 of them in a row and stays open for 2 s.
my $gw = PayGW::Gateway->start(workers => 2, http => <<'EOF');
    paygw_zone  paygw:1m;
    upstream paygw_redis { server 127.0.0.1:%%REDIS_PORT%%; keepalive 16; }
    paygw_mysql main host=127.0.0.1 port=%%MYSQL_PORT%% user=paygw
                password_file=%%MYSQL_PASSWORD_FILE%%
                database=paygw max_conns=8 query_timeout=10s;
    paygw_keys  %%REPO%%/conf/demo/keys.conf;

    paygw_channel bank_card location=/_paygw/bank merchant_id=ACQ-M100
                  secret_file=%%REPO%%/conf/demo/acquirer.secret
                  attempts=1 unknown_grace=60s breaker_failures=3 breaker_timeout=2s;
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
            proxy_send_timeout 10s;
            proxy_read_timeout 10s;
            subrequest_output_buffer_size 64k;
        }
        location /v1/ { paygw_api; }
        location = /metrics { paygw_metrics; }
    }
EOF

sub acquirer_requests {
    scalar grep { $_->{path} =~ m{^/acquirer/} } @{ $gw->sim->requests };
}

is($gw->create->{status}, 201, 'healthy: created');
is($gw->circuit_state('bank_card'), 0, 'circuit closed');

# three failures in a row open it
$gw->sim->mode('error500');
is($gw->create->{status}, 202, "acquirer failing: unknown ($_)") for 1 .. 3;
my $opened = time;      # the third failure opened it before it was answered
is($gw->circuit_state('bank_card'), 1, 'after 3 failures: open');

# open: refused at once, by every worker, nothing written or sent
my $rows = $gw->count_rows('payments');
my $sent = acquirer_requests();
for my $i (1 .. 6) {
    my $r = $gw->create;
    is($r->{status}, 503, "open: 503 ($i)");
    is($r->{json}{error}{code}, 'channel_unavailable', "... channel_unavailable ($i)");
}
is($gw->count_rows('payments'), $rows, 'open: no payment written');
is(acquirer_requests(), $sent, 'open: nothing sent to the acquirer');

{
    my $pno = $gw->db->sql("SELECT payment_no FROM paygw.payments "
                           . "WHERE status = 'succeeded' LIMIT 1");
    chomp $pno;
    my $r = $gw->api(POST => "/v1/payments/$pno/refunds", idempotency_key => 'br-r',
                     json => { refund_no => 'BR-R1', amount => 1 });
    is($r->{status}, 503, 'open: a refund is refused too');
    is($gw->count_rows('refunds'), 0, '... and nothing reserved');
}

# half-open: a failed probe opens it again at once.  The ejection time is
# what is tested, so it is waited out: breaker_timeout (2 s) from the
# moment it opened, plus 0.2 s for nginx's cached clock.
sleep_until($opened + 2.2);
my $probe = $gw->create;
$opened = time;
is($probe->{status}, 202, 'after the ejection time: one probe goes through');
is($gw->circuit_state('bank_card'), 1, 'the probe failed: open again');
is($gw->create->{status}, 503, 'and refused again right away');

# half-open: a successful probe closes it
$gw->sim->mode('normal');
sleep_until($opened + 2.2);
is($gw->create->{status}, 201, 'probe succeeds');
is($gw->circuit_state('bank_card'), 0, 'circuit closed');
is($gw->create->{status}, 201, 'payments flow again') for 1 .. 3;

done_testing;
