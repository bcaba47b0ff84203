#!/usr/bin/perl
# Merchant authentication (SPEC §2), roles and routing (SPEC §3), black box:
# PAYGW-HMAC-SHA256 signatures, the timestamp window, the nonce replay
# window, the error shape and X-Request-Id, what each role may do, 404/405.
use strict;
use warnings;

use Digest::SHA qw(hmac_sha256_hex sha256_hex);
use Test::More;
use Time::HiRes qw(time);

use lib 't/lib';
use PayGW::Gateway;
use PayGW::Test qw(http sign_request);

# Authentication needs no directive of its own: the gateway runs the
# harness's default http{} configuration, $PayGW::Gateway::DEFAULT_HTTP
# (t/lib/PayGW/Gateway.pm), with the demo keys conf/demo/keys.conf.
my $gw = PayGW::Gateway->start;

my $n = 0;
sub nonce { sprintf 'auth-test-%d-%06d-%s', $$, ++$n, join '', map { ('a' .. 'z')[rand 26] } 1 .. 8 }

# ---- helpers ------------------------------------------------------------------

# The SPEC §3 error shape: exactly {"error":{"code","message","request_id"}}
# (plus documented extras), JSON, with an X-Request-Id header.
sub is_error {
    my ($r, $status, $code, $msg, $name) = @_;
    subtest $name => sub {
        is($r->{status}, $status, "status $status") or diag($r->{body});
        like($r->{headers}{'content-type'} // '', qr{^application/json}, 'JSON');
        my $j = $r->{json};
        ok(ref $j eq 'HASH' && ref $j->{error} eq 'HASH', 'an error object')
            or return diag($r->{body});
        is_deeply([sort keys %$j], ['error'], 'only "error" at the top');
        is_deeply([sort keys %{$j->{error}}], [qw(code message request_id)],
                  'code, message, request_id');
        is($j->{error}{code}, $code, "code $code");
        if (ref $msg eq 'Regexp') {
            like($j->{error}{message}, $msg, 'message');
        } elsif (defined $msg) {
            is($j->{error}{message}, $msg, 'message');
        }
        like($j->{error}{request_id} // '', qr/^\S+$/, 'request_id');
        like($r->{headers}{'x-request-id'} // '', qr/^\S+$/, 'X-Request-Id');
    };
}

sub auth_header {
    my (%p) = @_;
    return 'PAYGW-HMAC-SHA256 ' . join ',', map { "$_=$p{$_}" }
        grep { defined $p{$_} } qw(key ts nonce sig);
}

my $URL = $gw->url('/v1/payments/PNOSUCHPAYMENT');
my $ZERO = '0' x 64;

# A request that passes authentication reaches the endpoint: 404 not_found
# for a payment that does not exist (anything but 401 means "authenticated").
sub authenticated_ok {
    my ($r, $name) = @_;
    is($r->{status}, 404, "$name: authenticated (404 for a missing payment)")
        or diag($r->{body});
}

# ---- missing and malformed Authorization ------------------------------------

is_error(http(GET => $URL), 401, 'unauthenticated',
         'missing Authorization header', 'no Authorization header');

{
    my $ts = int time;
    my %ok = (key => 'demo', ts => $ts, nonce => 'abcdefghijklmnop', sig => $ZERO);
    my @bad = (
        ['Basic scheme', 'Basic ZGVtbzpkZW1vLXNlY3JldA=='],
        ['Bearer scheme', 'Bearer demo-secret'],
        ['scheme only', 'PAYGW-HMAC-SHA256'],
        ['no parameters', 'PAYGW-HMAC-SHA256 '],
        ['sig missing', auth_header(%ok, sig => undef)],
        ['nonce missing', auth_header(%ok, nonce => undef)],
        ['ts missing', auth_header(%ok, ts => undef)],
        ['key missing', auth_header(%ok, key => undef)],
        ['ts not a number', auth_header(%ok, ts => 'yesterday')],
        ['nonce of 15 chars', auth_header(%ok, nonce => 'a' x 15)],
        ['nonce of 65 chars', auth_header(%ok, nonce => 'a' x 65)],
        ['nonce with "."', auth_header(%ok, nonce => 'abcdefghijklmno.')],
        ['nonce with "+"', auth_header(%ok, nonce => 'abcdefghijklmno+')],
        ['sig upper-case hex', auth_header(%ok, sig => 'A' x 64)],
        ['sig of 63 hex digits', auth_header(%ok, sig => '0' x 63)],
        ['sig of 65 hex digits', auth_header(%ok, sig => '0' x 65)],
        ['sig not hex', auth_header(%ok, sig => 'g' x 64)],
        ['a parameter twice', auth_header(%ok) . ',key=ops'],
        ['an unknown parameter', auth_header(%ok) . ',realm=x'],
    );
    for my $b (@bad) {
        my $r = http(GET => $URL, headers => {Authorization => $b->[1]});
        is_error($r, 401, 'unauthenticated', qr/^malformed Authorization header/,
                 "malformed: $b->[0]");
    }
}

# ---- nonce charset and length bounds -----------------------------------------

authenticated_ok($gw->api(GET => '/v1/payments/PNOSUCHPAYMENT', nonce => 'aB3_-' . 'x' x 11),
                 'nonce of 16 chars of [A-Za-z0-9_-]');
authenticated_ok($gw->api(GET => '/v1/payments/PNOSUCHPAYMENT', nonce => 'Z' x 64),
                 'nonce of 64 chars');

# ---- unknown key, stale timestamp -------------------------------------------

is_error($gw->api(GET => '/v1/payments/PNOSUCHPAYMENT', key => 'nobody', secret => 'whatever1'),
         401, 'unauthenticated', 'unknown key', 'unknown key id');

for my $skew (-310, 310, -3600, 86400) {
    is_error($gw->api(GET => '/v1/payments/PNOSUCHPAYMENT', ts => time + $skew),
             401, 'unauthenticated',
             'timestamp is more than 300 seconds away from server time',
             "ts ${skew}s away is rejected");
}
for my $skew (-290, 290) {
    authenticated_ok($gw->api(GET => '/v1/payments/PNOSUCHPAYMENT', ts => time + $skew),
                     "ts ${skew}s away is accepted");
}

# ---- signatures ---------------------------------------------------------------

# A bad-signature answer never gives away the expected value or the secret.
sub no_leak {
    my ($r, $expected, $name) = @_;
    my $all = $r->{body} . join "\n", map { "$_: $r->{headers}{$_}" } keys %{$r->{headers}};
    unlike($all, qr/\Q$expected\E/, "$name: expected signature not revealed");
    unlike($all, qr/demo-secret/, "$name: secret not revealed");
    unlike($all, qr/[0-9a-f]{64}/, "$name: no 64-hex value at all");
}

{
    my $path = '/v1/payments/PNOSUCHPAYMENT';
    my $ts = int time;
    my $nonce = nonce();
    my $expected = hmac_sha256_hex(join("\n", 'GET', $path, $ts, $nonce, sha256_hex('')),
                                   'demo-secret');
    my $wrong = hmac_sha256_hex(join("\n", 'GET', $path, $ts, $nonce, sha256_hex('')),
                                'not-the-secret');
    my $r = http(GET => $gw->url($path), headers => {Authorization =>
        auth_header(key => 'demo', ts => $ts, nonce => $nonce, sig => $wrong)});
    is_error($r, 401, 'unauthenticated', 'bad signature', 'signed with a wrong secret');
    no_leak($r, $expected, 'wrong secret');

    # the right signature with one bit flipped
    (my $flip = $expected) =~ s/^(.)/$1 eq '0' ? '1' : '0'/e;
    $r = http(GET => $gw->url($path), headers => {Authorization =>
        auth_header(key => 'demo', ts => $ts, nonce => nonce(), sig => $flip)});
    is_error($r, 401, 'unauthenticated', 'bad signature', 'a signature off by one digit');
    no_leak($r, $expected, 'off by one digit');

    # the viewer's secret does not sign for the demo key
    $r = $gw->api(GET => $path, key => 'demo', secret => 'viewer-secret');
    is_error($r, 401, 'unauthenticated', 'bad signature', "another key's secret");
}

# Everything in string_to_sign is covered: method, path, query, ts, nonce, body.
{
    my $before = $gw->snapshot;
    my $body = '{"business_no":"AUTH-1","amount":100,"currency":"CNY","channel":"bank_card",'
             . '"subject":"x","card":{"number":"4242424242424242","exp_month":12,'
             . '"exp_year":2030,"cvc":"123"}}';
    my $ts = int time;
    my %h = ('Content-Type' => 'application/json', 'Idempotency-Key' => 'auth-tamper');

    my $nonce = nonce();
    my $sig_other_body = sign_request('demo', 'demo-secret', 'POST', '/v1/payments',
                                      $body =~ s/"amount":100/"amount":1/r, nonce => $nonce);
    is_error(http(POST => $gw->url('/v1/payments'), body => $body,
                  headers => {%h, Authorization => $sig_other_body}),
             401, 'unauthenticated', 'bad signature', 'body changed after signing');

    my $sig_get = sign_request('demo', 'demo-secret', 'GET', '/v1/payments', $body);
    is_error(http(POST => $gw->url('/v1/payments'), body => $body,
                  headers => {%h, Authorization => $sig_get}),
             401, 'unauthenticated', 'bad signature', 'method changed after signing');

    my $sig_path = sign_request('demo', 'demo-secret', 'POST', '/v1/payments/P1/close', $body);
    is_error(http(POST => $gw->url('/v1/payments'), body => $body,
                  headers => {%h, Authorization => $sig_path}),
             401, 'unauthenticated', 'bad signature', 'path changed after signing');

    my $sig_ts = sign_request('demo', 'demo-secret', 'POST', '/v1/payments', $body,
                              ts => $ts - 1, nonce => 'fixed-nonce-for-ts-check');
    (my $moved_ts = $sig_ts) =~ s/ts=\d+/ts=$ts/;
    is_error(http(POST => $gw->url('/v1/payments'), body => $body,
                  headers => {%h, Authorization => $moved_ts}),
             401, 'unauthenticated', 'bad signature', 'ts changed after signing');

    my $sig_nonce = sign_request('demo', 'demo-secret', 'POST', '/v1/payments', $body,
                                 nonce => 'nonce-original-0001');
    (my $moved_nonce = $sig_nonce) =~ s/nonce=nonce-original-0001/nonce=nonce-original-0002/;
    is_error(http(POST => $gw->url('/v1/payments'), body => $body,
                  headers => {%h, Authorization => $moved_nonce}),
             401, 'unauthenticated', 'bad signature', 'nonce changed after signing');

    $gw->nothing_written($before, 'tampered POSTs');

    # the query string is part of PATH_WITH_QUERY
    my $sig_noq = sign_request('demo', 'demo-secret', 'GET', '/v1/payments', '');
    is_error(http(GET => $gw->url('/v1/payments?business_no=AUTH-1'),
                  headers => {Authorization => $sig_noq}),
             401, 'unauthenticated', 'bad signature', 'query string not signed');
    my $r = $gw->api(GET => '/v1/payments?business_no=AUTH-NONE');
    is($r->{status}, 404, 'query string signed: authenticated') or diag($r->{body});
}

# Authentication comes first: an unauthenticated POST with an invalid body
# and no Idempotency-Key is a 401, and nothing happens.
{
    my $before = $gw->snapshot;
    is_error($gw->api(POST => '/v1/payments', json => {amount => 0}, secret => 'wrong-secret'),
             401, 'unauthenticated', 'bad signature',
             'bad signature beats validation and a missing Idempotency-Key');
    is_error(http(POST => $gw->url('/v1/payments'),
                  json => PayGW::Gateway->payment_body(), headers => {'Idempotency-Key' => 'auth-x'}),
             401, 'unauthenticated', 'missing Authorization header',
             'unsigned valid create is refused');
    $gw->nothing_written($before, 'unauthenticated POSTs');
}

# ---- nonce replay window --------------------------------------------------------

{
    my $nonce = 'replay-nonce-' . $$ . '-abcdef';
    authenticated_ok($gw->api(GET => '/v1/payments/PNOSUCHPAYMENT', nonce => $nonce),
                     'first use of a nonce');
    is_error($gw->api(GET => '/v1/payments/PNOSUCHPAYMENT', nonce => $nonce),
             401, 'unauthenticated', 'nonce already used (replay)', 'the same request replayed');
    is_error($gw->api(GET => '/v1/payments?business_no=OTHER', nonce => $nonce),
             401, 'unauthenticated', 'nonce already used (replay)',
             'the nonce reused for another request');

    my $ttl = $gw->redis->cli('PTTL', "pg:{M100}:n:demo:$nonce");
    ok($ttl =~ /^\d+$/ && $ttl > 590_000 && $ttl <= 600_000,
       'nonce remembered for 10 minutes (PTTL ~ 600 s)') or diag("PTTL: $ttl");

    # a replayed create does not create a second payment
    my $body = PayGW::Gateway->payment_body();
    my $pn = nonce();
    my $r = $gw->api(POST => '/v1/payments', json => $body, idempotency_key => 'replay-create',
                     nonce => $pn);
    is($r->{status}, 201, 'create with a fresh nonce') or diag($r->{body});
    my $before = $gw->snapshot;
    is_error($gw->api(POST => '/v1/payments', json => $body, idempotency_key => 'replay-create-2',
                      nonce => $pn),
             401, 'unauthenticated', 'nonce already used (replay)', 'replayed create');
    $gw->nothing_written($before, 'replayed create');
}

# ---- X-Request-Id --------------------------------------------------------------

{
    my @r = (
        ['401', http(GET => $URL)],
        ['404', $gw->api(GET => '/v1/payments/PNOSUCHPAYMENT')],
        ['405', $gw->api(DELETE => '/v1/payments')],
        ['403', $gw->api(POST => '/v1/payments', key => 'viewer', idempotency_key => 'rid',
                         json => PayGW::Gateway->payment_body())],
        ['400', $gw->api(POST => '/v1/payments', idempotency_key => 'rid', json => {amount => 0})],
    );
    my %ids;
    for my $x (@r) {
        my ($what, $r) = @$x;
        my $hdr = $r->{headers}{'x-request-id'} // '';
        my $body_id = ($r->{json} && $r->{json}{error}) ? $r->{json}{error}{request_id} // '' : '';
        $ids{$hdr}++;
        # the id a merchant quotes from the error body must be the one the
        # response (and the logs) carry, or support cannot find the request
        is($body_id, $hdr, "$what: error.request_id equals the X-Request-Id header");
    }
    is(scalar(keys %ids), scalar(@r), 'every response has its own X-Request-Id');
    my $ok = http(GET => $gw->url('/healthz'));
    like($ok->{headers}{'x-request-id'} // '', qr/^\S+$/, 'a success carries X-Request-Id too');
}

# ---- roles -------------------------------------------------------------------------

my $own = $gw->api(POST => '/v1/payments', json => PayGW::Gateway->payment_body(business_no => 'AUTH-OWN'),
                   idempotency_key => 'auth-own');
is($own->{status}, 201, 'merchant key creates a payment') or diag($own->{body});
my $own_no = $own->{json}{payment_no} // 'none';
like($own->{headers}{'x-request-id'} // '', qr/^\S+$/, '201 carries X-Request-Id');

# a payment of another merchant, M200, straight into the database
$gw->db->sql("INSERT INTO payments (payment_no, merchant_id, business_no, amount, currency, "
           . "channel, status) VALUES ('POTHERMERCHANT000001', 'M200', 'ORD-M200-1', 500, "
           . "'CNY', 'bank_card', 'succeeded')");

{
    my $r = $gw->api(GET => "/v1/payments/$own_no", key => 'viewer');
    is($r->{status}, 200, 'viewer reads its merchant\'s payment') or diag($r->{body});
    is($r->{json}{payment_no}, $own_no, 'viewer: the right payment');
    $r = $gw->api(GET => '/v1/payments?business_no=AUTH-OWN', key => 'viewer');
    is($r->{json}{payment_no}, $own_no, 'viewer finds it by business_no');

    my $before = $gw->snapshot;
    is_error($gw->api(POST => '/v1/payments', key => 'viewer', idempotency_key => 'viewer-1',
                      json => PayGW::Gateway->payment_body()),
             403, 'forbidden', undef, 'viewer cannot create a payment');
    is_error($gw->api(POST => "/v1/payments/$own_no/close", key => 'viewer',
                      idempotency_key => 'viewer-2'),
             403, 'forbidden', undef, 'viewer cannot close a payment');
    is_error($gw->api(POST => "/v1/payments/$own_no/refunds", key => 'viewer',
                      idempotency_key => 'viewer-3', json => {refund_no => 'R-V', amount => 1}),
             403, 'forbidden', undef, 'viewer cannot refund');
    is_error($gw->api(POST => '/v1/payments', key => 'ops', idempotency_key => 'ops-1',
                      json => PayGW::Gateway->payment_body()),
             403, 'forbidden', undef, 'admin key (merchant "*") cannot create a payment');
    $gw->nothing_written($before, 'forbidden POSTs');
    is($gw->count_rows('refunds'), 0, 'forbidden refund wrote no refund');
    my $st = $gw->api(GET => "/v1/payments/$own_no")->{json}{status} // '';
    is($st, 'succeeded', 'forbidden close left the payment as it was');
}

{
    is_error($gw->api(GET => '/v1/payments/POTHERMERCHANT000001'), 404, 'not_found', undef,
             "merchant cannot read another merchant's payment (404, no hint it exists)");
    is_error($gw->api(GET => '/v1/payments?business_no=ORD-M200-1'), 404, 'not_found', undef,
             "merchant cannot find another merchant's payment by business_no");
    is_error($gw->api(GET => '/v1/payments/POTHERMERCHANT000001', key => 'viewer'), 404,
             'not_found', undef, "viewer cannot read another merchant's payment");
    is_error($gw->api(POST => '/v1/payments/POTHERMERCHANT000001/close',
                      idempotency_key => 'close-other'),
             404, 'not_found', undef, "merchant cannot close another merchant's payment");
    is($gw->db->sql("SELECT status FROM payments WHERE payment_no = 'POTHERMERCHANT000001'"),
       "succeeded\n", "the other merchant's payment is untouched");

    my $r = $gw->api(GET => '/v1/payments/POTHERMERCHANT000001', key => 'ops');
    is($r->{status}, 200, 'admin reads any merchant\'s payment') or diag($r->{body});
    is($r->{json}{merchant_id}, 'M200', 'admin: merchant M200');
    $r = $gw->api(GET => "/v1/payments/$own_no", key => 'ops');
    is($r->{status}, 200, 'admin reads M100\'s payment');
    is($r->{json}{merchant_id}, 'M100', 'admin: merchant M100');

    # a business_no two merchants use: the admin names the merchant
    $gw->db->sql("INSERT INTO payments (payment_no, merchant_id, business_no, amount, "
                 . "currency, channel, status) VALUES ('POTHERMERCHANT000002', 'M200', "
                 . "'AUTH-OWN', 700, 'CNY', 'bank_card', 'succeeded')");
    is_error($gw->api(GET => '/v1/payments?business_no=AUTH-OWN', key => 'ops'),
             409, 'ambiguous', qr/merchant_id=/,
             'admin lookup of a business_no two merchants use: 409, not an arbitrary row');
    $r = $gw->api(GET => '/v1/payments?business_no=AUTH-OWN&merchant_id=M200', key => 'ops');
    is_deeply([$r->{status}, $r->{json}{payment_no}], [200, 'POTHERMERCHANT000002'],
              '... with merchant_id=M200: M200\'s payment');
    $r = $gw->api(GET => '/v1/payments?business_no=AUTH-OWN&merchant_id=M100', key => 'ops');
    is_deeply([$r->{status}, $r->{json}{payment_no}], [200, $own_no],
              '... with merchant_id=M100: M100\'s payment');
    $r = $gw->api(GET => '/v1/payments?business_no=AUTH-OWN&merchant_id=M200');
    is($r->{json}{payment_no}, $own_no, 'a merchant key ignores merchant_id=: its own');
}

# ---- routing -------------------------------------------------------------------------

for my $p ('/v1/nothing', '/v1/', '/v1/payments/', "/v1/payments/$own_no/x/y",
           '/v1/refund/R1', '/v1/paymentsX') {
    is_error($gw->api(GET => $p), 404, 'not_found', undef, "GET $p: unknown endpoint");
}
is_error(http(GET => $gw->url('/v1/nothing')), 404, 'not_found', undef,
         'unknown endpoint without credentials: JSON 404');

for my $m (['DELETE', '/v1/payments'], ['PUT', "/v1/payments/$own_no"],
           ['PATCH', "/v1/payments/$own_no"], ['GET', "/v1/payments/$own_no/close"],
           ['DELETE', "/v1/payments/$own_no"], ['PUT', '/v1/refunds/R1']) {
    my $r = $gw->api($m->[0] => $m->[1], idempotency_key => 'route');
    is_error($r, 405, 'method_not_allowed', undef, "$m->[0] $m->[1]: wrong method");
}
{
    # RFC 9110 §15.5.6: a 405 response MUST carry Allow
    my $r = $gw->api(DELETE => "/v1/payments/$own_no");
    like($r->{headers}{allow} // '', qr/\bGET\b/, '405 names the allowed methods in Allow');
    is($gw->api(GET => "/v1/payments/$own_no")->{json}{status}, 'succeeded',
       'DELETE changed nothing');
}

# ---- nothing secret in the logs -------------------------------------------------------

{
    my $logs = $gw->ngx->error_log . $gw->ngx->access_log;
    unlike($logs, qr/(?:demo|viewer|ops)-secret/, 'no secret in the nginx logs');
    unlike($logs, qr/4242424242424242/, 'no card number in the nginx logs');
}

# SPEC 2: string_to_sign holds ts as sent.  A ts with a leading zero is the
# same second; it is signed (and verified) as its bytes, not re-printed.
{
    my $ts = '0' . int(time);
    my $nonce = 'rawts' . int(rand(1e9)) . 'abcdefgh';
    my $sts = join "\n", 'GET', '/v1/payments/PNOSUCH0000000000001', $ts, $nonce,
                         sha256_hex('');
    my $auth = "PAYGW-HMAC-SHA256 key=demo,ts=$ts,nonce=$nonce,sig="
               . hmac_sha256_hex($sts, 'demo-secret');
    my $r = http(GET => $gw->url('/v1/payments/PNOSUCH0000000000001'),
                 headers => {Authorization => $auth});
    is($r->{status}, 404, 'ts "0<seconds>" signed as sent: authenticated (404 not_found)')
        or diag($r->{body});
}

done_testing;
