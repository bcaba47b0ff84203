#!/usr/bin/perl
# Risk rules (paygw_risk): single-payment ceiling, daily amount, merchant
# and payer velocity windows, block lists (payer, client IP, card
# fingerprint) living in Redis and changed without a restart.  A refused
# payment: 403 risk_denied with its reason, nothing charged, no payment,
# a risk.block outbox event, counted in paygw_risk_decisions_total.
use strict;
use warnings;

use Digest::SHA qw(hmac_sha256_hex);
use File::Temp qw(tempdir);
use Test::More;

use PayGW::Test qw(http);
use PayGW::Gateway;

my $dir = tempdir(CLEANUP => 1);
my $card_key = 'risk-card-key-for-tests';
open my $fh, '>', "$dir/card.key" or die $!;
print $fh "$card_key\n";
close $fh;

my $gw = PayGW::Gateway->start(vars => {CARD_KEY_FILE => "$dir/card.key"},
                               http => <<'EOF');
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

    paygw_risk max_amount=10000 daily_amount=20000
               merchant_velocity=8/1m payer_velocity=3/1h
               card_key_file=%%CARD_KEY_FILE%%;

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

my $n = 0;
my $charges_at_create = 0;

sub charges { scalar @{ $gw->sim->charges->{charges} } }

sub create {
    my (%over) = @_;
    $n++;
    $charges_at_create = charges();
    return $gw->create({business_no => "RISK-$n", amount => 100, %over},
                       idempotency_key => "risk-$n");
}

sub reset_windows {
    my $keys = $gw->redis->cli('--scan', '--pattern', 'pg:{M100}:risk:*');
    $gw->redis->cli('DEL', split /\n/, $keys) if length $keys;
}

sub denied {
    my ($r, $reason, $name) = @_;
    subtest $name => sub {
        is($r->{status}, 403, 'status 403') or diag $r->{body};
        is($r->{json}{error}{code}, 'risk_denied', 'risk_denied');
        is($r->{json}{error}{reason}, $reason, "reason $reason");
        my $bno = "RISK-$n";
        is($gw->db->sql("SELECT COUNT(*) FROM paygw.payments "
                        . "WHERE business_no = '$bno'"), "0\n", 'no payment');
        is(charges(), $charges_at_create, 'the acquirer got no charge for it');
        like($gw->db->sql("SELECT payload FROM paygw.outbox_events "
                          . "WHERE type = 'risk.block' AND object_no = '$bno'"),
             qr/"reason":"\Q$reason\E"/, 'a risk.block event with the reason');
    };
}

my $charges_before = charges();

# single-payment ceiling: decided without Redis
denied(create(amount => 10001), 'max_amount', 'over the single-payment ceiling');
is(create(amount => 10000)->{status}, 201, 'at the ceiling: allowed');
reset_windows();

# payer velocity: 3 an hour per payer
for my $i (1 .. 3) {
    is(create(metadata => { payer_id => 'alice' })->{status}, 201,
       "alice payment $i");
}
denied(create(metadata => { payer_id => 'alice' }), 'payer_velocity',
       'alice over her window');
is(create(metadata => { payer_id => 'bob' })->{status}, 201,
   'bob is another payer');
reset_windows();

# daily amount per merchant (20000): a refused payment does not count
is(create(amount => 9000, metadata => { payer_id => 'd1' })->{status}, 201,
   '9000 of 20000');
is(create(amount => 9000, metadata => { payer_id => 'd2' })->{status}, 201,
   '18000 of 20000');
denied(create(amount => 5000, metadata => { payer_id => 'd3' }), 'daily_amount',
       'over the daily amount');
is(create(amount => 2000, metadata => { payer_id => 'd4' })->{status}, 201,
   'the refused one did not count: 2000 more fit exactly');
reset_windows();

# merchant velocity: 8 a minute
for my $i (1 .. 8) {
    create(metadata => { payer_id => "mv$i" });
}
denied(create(metadata => { payer_id => 'mv9' }), 'merchant_velocity',
       'the merchant over its window');
reset_windows();

# block lists, changed live in Redis
$gw->redis->cli(qw(SADD pg:{M100}:risk:block:payer mallory));
denied(create(metadata => { payer_id => 'mallory' }), 'blocked_payer',
       'a blocked payer');
$gw->redis->cli(qw(SREM pg:{M100}:risk:block:payer mallory));
is(create(metadata => { payer_id => 'mallory' })->{status}, 201,
   'unblocked without a restart');

my $fp = hmac_sha256_hex('4000000000000077', $card_key);
$gw->redis->cli('SADD', 'pg:{M100}:risk:block:card', $fp);
denied(create(metadata => { payer_id => 'c1' },
              card => { number => '4000000000000077', exp_month => 12,
                        exp_year => 2030, cvc => '123' }),
       'blocked_card', 'a blocked card (by keyed fingerprint)');
is(create(metadata => { payer_id => 'c2' })->{status}, 201,
   'another card passes');

$gw->redis->cli(qw(SADD pg:{M100}:risk:block:ip 127.0.0.1));
denied(create(metadata => { payer_id => 'ip1' }), 'blocked_ip',
       'a blocked client address');
$gw->redis->cli(qw(SREM pg:{M100}:risk:block:ip 127.0.0.1));

# every key the script names carries the merchant's hash tag: one slot,
# so it runs on a Redis Cluster (issue 10); block lists are per merchant
$gw->redis->cli(qw(SADD pg:{M200}:risk:block:payer eve));
is(create(metadata => { payer_id => 'eve' })->{status}, 201,
   "another merchant's block list does not apply to M100");
my @risk_keys = grep { /risk/ } split /\n/, $gw->redis->cli('--scan', '--pattern', 'pg:*');
ok(@risk_keys && !grep({ !/^pg:\{M\d+\}:risk:/ } @risk_keys),
   'every risk key carries a merchant hash tag') or diag("@risk_keys");

unlike($gw->redis->cli('--scan', '--pattern', '*'), qr/4000000000000077/,
       'no card number in Redis');

# every refusal was counted; nothing was charged for them
{
    my $m = http(GET => $gw->url('/metrics'))->{body};
    my ($deny) = $m =~ /^paygw_risk_decisions_total\{decision="deny"\} (\d+)$/m;
    my ($allow) = $m =~ /^paygw_risk_decisions_total\{decision="allow"\} (\d+)$/m;
    is($deny, 7, 'seven denials counted');
    ok($allow >= 15, 'allows counted');
    my $charged = charges() - $charges_before;
    my $payments = $gw->count_rows('payments');
    is($charged, $payments, 'one charge per payment: no denied one charged');
}

# Redis down: risk cannot be evaluated, so the payment is refused
$gw->redis->stop;
my $r = create(metadata => { payer_id => 'down' });
is($r->{status}, 503, 'Redis down: 503, fail closed');
$gw->redis->start_again;

done_testing;
