#!/usr/bin/perl
# What the fuzzers of t/fuzz/ found (make fuzz), sent through the real
# gateway where the input is reachable: each is refused with a clear
# error, nothing is written, and the gateway goes on serving.  The
# memory errors themselves are proven by `make fuzz`, which replays the
# crashing inputs kept in t/fuzz/corpus/ under ASan before it fuzzes.
use strict;
use warnings;

use Digest::SHA qw(sha256_hex);
use IO::Socket::INET;
use Test::More;

use lib 't/lib';
use PayGW::Gateway;

my $gw = PayGW::Gateway->start;

sub error_is {
    my ($r, $status, $code, $message, $name) = @_;
    subtest $name => sub {
        is($r->{status}, $status, "status $status") or diag($r->{body});
        is(PayGW::Gateway::err_code($r), $code, "code $code");
        like($r->{json}{error}{message} // '', $message, 'the message says why');
    };
}

# a raw SET: the record is binary, redis-cli's arguments are text
sub redis_set {
    my ($key, $value) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                  PeerPort => $gw->redis->port_for($key))
        or die "redis: $!";
    print $s join '', "*3\r\n", map { '$' . length($_) . "\r\n$_\r\n" } 'SET', $key, $value;
    my $ok = <$s>;
    close $s;
    return $ok // '';
}

# ---- create: a top-level number beyond int64 (fuzz_create) -----------------

{
    my $before = $gw->snapshot;
    my $r = $gw->api(POST => '/v1/payments', body => '9' x 64,
                     idempotency_key => $gw->fresh_key('overflow'));
    error_is($r, 400, 'invalid_request', qr/malformed JSON body/,
             'a body that is only an overlong number');
    $gw->nothing_written($before, 'overlong number');

    $r = $gw->api(POST => '/v1/payments', body => '{"amount":' . ('9' x 30) . '}',
                  idempotency_key => $gw->fresh_key('overflow'));
    error_is($r, 400, 'invalid_request', qr/^amount is out of range/,
             'an overlong amount is still named');
}

# ---- create: an overflow the field scan cannot name (fuzz_create) ----------
# It used to quote whatever lay between two quotes, a NUL byte included:
# ":2\u0000, is out of range".

{
    my $body = qq({"bamo":2\0,"cu]rrency*:"9999999999999999999Cno"2d});
    my $before = $gw->snapshot;
    my $r = $gw->api(POST => '/v1/payments', body => $body,
                     idempotency_key => $gw->fresh_key('overflow'));
    error_is($r, 400, 'invalid_request', qr/^malformed JSON body: /,
             'no field named from stray bytes');
    unlike($r->{json}{error}{message} // '', qr/\x00/, 'no NUL in the message');
    $gw->nothing_written($before, 'stray bytes');
}

# ---- idempotency: a record declaring a 2^31-element array (fuzz_resp) ------

{
    my $key = $gw->fresh_key('hostile');
    my $record = "\x82\xa1s\xa1d\xa1f\xdd\x7f\xff\xff\xff" . "\x01" x 8;
    like(redis_set("pg:{M100}:i:" . sha256_hex($key), $record), qr/^\+OK/,
         'a hostile record is in Redis');

    my $before = $gw->snapshot;
    my $r = $gw->api(POST => '/v1/payments', json => $gw->payment_body,
                     idempotency_key => $key);
    error_is($r, 503, 'backend_unavailable', qr/redis answered unexpectedly/,
             'the create under that key is refused');
    $gw->nothing_written($before, 'hostile record');

    my $ok = $gw->create;
    is($ok->{status}, 201, 'the gateway goes on serving') or diag($ok->{body});
}

done_testing;
