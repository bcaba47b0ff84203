#!/usr/bin/perl
# The settler always makes progress and never runs a row twice at once
# (issue 10, item 4).  The periodic settler (paygw_resolver) asks POST
# /v1/admin/resolve with "X-Paygw-Settle: due": it claims the open rows
# whose next try has come, and each claim moves the row's next try
# further away (1 s, 2 s, 4 s ... at most 10 min).  So 100 rows no
# provider can decide yet do not starve a newer one, two runs at once
# take disjoint rows, and a provider whose circuit is open is not asked.
use strict;
use warnings;

use Test::More;

use PayGW::Gateway qw(err_code sql_quote);
use PayGW::Test qw(http_parallel sign_request);

my $gw = PayGW::Gateway->start(http => <<'EOF');
    paygw_zone  paygw:1m;
    upstream paygw_redis { server 127.0.0.1:%%REDIS_PORT%%; keepalive 16; }
    paygw_mysql main host=127.0.0.1 port=%%MYSQL_PORT%% user=paygw
                password_file=%%MYSQL_PASSWORD_FILE%%
                database=paygw max_conns=8 query_timeout=10s;
    paygw_keys  %%REPO%%/conf/demo/keys.conf;

    paygw_channel bank_card location=/_paygw/bank merchant_id=ACQ-M100
                  secret_file=%%REPO%%/conf/demo/acquirer.secret
                  attempts=1 unknown_grace=60s breaker_failures=2
                  breaker_timeout=60s;
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

sub due_resolve {
    my $r = $gw->api(POST => '/v1/admin/resolve', json => {}, key => 'ops',
                     idempotency_key => $gw->fresh_key('k81'),
                     headers => {'X-Paygw-Settle' => 'due'});
    is($r->{status}, 200, 'the settler\'s resolve: 200') or diag($r->{body});
    return $r->{json} // {};
}

# 100 old "unknown" payments the acquirer keeps refusing to say anything
# about (429 to their queries): nothing can decide them for now.
$gw->sql1("INSERT INTO payments (payment_no, merchant_id, business_no, amount, "
          . "currency, channel, status, created_at, updated_at) "
          . "SELECT CONCAT('PSTUCK', seq), 'M100', CONCAT('STUCK-', seq), 100, "
          . "'CNY', 'bank_card', 'unknown', "
          . "UTC_TIMESTAMP(3) - INTERVAL 1000 SECOND + INTERVAL seq SECOND, "
          . "UTC_TIMESTAMP(3) - INTERVAL 1000 SECOND + INTERVAL seq SECOND "
          . "FROM seq_1_to_100");
is($gw->sql1("SELECT COUNT(*) FROM payments WHERE status = 'unknown'"), 100,
   '100 stuck unknown payments');
$gw->sim->mode('refuse429', path_prefix => '/acquirer/v1/charges/PSTUCK');

# and a newer one whose charge did happen (its answer was lost)
# (the sim keeps one mode: this one for the next charge only, then back
# to refusing the stuck ones' queries)
$gw->sim->mode('error500_after', times => 1, path_prefix => '/acquirer/v1/charges');
my $c = $gw->create();
$gw->sim->mode('refuse429', path_prefix => '/acquirer/v1/charges/PSTUCK');
my $new = $c->{json}{payment_no} // '';
is($c->{json}{status}, 'unknown', 'a newer payment: charged, answer lost: unknown')
    or diag($c->{body});

my $first = due_resolve();
is_deeply($first, {examined => 100, settled => 0},
          'first run: the 100 oldest claimed, none decidable');
is($gw->sql1("SELECT status FROM payments WHERE payment_no = " . sql_quote($new)),
   'unknown', '... the newer one not reached yet');
is($gw->sql1("SELECT COUNT(*) FROM payments WHERE payment_no LIKE 'PSTUCK%' "
             . "AND settle_attempts = 1 AND settle_next_at > UTC_TIMESTAMP(3)"), 100,
   '... each stuck row tried once, its next try moved on');

my $second = due_resolve();
is_deeply($second, {examined => 1, settled => 1},
          'second run: the stuck rows are not due, the newer one is settled');
is($gw->sql1("SELECT status FROM payments WHERE payment_no = " . sql_quote($new)),
   'succeeded', '... succeeded: 100 undecidable rows did not starve it');

# two runs at once take disjoint rows
$gw->sql1("UPDATE payments SET settle_next_at = NULL WHERE payment_no LIKE 'PSTUCK%'");
my @reqs = map {
    [POST => $gw->url('/v1/admin/resolve'), body => '{}', timeout => 30,
     headers => {'Content-Type' => 'application/json',
                 'Idempotency-Key' => $gw->fresh_key('k81p'),
                 'X-Paygw-Settle' => 'due',
                 Authorization => sign_request('ops', 'ops-secret', 'POST',
                                               '/v1/admin/resolve', '{}')}]
} 1 .. 2;
my @two = http_parallel(\@reqs);
is_deeply([map { $_->{status} } @two], [200, 200], 'two settler runs at once: 200, 200');
my $sum = 0;
$sum += ($_->{json}{examined} // 0) for @two;
is($sum, 100, '... examined 100 rows between them: none twice');
is($gw->sql1("SELECT COUNT(*) FROM payments WHERE payment_no LIKE 'PSTUCK%' "
             . "AND settle_attempts = 2"), 100, '... each row tried once more');

# an operator asking now still examines every open row
my $now = $gw->api(POST => '/v1/admin/resolve', json => {}, key => 'ops',
                   idempotency_key => $gw->fresh_key('k81'));
is($now->{json}{examined}, 100, 'an operator\'s resolve (no header) examines every open row');

# a provider whose circuit is open is left alone by the settler
$gw->sql1("UPDATE payments SET status = 'failed' WHERE payment_no LIKE 'PSTUCK%'");
$gw->sim->mode('error500', path_prefix => '/acquirer/v1/charges');
my @down = map { $gw->create()->{json}{payment_no} // '' } 1 .. 2;
$gw->sim->mode('normal');
my $third = $gw->create();
is_deeply([$third->{status}, err_code($third)], [503, 'channel_unavailable'],
          'two failed charges: the bank_card circuit is open');
my $queries = sub {
    scalar grep { $_->{method} eq 'GET' && $_->{path} =~ m{^/acquirer/v1/charges/} }
        @{ $gw->sim->requests };
};
my $before = $queries->();
my $open = due_resolve();
is($open->{settled}, 0, 'the settler, circuit open: nothing settled');
is($queries->(), $before, '... and the acquirer was not queried');
is($gw->sql1("SELECT COUNT(*) FROM payments WHERE status = 'unknown' AND payment_no IN ("
             . join(', ', map { sql_quote($_) } @down) . ")"), 2,
   '... the payments wait, unknown, for their next try');


# The create path keeps no index on settle_claim or (status, updated_at)
# (sql/007_hot_path_indexes.sql): the settler's claim and its read-back,
# as the module sends them (MariaDB's general log), must still be ranges
# of idx_status over the open rows, never a scan of every payment.
$gw->sql1("INSERT INTO payments (payment_no, merchant_id, business_no, amount, "
          . "currency, channel, status) SELECT CONCAT('PDONE', seq), 'M100', "
          . "CONCAT('BDONE', seq), 100, 'CNY', 'bank_card', 'succeeded' "
          . "FROM seq_1_to_2000");
$gw->sql1("ANALYZE TABLE payments");
my @sent = $gw->sent_statements(
    qr/^(?:UPDATE payments SET settle_next_at|SELECT payment_no, merchant_id FROM payments )/,
    sub {
        $gw->api(POST => '/v1/admin/resolve', json => {}, key => 'ops',
                 idempotency_key => $gw->fresh_key('k81'),
                 headers => {'X-Paygw-Settle' => 'due'});
    });
my %claim_sql;
for my $st (reverse @sent) {
    $claim_sql{'the claim'} = $st if $st =~ /^UPDATE payments /;
    $claim_sql{'its read-back'} = $st if $st =~ /^SELECT payment_no, merchant_id FROM payments /;
}
is(scalar keys %claim_sql, 2, 'the settler sent its claim and read-back')
    or diag(join "\n", @sent);
for my $name (sort keys %claim_sql) {
    my $plan = $gw->plan($claim_sql{$name});
    like($plan, qr/"key":\s*"idx_status"/,
         "$name: through idx_status");
    like($plan, qr/"access_type":\s*"range"/, "... a range, not a scan");
    like($plan, qr/"used_key_parts":\s*\[\s*"status",\s*"succeeded_at",\s*"expire_at"/,
         "... the pending ones by expire_at, not every pending one")
        or diag($plan);
}
is($gw->sql1("SELECT COUNT(*) FROM information_schema.STATISTICS "
             . "WHERE TABLE_SCHEMA = DATABASE() "
             . "AND TABLE_NAME IN ('payments', 'outbox_events') AND INDEX_NAME IN "
             . "('idx_status_updated', 'idx_settle_claim', 'idx_object', "
             . "'idx_created', 'idx_status_expire', 'idx_succeeded')"), 0,
   'the create path writes none of the six dropped indexes');

done_testing;
