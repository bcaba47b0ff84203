#!/usr/bin/perl
# The authorization policy (paygw_policy): the allow/deny matrix of
# conf/demo/policy.conf, file:line errors in `nginx -t`, a new policy by
# `nginx -s reload` while requests keep flowing, none failing.
use strict;
use warnings;

use File::Temp qw(tempdir);
use Test::More;

use PayGW::Test qw(repo_root http_parallel sign_request);
use PayGW::Gateway;

my $dir = tempdir(CLEANUP => 1);
my $keys_file = "$dir/keys.conf";
open my $fh, '>', $keys_file or die $!;
print $fh <<'KEYS';
demo       demo-secret       M100  merchant
viewer     viewer-secret     M100  viewer
ops        ops-secret        *     admin
shop-web   shop-web-secret   M100  merchant
KEYS
close $fh;

my $policy_file = repo_root() . '/conf/demo/policy.conf';

# conf(policy => FILE, keys => FILE): the gateway with that policy and
# key file (the demo policy and the key file above unless told).
sub conf {
    my (%o) = @_;
    my $policy = $o{policy} // $policy_file;
    my $keys = $o{keys} // $keys_file;
    return <<"EOF";
    paygw_zone  paygw:1m;
    upstream paygw_redis { server 127.0.0.1:%%REDIS_PORT%%; keepalive 16; }
    paygw_mysql main host=127.0.0.1 port=%%MYSQL_PORT%% user=paygw
                password_file=%%MYSQL_PASSWORD_FILE%%
                database=paygw max_conns=8 query_timeout=10s;
    paygw_keys  $keys;

    paygw_channel bank_card location=/_paygw/bank merchant_id=ACQ-M100
                  secret_file=%%REPO%%/conf/demo/acquirer.secret
                  attempts=3 unknown_grace=60s breaker_failures=0;
    upstream paygw_acquirer { server 127.0.0.1:%%SIM_PORT%%; keepalive 16; }

    paygw_policy $policy;

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
    }
EOF
}

my $gw = PayGW::Gateway->start(http => conf());

sub create {
    my ($key, %over) = @_;
    return $gw->create({%over}, key => $key, secret => "$key-secret");
}

sub denied {
    my ($r, $name, $reason) = @_;
    is($r->{status}, 403, "$name: 403") or diag $r->{body};
    is($r->{json}{error}{code}, 'forbidden', "$name: forbidden");
    like($r->{json}{error}{message} // '', $reason, "$name: the rule's reason")
        if $reason;
}

# merchant key
my $ok = create('demo');
is($ok->{status}, 201, 'merchant creates') or diag $ok->{body};
denied(create('demo', amount => 100000001), 'merchant over its ceiling',
       qr/above 1,000,000\.00 need an admin \(policy line \d+\)/);
is($gw->api(GET => "/v1/payments/$ok->{json}{payment_no}")->{status}, 200,
   'merchant reads its payment');

# customer-facing key: ceiling and what it may do
my $small = create('shop-web', amount => 50000);
is($small->{status}, 201, 'shop key: 500.00 allowed') or diag $small->{body};
denied(create('shop-web', amount => 50001), 'shop key over its ceiling',
       qr/above the web shop key's ceiling/);
is($gw->api(GET => "/v1/payments/$small->{json}{payment_no}",
            key => 'shop-web', secret => 'shop-web-secret')->{status}, 200,
   'shop key reads');
denied($gw->api(POST => "/v1/payments/$small->{json}{payment_no}/refunds",
                key => 'shop-web', secret => 'shop-web-secret',
                idempotency_key => 'r1',
                json => { refund_no => 'R1', amount => 1 }),
       'shop key refunds', qr/may only create and read/);

# viewer: reads; the built-in floor keeps it from writing anyway
is($gw->api(GET => "/v1/payments/$ok->{json}{payment_no}", key => 'viewer')
   ->{status}, 200, 'viewer reads');
denied(create('viewer'), 'viewer creates');

# admin: everything
is($gw->api(GET => "/v1/payments/$ok->{json}{payment_no}", key => 'ops')
   ->{status}, 200, 'admin reads any merchant');

is($gw->count_rows('payments'), 2, 'denied requests wrote nothing');

# ---- nginx -t reports file:line ------------------------------------------

sub bad_policy {
    my ($text, $re, $name) = @_;
    my $f = "$dir/bad.conf";
    open my $fh, '>', $f or die $!;
    print $fh $text;
    close $fh;
    my ($rc, $out) = $gw->test_config(conf(policy => $f));
    isnt($rc, 0, "$name: nginx -t fails");
    like($out, $re, "$name: says where and why");
}

bad_policy("allow role=admin\npermit role=merchant\n",
           qr/"allow" or "deny", not "permit", in \Q$dir\E\/bad\.conf:2/,
           'unknown verb');
bad_policy("# c\n\nallow role=owner\n", qr/unknown role in "role=owner" in .*bad\.conf:3/,
           'unknown role');
bad_policy("allow api=pay\n", qr/unknown api in "api=pay" in .*:1/, 'unknown api');
bad_policy("deny amount>lots\n", qr/invalid amount in "amount>lots"/, 'bad amount');
bad_policy("deny reason=\"open\n", qr/unterminated reason in .*:1/,
           'unterminated reason');
bad_policy("# nothing\n", qr/has no rules/, 'an empty policy');

# ---- reload to a new policy under load: nothing fails -------------------------

{
    # keep a stream of GETs going while the policy is reloaded twice
    my $pno = $ok->{json}{payment_no};
    my $pid = fork // die;
    if (!$pid) {
        my $fail = 0;
        for (1 .. 150) {
            my $r = $gw->api(GET => "/v1/payments/$pno");
            $fail++ if $r->{status} != 200;
        }
        exit($fail ? 1 : 0);
    }

    my $strict = "$dir/strict.conf";
    open my $sf, '>', $strict or die $!;
    print $sf "allow api=get_payment,find_payment,get_refund\n"
            . "deny reason=\"read-only during maintenance\"\n";
    close $sf;
    $gw->reload(conf(policy => $strict));

    denied(create('demo'), 'after reload: the new policy applies',
           qr/read-only during maintenance/);

    $gw->reload(conf());
    is(create('demo')->{status}, 201, 'and reloading back restores it');

    waitpid $pid, 0;
    is($? >> 8, 0, '150 reads during two reloads: none failed');
}

done_testing;
