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
my $keys = "$dir/keys.conf";
open my $fh, '>', $keys or die $!;
print $fh <<'KEYS';
demo       demo-secret       M100  merchant
viewer     viewer-secret     M100  viewer
ops        ops-secret        *     admin
shop-web   shop-web-secret   M100  merchant
KEYS
close $fh;

my $policy = repo_root() . '/conf/demo/policy.conf';

my $gw = PayGW::Gateway->start(extra_http => "paygw_policy $policy;");
my $conf = $gw->_http_conf(extra_http => "paygw_policy $policy;");
$conf =~ s{paygw_keys\s+\S+;}{paygw_keys $keys;};
$gw->ngx->reload(http => $conf);

sub create {
    my ($key, %over) = @_;
    return $gw->api(POST => '/v1/payments', key => $key,
                    secret => "$key-secret",
                    idempotency_key => 'p-' . rand(),
                    json => PayGW::Gateway->payment_body(%over));
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
    my $c = $gw->_http_conf(extra_http => "paygw_policy $f;");
    my ($rc, $out) = $gw->ngx->test_config(http => $c);
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
    my $c = $gw->_http_conf(extra_http => "paygw_policy $strict;");
    $c =~ s{paygw_keys\s+\S+;}{paygw_keys $keys;};
    $gw->ngx->reload(http => $c);

    denied(create('demo'), 'after reload: the new policy applies',
           qr/read-only during maintenance/);

    $gw->ngx->reload(http => $conf);
    is(create('demo')->{status}, 201, 'and reloading back restores it');

    waitpid $pid, 0;
    is($? >> 8, 0, '150 reads during two reloads: none failed');
}

done_testing;
