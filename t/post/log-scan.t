#!/usr/bin/perl
# After the whole suite: every nginx log the tests wrote (kept by the
# harness under build/test-logs/) is searched for what must never be
# logged: card numbers the tests used, CVC fields, secrets, request
# signatures and full Authorization headers.  `make test` runs this last.
use strict;
use warnings;

use Test::More;

use PayGW::Test qw(repo_root);

my $dir = $ENV{PAYGW_LOG_ARCHIVE} // repo_root() . '/build/test-logs';
my @logs = glob("$dir/*.log");

plan skip_all => "no archived logs in $dir (run the suite first)" unless @logs;

# test card numbers used across the suite, and every secret of conf/demo
my @pans = qw(4242424242424242 4000000000000002 4000000000009995
              4000000000000077 5555555555554444);
my @secrets = qw(demo-secret viewer-secret ops-secret shop-web-secret
                 acq-demo-secret risk-card-key-for-tests
                 demo-card-fingerprint-key-change-me);

my (%hits, $bytes);

for my $log (@logs) {
    open my $fh, '<', $log or next;
    while (my $line = <$fh>) {
        $bytes += length $line;
        for my $p (@pans) {
            push @{ $hits{"card number $p"} }, "$log: $line"
                if index($line, $p) >= 0;
        }
        for my $s (@secrets) {
            push @{ $hits{"secret $s"} }, "$log: $line"
                if index($line, $s) >= 0;
        }
        push @{ $hits{'a "cvc" field'} }, "$log: $line" if $line =~ /"cvc"/i;
        push @{ $hits{'a request signature'} }, "$log: $line"
            if $line =~ /sig=[0-9a-f]{64}/;
        push @{ $hits{'a full Authorization header'} }, "$log: $line"
            if $line =~ /PAYGW-HMAC-SHA256 key=[^,\s"]+,ts=/;
        push @{ $hits{'a provider signature'} }, "$log: $line"
            if $line =~ /X-Acquirer-Signature: [0-9a-f]{64}/i;
    }
}

note(sprintf '%d logs, %.1f MB scanned', scalar @logs, ($bytes // 0) / 1e6);

for my $what ('a full Authorization header', 'a request signature',
              'a provider signature', 'a "cvc" field',
              (map { "card number $_" } @pans), (map { "secret $_" } @secrets))
{
    my $h = $hits{$what} // [];
    is(scalar @$h, 0, "no log holds $what") or diag(substr $h->[0], 0, 300);
}

done_testing;
