#!/usr/bin/perl
# Hostile clients (issue 16): crafted requests, with and without a valid
# merchant key, never crash a worker, never get past a failed check, and
# always get a JSON error with X-Request-Id.  Every refusal leaves the
# database, the outbox and the provider exactly as they were, and a
# refused request's nonce is spent all the same.
use strict;
use warnings;
use utf8;

use Encode ();
use IO::Socket::IP;
use JSON::PP ();
use Test::More;

use lib 't/lib';
use PayGW::Gateway;
use PayGW::Test qw(http http_raw free_port sign_request);

# A second server on its own port: a tight limit_req and short client
# timeouts, to see the errors nginx answers itself in the API's shape.
my $lport = free_port();

my $gw = PayGW::Gateway->start(workers => 2, extra_http => <<"CONF");
    limit_req_zone \$paygw_key_id zone=hostile:1m rate=1r/m;

    server {
        listen 127.0.0.1:$lport;
        client_body_timeout 1s;
        error_page 400 405 408 413 414 429 494 501 505 /_paygw/error;
        location = /_paygw/error { internal; paygw_error; }
        location = /_paygw/redis { internal; paygw_redis_pass paygw_redis; }
        location = /_paygw/mysql { internal; paygw_mysql_pass main; }
        location /v1/ {
            paygw_api;
            limit_req zone=hostile nodelay;
            limit_req_status 429;
        }
    }
CONF

my $JS = JSON::PP->new->canonical;
my $port = $gw->ngx->port;

# ---- what must not change --------------------------------------------------

sub rows { $gw->count_rows($_[0]) }

sub charges {
    my $n = 0;
    $n += $_->{requests} for @{ $gw->sim->charges->{charges} };
    return $n;
}

sub snapshot {
    return join ' ', map { "$_=" . rows($_) } qw(payments refunds outbox_events);
}

sub crashes { scalar(() = $gw->ngx->error_log =~ /exited on signal/g) }

# json_error(RESPONSE, STATUS, CODE): the answer is the API's error shape.
sub json_error {
    my ($r, $status, $code, $name) = @_;
    # strict: the body must be valid UTF-8 JSON
    $r->{json} = eval { JSON::PP->new->utf8->decode($r->{body} // '') };
    my $e = ref $r->{json} eq 'HASH' ? $r->{json}{error} : undef;
    return subtest $name => sub {
        is($r->{status}, $status, "status $status")
            or diag(substr($r->{body} // '', 0, 300));
        like($r->{headers}{'content-type'} // '', qr{^application/json},
             'JSON');
        like($r->{headers}{'x-request-id'} // '', qr/^[0-9a-f]{32}$/,
             'X-Request-Id');
        ok(ref $e eq 'HASH', 'an error object') or return;
        is($e->{code}, $code, "code $code") if defined $code;
        is($e->{request_id}, $r->{headers}{'x-request-id'},
           'request_id is the header');
        cmp_ok(length($e->{message} // ''), '<=', 400,
               'the message quotes at most a short excerpt');
    };
}

# The same for raw bytes sent over a socket.
sub parse_raw {
    my ($raw) = @_;
    my ($head, $body) = split /\r\n\r\n/, $raw, 2;
    my ($status) = ($head // '') =~ m{^HTTP/1\.[01] (\d{3})};
    my %h;
    for (split /\r\n/, $head // '') {
        $h{lc $1} = $2 if /^([^:]+):\s*(.*)$/;
    }
    my $json = eval { JSON::PP->new->utf8->decode($body // '') };
    return {status => $status // 0, headers => \%h, body => $body,
            json => $json};
}

sub raw { parse_raw(http_raw($_[1] // $port, $_[0], timeout => $_[2] // 5)) }

# raw_request(METHOD, PATH, {HEADER => BYTES}, BODY): headers as bytes, which
# HTTP::Tiny would refuse to send.
sub raw_request {
    my ($method, $path, $h, $body) = @_;
    $body //= '';
    my $text = "$method $path HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        . join('', map { "$_: $h->{$_}\r\n" } sort keys %$h)
        . (length $body ? 'Content-Length: ' . length($body) . "\r\n" : '')
        . "\r\n$body";
    return raw($text);
}

my $seq = 0;
sub key { "hostile-$$-" . ++$seq }

sub create {
    my (%over) = @_;
    my $r = $gw->api(POST => '/v1/payments', idempotency_key => key(),
                     json => PayGW::Gateway->payment_body(%over));
    die "create: $r->{status} $r->{body}\n" unless $r->{status} =~ /^20[12]$/;
    return $r->{json};
}

sub status_of {
    my ($no) = @_;
    return $gw->api(GET => "/v1/payments/$no")->{json}{status};
}

# utf8 text -> bytes on the wire
sub b { Encode::encode('UTF-8', $_[0]) }

my $euro = "\x{20ac}" x 680;       # ~2 KB of 3-byte characters
my $smile = "\x{1f600}" x 510;     # ~2 KB of 4-byte characters

# ---- 1. the reproductions of the issue ------------------------------------

{
    my $rows = rows('payments');
    my $events = rows('outbox_events');
    my $c0 = charges();

    my $r = $gw->api(POST => '/v1/payments', idempotency_key => key(),
        body => b(qq({"business_no":"C1","amount":1,"currency":"CNY",)
                  . qq("channel":"alipay","$euro":1})));
    json_error($r, 400, 'invalid_request', 'overlong multi-byte field name');
    like($r->{json}{error}{message}, qr/^unknown field "\x{20ac}+\.\.\."$/,
         'the field is quoted, cut on a character boundary');

    $r = $gw->api(POST => '/v1/payments', idempotency_key => key(),
        body => b(qq({"business_no":"C1","amount":1,"currency":"CNY",)
                  . qq("channel":"$smile"})));
    json_error($r, 400, 'invalid_request', 'overlong multi-byte channel');

    # a create the first two did not leave locked or half-done
    my $p = create(business_no => 'C1');
    is($p->{status}, 'succeeded', 'C1 itself is created normally afterwards');

    is(rows('payments'), $rows + 1,
       'one payment written, by the honest create only');
    cmp_ok(rows('outbox_events'), '>=', $events, 'events only for it');
    is(charges(), $c0 + 1, 'the acquirer saw one charge: the honest one');
    is(crashes(), 0, 'no worker died');
}

{
    # close with an overlong field, and no Idempotency-Key
    my $p = create(channel => 'alipay', currency => 'CNY');
    is($p->{status}, 'pending', 'a pending alipay payment');

    my $body = b(qq({"$euro":1}));
    my $path = "/v1/payments/$p->{payment_no}/close";
    my $auth = sign_request('demo', 'demo-secret', 'POST', $path, $body);
    my $events = rows('outbox_events');

    my $send = sub {
        http(POST => $gw->url($path), body => $body,
             headers => {Authorization => $auth,
                         'Content-Type' => 'application/json'});
    };

    my $r = $send->();
    json_error($r, 400, 'invalid_request', 'close with an overlong field');
    is(status_of($p->{payment_no}), 'pending', 'the payment is not closed');

    $r = $send->();
    json_error($r, 401, 'unauthenticated', 'the same signed bytes again');
    like($r->{json}{error}{message}, qr/replay/, '... refused as a replay');
    is(status_of($p->{payment_no}), 'pending', 'still pending');
    is(rows('outbox_events'), $events, 'no event written');
}

{
    # refund with an overlong field, of a succeeded payment
    my $p = create();
    my $refunds = rows('refunds');
    my $r = $gw->api(POST => "/v1/payments/$p->{payment_no}/refunds",
                     idempotency_key => key(),
                     body => b(qq({"refund_no":"R1","amount":1,"$euro":1})));
    json_error($r, 400, 'invalid_request', 'refund with an overlong field');
    is(rows('refunds'), $refunds, 'no refund row');
    my $now = $gw->api(GET => "/v1/payments/$p->{payment_no}")->{json};
    is($now->{refunded_amount}, 0, 'nothing refunded');
}

for my $path ('/v1/%FF', '/v1/payments/%C0%AF', '/v1/payments/%ED%A0%80',
              '/v1/payments/%F4%90%80%80', '/v1/payments?business_no=%FF',
              "/v1/payments?business_no=\xff")
{
    my $r = raw("GET $path HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    json_error($r, 400, 'invalid_request', "invalid UTF-8 in $path");
}

{
    my $r = raw("GET /v1/\xff HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    json_error($r, 400, 'invalid_request', 'a raw 0xff byte in the path');

    $r = http(GET => $gw->url('/v1/x' . ('%C3%A9' x 1000)));
    json_error($r, 404, 'not_found', 'a long valid path, unauthenticated');
    like($r->{json}{error}{message}, qr/\.\.\.$/, 'quoted path is cut');
}

# ---- 2. invalid UTF-8 and overlong strings in every field ----------------

my %create_field = (
    business_no => 'ORD-x', currency => 'CNY', channel => 'bank_card',
    subject => 'Tea', notify_url => 'https://example.com/n',
);

for my $f (sort keys %create_field) {
    my $before = snapshot();
    my $good = PayGW::Gateway->payment_body();
    $good->{$f} = "\x{1}MARK\x{1}";
    my $text = $JS->encode($good);

    (my $bad = $text) =~ s/\\u0001MARK\\u0001/\xff\xfe/;
    my $r = $gw->api(POST => '/v1/payments', idempotency_key => key(),
                     body => $bad);
    json_error($r, 400, 'invalid_request', "invalid UTF-8 in $f");

    ($bad = $text) =~ s/\\u0001MARK\\u0001/b($smile x 4)/e;
    $r = $gw->api(POST => '/v1/payments', idempotency_key => key(),
                  body => $bad);
    json_error($r, 400, 'invalid_request', "8 KB of 4-byte characters in $f");

    ($bad = $text) =~ s/\\u0001MARK\\u0001/\\ud800/;
    $r = $gw->api(POST => '/v1/payments', idempotency_key => key(),
                  body => $bad);
    json_error($r, 400, 'invalid_request', "a lone surrogate escape in $f");

    is(snapshot(), $before, "nothing written for the bad $f values");
}

for my $f (qw(number cvc)) {
    my $good = PayGW::Gateway->payment_body();
    $good->{card}{$f} = "\x{1}MARK\x{1}";
    (my $bad = $JS->encode($good)) =~ s/\\u0001MARK\\u0001/\xc0\xaf/;
    my $r = $gw->api(POST => '/v1/payments', idempotency_key => key(),
                     body => $bad);
    json_error($r, 400, 'invalid_request', "invalid UTF-8 in card.$f");
    unlike($r->{body}, qr/4242424242424242/, 'the card number is not echoed');
}

{
    my $good = PayGW::Gateway->payment_body(metadata => {k => "\x{1}MARK"});
    (my $bad = $JS->encode($good)) =~ s/\\u0001MARK/\xe2\x82/;
    my $r = $gw->api(POST => '/v1/payments', idempotency_key => key(),
                     body => $bad);
    json_error($r, 400, 'invalid_request', 'a cut character in metadata');

    $r = $gw->api(POST => '/v1/payments', idempotency_key => key(),
                  body => b($JS->encode(PayGW::Gateway->payment_body(
                      card => {number => '4242424242424242', exp_month => 12,
                               exp_year => 2030, cvc => '123',
                               $euro => 1}))));
    json_error($r, 400, 'invalid_request', 'an overlong key in card');
    like($r->{json}{error}{message}, qr/^unknown field "card\.\x{20ac}+/,
         '... named with its prefix');

    $r = $gw->api(POST => '/v1/payments', idempotency_key => key(),
                  body => qq({"\xff":1}));
    json_error($r, 400, 'invalid_request', 'an invalid UTF-8 key');
}

{
    my $p = create();
    my $no = $p->{payment_no};
    my $refunds = rows('refunds');

    for my $case (['refund_no', qq({"refund_no":"\xff","amount":1})],
                  ['reason', qq({"refund_no":"R2","amount":1,"reason":"\xed\xa0\x80"})],
                  ['long reason', b($JS->encode({refund_no => 'R3', amount => 1,
                                                 reason => $smile}))],
                  ['long refund_no', b($JS->encode({refund_no => $euro,
                                                    amount => 1}))])
    {
        my $r = $gw->api(POST => "/v1/payments/$no/refunds",
                         idempotency_key => key(), body => $case->[1]);
        json_error($r, 400, 'invalid_request', "refund: bad $case->[0]");
    }

    is(rows('refunds'), $refunds, 'no refund written');

    # path segments the module reads: payment_no, refund_no, notify channel
    for my $path ("/v1/payments/" . ('P' x 65), "/v1/refunds/" . ('R' x 65),
                  "/v1/payments/$no/" . ('x' x 3000),
                  "/v1/payments/a%20b", "/v1/refunds/%E2%82")
    {
        my $r = $gw->api(GET => $path);
        ok($r->{status} == 404 || $r->{status} == 400 || $r->{status} == 405,
           "GET $path: refused") or diag($r->{status});
        json_error($r, $r->{status}, undef, "GET ... is JSON");
    }

    my $r = http(POST => $gw->url('/v1/notify/' . ('%F0%9F%98%80' x 30)),
                 body => 'a=b');
    json_error($r, 404, 'not_found', 'notify: a long emoji channel');
    $r = http(POST => $gw->url('/v1/notify/' . ('%F0%9F%98' x 40)),
              body => 'a=b');
    json_error($r, 400, 'invalid_request', 'notify: cut characters');
}

# ---- 3. Authorization: every parameter once, nothing else ---------------

{
    my $path = '/v1/payments/PNONE';
    my $good = sign_request('demo', 'demo-secret', 'GET', $path, '');
    my ($ts) = $good =~ /ts=(\d+)/;
    my %bad = (
        'ts twice'          => "$good,ts=$ts",
        'ts twice, first'   => $good =~ s/key=/ts=$ts,key=/r,
        'key twice'         => "$good,key=demo",
        'nonce twice'       => $good =~ s/(nonce=\w+)/$1,$1/r,
        'sig twice'         => $good =~ s/(sig=\w+)/$1,$1/r,
        'trailing comma'    => "$good,",
        'leading comma'     => $good =~ s/key=/,key=/r,
        'empty parameter'   => $good =~ s/,ts=/,,ts=/r,
        'unknown parameter' => "$good,x=1",
        'empty ts'          => $good =~ s/ts=\d+/ts=/r,
        'space after comma' => $good =~ s/,ts=/, ts=/r,
        'no scheme'         => $good =~ s/^PAYGW-HMAC-SHA256 //r,
        'lower-case scheme' => $good =~ s/^PAYGW/paygw/r,
        'non-ASCII nonce'   => $good =~ s/nonce=\w{4}/nonce=\x{e9}\x{e9}/r,
        'huge'              => "$good," . ('x=1,' x 1000) . 'y=2',
    );

    for my $name (sort keys %bad) {
        my $r = raw_request(GET => $path, {Authorization => b($bad{$name})});
        json_error($r, 401, 'unauthenticated', "Authorization: $name");
    }

    my $r = http(GET => $gw->url($path), headers => {Authorization => $good});
    json_error($r, 404, 'not_found', 'the well-formed header still works');
}

# ---- 4. Idempotency-Key: an sf-string or a bare token, nothing else -----

{
    my $before = snapshot();
    for my $k ('"abc', 'abc"', '"a"b"', '""', '"', 'a\\b', '"a\\x"', '"q\\"x"',
               'x' x 256, '"' . ('x' x 256) . '"', "a\x{7f}b", "\x{e9}t\x{e9}",
               '"abc" x', 'a"')
    {
        my $body = $JS->encode(PayGW::Gateway->payment_body());
        my $r = raw_request(POST => '/v1/payments', {
            Authorization => sign_request('demo', 'demo-secret', 'POST',
                                          '/v1/payments', $body),
            'Idempotency-Key' => b($k),
            'Content-Type' => 'application/json'}, $body);
        json_error($r, 400, 'idempotency_key_invalid',
                   "Idempotency-Key " . substr($k, 0, 20));
    }
    is(snapshot(), $before, 'nothing written for malformed keys');

    my $k = key();
    my $body = PayGW::Gateway->payment_body();
    my $r1 = $gw->api(POST => '/v1/payments', idempotency_header => qq("$k"),
                      json => $body);
    is($r1->{status}, 201, 'an sf-string key');
    # (the first answer is kept in Redis right after it was sent: a replay
    # in that moment finds the key running, 409, and retries, docs/api.md)
    my $r2;
    for (1 .. 20) {
        $r2 = $gw->api(POST => '/v1/payments', idempotency_header => $k,
                       json => $body);
        last unless $r2->{status} == 409
            && ($r2->{body} // '') =~ /idempotency_key_in_use/;
        select(undef, undef, undef, 0.05);
    }
    is($r2->{status}, 201, 'the bare token of the same key');
    is($r2->{headers}{'idempotent-replayed'}, 'true', '... names the same key');
    is($r2->{body}, $r1->{body}, '... and replays the same answer');

}

# ---- 5. bodies just over each limit --------------------------------------

{
    my $before = snapshot();

    # paygw_max_body_size (16k by default)
    my $pad = 'x' x (16 * 1024);
    my $r = $gw->api(POST => '/v1/payments', idempotency_key => key(),
                     body => qq({"subject":"$pad"}));
    json_error($r, 413, 'request_too_large', 'over paygw_max_body_size');

    # client_max_body_size (1m by default): nginx refuses it itself
    $r = raw("POST /v1/payments HTTP/1.1\r\nHost: x\r\n"
             . "Content-Length: 1048577\r\nConnection: close\r\n\r\n");
    json_error($r, 413, 'request_too_large', 'Content-Length over 1m');

    my $chunk = sprintf("%x\r\n%s\r\n", 512 * 1024, 'a' x (512 * 1024));
    $r = raw("POST /v1/payments HTTP/1.1\r\nHost: x\r\n"
             . "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
             . $chunk x 3 . "0\r\n\r\n");
    json_error($r, 413, 'request_too_large', 'chunked over 1m');

    # callback forms of 1 MB (the module's limit) and 5 MB (nginx's)
    for my $len (1024 * 1024, 5 * 1024 * 1024) {
        $r = raw("POST /v1/notify/alipay HTTP/1.1\r\nHost: x\r\n"
                 . "Content-Type: application/x-www-form-urlencoded\r\n"
                 . "Content-Length: $len\r\nConnection: close\r\n\r\na=b",
                 $port, 2);
        json_error($r, 413, 'request_too_large', "a $len-byte callback form");
    }

    is(snapshot(), $before, 'nothing written for oversized bodies');
}

# ---- 6. errors nginx answers itself --------------------------------------

{
    my %req = (
        '414 URI too long' => [414, 'uri_too_long',
            "GET /v1/" . ('a' x 9000) . " HTTP/1.1\r\nHost: x\r\n"],
        '494 header too large' => [400, 'invalid_request',
            "GET /v1/payments HTTP/1.1\r\nHost: x\r\nX-A: " . ('a' x 9000)
            . "\r\n"],
        'two Authorization headers' => [400, 'invalid_request',
            "GET /v1/payments HTTP/1.1\r\nHost: x\r\nAuthorization: a\r\n"
            . "Authorization: b\r\n"],
        'two Host headers' => [400, 'invalid_request',
            "GET /v1/payments HTTP/1.1\r\nHost: x\r\nHost: y\r\n"],
        'no Host in HTTP/1.1' => [400, 'invalid_request',
            "GET /v1/payments HTTP/1.1\r\n"],
        'a NUL in a header' => [400, 'invalid_request',
            "GET /v1/payments HTTP/1.1\r\nHost: x\r\nA\0b: c\r\n"],
        'a control byte in the method' => [400, 'invalid_request',
            "G\x01T /v1/payments HTTP/1.1\r\nHost: x\r\n"],
        'TRACE' => [405, 'method_not_allowed',
            "TRACE /v1/payments HTTP/1.1\r\nHost: x\r\n"],
        'unknown Transfer-Encoding' => [501, 'not_implemented',
            "POST /v1/payments HTTP/1.1\r\nHost: x\r\n"
            . "Transfer-Encoding: gzip\r\n"],
        'HTTP/2.0 on HTTP/1' => [505, 'http_version_not_supported',
            "GET /v1/payments HTTP/2.0\r\nHost: x\r\n"],
        'Content-Length and chunked' => [400, 'invalid_request',
            "POST /v1/payments HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
            . "Transfer-Encoding: chunked\r\n"],
        'bad chunk size' => [400, 'invalid_request',
            "POST /v1/payments HTTP/1.1\r\nHost: x\r\n"
            . "Transfer-Encoding: chunked\r\n\r\nzz\r\n"],
    );

    for my $name (sort keys %req) {
        my ($status, $code, $text) = @{ $req{$name} };
        $text .= "Connection: close\r\n\r\n" unless $text =~ /\r\n\r\n/;
        my $r = raw($text);
        json_error($r, $status, $code, $name);
    }

    # a method the API does not take on that path: the module's own 405
    my $r = $gw->api(DELETE => '/v1/payments/P1');
    json_error($r, 405, 'method_not_allowed', 'DELETE a payment');
    is($r->{headers}{allow}, 'GET', '... with Allow');
}

{
    # limit_req: 1 request a minute per key on the second server
    my $path = '/v1/payments/PNONE';
    my @r = map {
        http(GET => "http://127.0.0.1:$lport$path",
             headers => {Authorization => sign_request('demo', 'demo-secret',
                                                       'GET', $path, '')})
    } 1 .. 3;
    ok(scalar(grep { $_->{status} == 429 } @r) >= 1, 'limit_req refused some');
    json_error((grep { $_->{status} == 429 } @r)[0], 429, 'rate_limited',
               'limit_req');

    # a body that stops arriving (client_body_timeout 1s there): nginx
    # drops the connection; the worker is not held
    my $t = time;
    my $raw = http_raw($lport, "POST /v1/payments HTTP/1.1\r\nHost: x\r\n"
                       . "Content-Length: 100\r\n\r\n{\"a\"", timeout => 8);
    cmp_ok(time - $t, '<', 6, 'a stalled body is cut off by the timeout');
    unlike($raw, qr{^HTTP/1\.1 [25]}, '... and nothing was served for it');
}

{
    # idle and slow connections are held by nginx, not by a worker's code:
    # the API keeps answering while they are open
    my @idle = map {
        IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => $port)
    } 1 .. 50;
    print {$_} "POST /v1/payments HTTP/1.1\r\nHost: x\r\n" for @idle[0 .. 24];
    my $p = create();
    is($p->{status}, 'succeeded', 'a payment while 50 connections idle');
    close $_ for @idle;
}

# ---- 7. provider callbacks: garbage is refused the provider's way -------

{
    my $before = snapshot();
    my $wh = sub {
        my (%o) = @_;
        return {'Content-Type' => 'application/json',
                'Wechatpay-Timestamp' => $o{ts} // time,
                'Wechatpay-Nonce' => $o{nonce} // 'n' x 32,
                'Wechatpay-Serial' => $o{serial} // 'ABC',
                'Wechatpay-Signature' => $o{sig} // 'c2ln'};
    };
    my @cases = (
        [alipay => {'Content-Type' => 'application/x-www-form-urlencoded'},
         "a=\xff\xfe&sign=\xff&sign_type=RSA2"],
        [alipay => {'Content-Type' => 'application/x-www-form-urlencoded'},
         'out_trade_no=' . ('%E2%82' x 500) . '&sign=x'],
        [alipay => {'Content-Type' => 'application/x-www-form-urlencoded'},
         join('&', map { "k$_=v" } 1 .. 3000)],
        [alipay => {'Content-Type' => 'application/x-www-form-urlencoded'},
         'sign=a&sign=b&out_trade_no=%'],
        [alipay => {}, ''],
        [wechat => $wh->(), '{"resource":' . ('[' x 5000) . '}'],
        [wechat => $wh->(serial => "\xff\xfe"), '{}'],
        [wechat => $wh->(ts => 'x' x 100, sig => '%%%'), '{}'],
        [wechat => $wh->(nonce => "\xc3"), "\xff"],
        [wechat => {}, '{"id":"x"}'],
        [bank_card => {'Content-Type' => 'application/json',
                       'X-Acquirer-Signature' => "\xff" x 64,
                       'X-Acquirer-Timestamp' => '1'}, '{"a":1}'],
        [bank_card => {'Content-Type' => 'application/json'},
         '{"event":"' . ("\xe2\x82" x 100) . '"}'],
    );

    for my $c (@cases) {
        my ($ch, $h, $body) = @$c;
        my $r = raw_request(POST => "/v1/notify/$ch", $h, $body);
        ok($r->{status} >= 400 && $r->{status} < 500,
           "callback garbage to $ch: refused with a 4xx")
            or diag("$r->{status} " . substr($r->{body} // '', 0, 200));
    }

    is(snapshot(), $before, 'callback garbage changed nothing');
    is(crashes(), 0, 'no worker died on callback garbage');
}

# ---- 7. after all of it ---------------------------------------------------

is(crashes(), 0, 'no worker died during the whole file');
my $log = $gw->ngx->error_log;
unlike($log, qr/reached the endpoint without passing/,
       'no request reached an endpoint unchecked');
my $p = create();
is($p->{status}, 'succeeded', 'an honest client is served at the end');

done_testing();
