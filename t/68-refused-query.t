#!/usr/bin/perl
# A refused query is not a decline (issue 10, item 1): when the acquirer
# refuses a query itself -- a signed 401 (our clock skewed) or a 429 (rate
# limited) -- it says nothing of the charge or the refund asked about.  An
# "unknown" payment stays unknown (never "failed"), an "unknown" refund
# keeps its amount reserved; both settle once the acquirer answers again.
use strict;
use warnings;

use Test::More;

use PayGW::Gateway qw(err_code sql_quote);

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
            proxy_send_timeout 5s;
            proxy_read_timeout 5s;
            subrequest_output_buffer_size 64k;
        }
        location /v1/ { paygw_api; }
    }
EOF

my $CHARGE_Q = '/acquirer/v1/charges/';     # GET .../charges/<no> only
my $REFUNDS  = '/acquirer/v1/refunds';
my $REFUND_Q = '/acquirer/v1/refunds/';

sub db1 { $gw->sql1($_[0]) }

# ---- payments: charged, answer lost, then the queries are refused -------

for my $refusal (qw(refuse401 refuse429)) {
    $gw->sim->mode('error500_after', path_prefix => '/acquirer/v1/charges');
    my $r = $gw->create();
    $gw->sim->mode('normal');
    my $no = $r->{json}{payment_no} // '';
    is($r->{json}{status}, 'unknown', "$refusal: the charge's answer was lost: unknown");
    is(scalar($gw->charges_for($no)), 1, "$refusal: the acquirer did charge");

    $gw->sim->mode($refusal, path_prefix => $CHARGE_Q);
    my $g = $gw->get_payment($no);
    is($g->{status}, 200, "$refusal: GET while queries are refused: 200");
    is($g->{json}{status}, 'unknown', "$refusal: ... still unknown, not failed");
    ok(!defined $g->{json}{failure_code}, "$refusal: ... no failure_code");

    my $res = $gw->api(POST => '/v1/admin/resolve', json => {}, key => 'ops',
                       idempotency_key => $gw->fresh_key('k68'));
    is($res->{status}, 200, "$refusal: admin resolve while refused: 200");
    is(db1("SELECT status FROM payments WHERE payment_no = " . sql_quote($no)),
       'unknown', "$refusal: ... stored still unknown");
    is(scalar($gw->events($no)), 0, "$refusal: ... no payment.failed event");
    $gw->sim->mode('normal');

    $g = $gw->get_payment($no);
    is($g->{json}{status}, 'succeeded', "$refusal: acquirer answers again: succeeded");
    is_deeply([map { $_->{type} } $gw->events($no)], ['payment.succeeded'],
              "$refusal: ... one payment.succeeded event");
}

# ---- refunds: answer lost, then the queries are refused -----------------

for my $refusal (qw(refuse401 refuse429)) {
    my $p = $gw->create(amount => 1000)->{json} // {};
    is($p->{status}, 'succeeded', "$refusal refund: a succeeded payment");
    my $pno = $p->{payment_no} // '';

    $gw->sim->mode('error500_after', path_prefix => $REFUNDS);
    my $rno = $gw->fresh_key('R68');
    my $r = $gw->api(POST => "/v1/payments/$pno/refunds",
                     json => {refund_no => $rno, amount => 600},
                     idempotency_key => $gw->fresh_key('k68'));
    $gw->sim->mode('normal');
    is($r->{status}, 202, "$refusal refund: answer lost: 202") or diag($r->{body});

    $gw->sim->mode($refusal, path_prefix => $REFUND_Q);
    my $g = $gw->api(GET => "/v1/refunds/$rno");
    is($g->{status}, 200, "$refusal refund: GET while queries are refused: 200");
    isnt($g->{json}{status}, 'failed', "$refusal refund: ... not failed");
    is(db1("SELECT refund_reserved FROM payments WHERE payment_no = "
           . sql_quote($pno)), 600, "$refusal refund: ... the amount stays reserved");

    my $over = $gw->api(POST => "/v1/payments/$pno/refunds",
                        json => {refund_no => $gw->fresh_key('R68'), amount => 600},
                        idempotency_key => $gw->fresh_key('k68'));
    $gw->sim->mode('normal');
    is_deeply([$over->{status}, err_code($over)], [422, 'refund_exceeds_payment'],
              "$refusal refund: ... so a second 600 is refused (no over-refund)");

    $g = $gw->api(GET => "/v1/refunds/$rno");
    is($g->{json}{status}, 'succeeded', "$refusal refund: acquirer answers again: succeeded");
}

done_testing;
