#!/usr/bin/perl
# W3C traceparent (every vector of t/vectors/traceparent.json through
# the real request path), trace propagation to the acquirer, the module's
# nginx variables in a log_format, and stock limit_req keyed by
# $paygw_key_id.
use strict;
use warnings;

use JSON::PP;
use Test::More;

use PayGW::Test qw(http http_raw repo_root wait_until);
use PayGW::Gateway;

my $vectors = repo_root() . '/t/vectors/traceparent.json';

my $V = do {
    open my $fh, '<', $vectors or die "$vectors: $!";
    local $/;
    decode_json(<$fh>);
};

my $gw = PayGW::Gateway->start(http => <<'EOF');
    paygw_zone  paygw:1m;
    upstream paygw_redis { server 127.0.0.1:%%REDIS_PORT%%; keepalive 16; }
    paygw_mysql main host=127.0.0.1 port=%%MYSQL_PORT%% user=paygw
                password_file=%%MYSQL_PASSWORD_FILE%%
                database=paygw max_conns=8 query_timeout=10s;
    paygw_keys  %%REPO%%/conf/demo/keys.conf;

    paygw_channel bank_card location=/_paygw/bank merchant_id=ACQ-M100
                  secret_file=%%REPO%%/conf/demo/acquirer.secret
                  attempts=3 unknown_grace=60s breaker_failures=0;
    upstream paygw_acquirer { server 127.0.0.1:%%SIM_PORT%%; keepalive 16; }

    # the module's variables in an access log, and limit_req per API key
    log_format paygw_audit escape=json
        '{"trace":"$paygw_trace_id","key":"$paygw_key_id",'
        '"merchant":"$paygw_merchant_id","payment":"$paygw_payment_no",'
        '"channel":"$paygw_channel","idem":"$paygw_idempotency",'
        '"status":$status,"uri":"$uri"}';
    limit_req_zone $paygw_key_id zone=per_key:1m rate=1r/m;

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
        location = /healthz { paygw_health live; }
        location = /readyz { paygw_health ready; }

        location ~ ^/v1/payments/PX {
            paygw_api;
            limit_req zone=per_key burst=1 nodelay;
            limit_req_status 429;
        }
        location = /v1/payments {
            paygw_api;
            access_log %%TESTDIR%%/audit.log paygw_audit;
        }
    }
EOF

# ---- traceparent vectors ---------------------------------------------------

# Raw requests: the values carry OWS (tabs) that HTTP::Tiny would refuse.
sub request_id_for {
    my (@headers) = @_;
    my $req = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n";
    while (my ($k, $v) = splice @headers, 0, 2) {
        $req .= "$k: $v\r\n";
    }
    my $res = http_raw($gw->ngx->port, "$req\r\n");
    my ($id) = $res =~ /^X-Request-Id: (\S*)\r$/mi;
    return $id // '';
}

for my $c (@{ $V->{cases} }) {
    my $id = request_id_for(traceparent => $c->{value});
    like($id, qr/^[0-9a-f]{32}$/, "X-Request-Id is a trace id ($c->{reason})");

    if ($c->{valid}) {
        is($id, $c->{trace_id}, "valid: continues trace ($c->{reason})");
    } else {
        my ($tid) = $c->{value} =~ /^\s*[^-]*-([^-]*)-/;
        isnt($id, $tid // '', "invalid: a new trace ($c->{reason})");
    }
}

for my $c (@{ $V->{header_cases} }) {
    my $id = request_id_for(map { @$_ } @{ $c->{headers} });
    my ($tid) = $c->{headers}[-1][1] =~ /^00-([0-9a-f]{32})-/;
    if ($c->{valid}) {
        is($id, $tid, "header case: $c->{reason}");
    } else {
        isnt($id, $tid, "header case: $c->{reason}");
    }
}

{
    my $a = http(GET => $gw->url('/healthz'))->{headers}{'x-request-id'};
    my $b = http(GET => $gw->url('/healthz'))->{headers}{'x-request-id'};
    isnt($a, $b, 'without traceparent every request starts its own trace');
}

# ---- the trace reaches the provider, errors carry it --------------------------

my $trace = '4bf92f3577b34da6a3ce929d0e0e4736';
my $tp = "00-$trace-00f067aa0ba902b7-01";

{
    $gw->sim->reset;
    my $r = $gw->api(POST => '/v1/payments', idempotency_key => 'tr-1',
                     headers => { traceparent => $tp },
                     json => PayGW::Gateway->payment_body);
    is($r->{status}, 201, 'payment created') or diag $r->{body};
    is($r->{headers}{'x-request-id'}, $trace, 'the response names the trace');

    my ($charge) = grep { $_->{path} =~ m{/acquirer/v1/charges} }
                   @{ $gw->sim->requests };
    my $sent = $charge ? $charge->{headers}{traceparent} // '' : '';
    like($sent, qr/^00-\Q$trace\E-[0-9a-f]{16}-01$/,
         'the acquirer got a traceparent of the same trace');
    unlike($sent, qr/00f067aa0ba902b7/, '... with our own span as parent');

    my $e = $gw->api(GET => '/v1/payments/PNOSUCH',
                     headers => { traceparent => $tp });
    is($e->{status}, 404, 'an error');
    is($e->{json}{error}{request_id}, $trace, '... whose request_id is the trace');
}

# ---- variables in a log_format ---------------------------------------------

{
    my $r = $gw->api(POST => '/v1/payments', idempotency_key => 'au-1',
                     headers => { traceparent => $tp },
                     json => PayGW::Gateway->payment_body(business_no => 'AU-1'));
    is($r->{status}, 201, 'created through the audited location')
        or diag $r->{body};

    # nginx writes the log line after it sent the response: wait for it
    my $pno = $r->{json}{payment_no} // '';
    my $line;
    wait_until(sub {
        ($line) = grep { /"payment":"\Q$pno\E"/ }
                  split /\n/, PayGW::Test::_slurp($gw->ngx->dir . '/audit.log');
        defined $line;
    }, timeout => 5);
    ok($line, 'an audit line') or diag(PayGW::Test::_slurp($gw->ngx->dir . '/audit.log'));
    my $j = eval { decode_json($line // '{}') } // {};
    is($j->{trace}, $trace, '$paygw_trace_id');
    is($j->{key}, 'demo', '$paygw_key_id');
    is($j->{merchant}, 'M100', '$paygw_merchant_id');
    is($j->{payment}, $pno, '$paygw_payment_no');
    is($j->{channel}, 'bank_card', '$paygw_channel');
    is($j->{idem}, 'new', '$paygw_idempotency');
    unlike($line // '', qr/4242424242424242|PAYGW-HMAC|sig=/,
           'no card number or signature in the audit line');
}

# ---- limit_req keyed by $paygw_key_id ----------------------------------------

{
    my @demo = map { $gw->api(GET => "/v1/payments/PX$_")->{status} }
               1 .. 3;
    is_deeply([@demo[0, 1]], [404, 404], 'demo key: within its burst');
    is($demo[2], 429, 'demo key: over its rate, 429');

    my $v = $gw->api(GET => '/v1/payments/PX9', key => 'viewer');
    is($v->{status}, 404, 'another key is still served');
}

done_testing;
