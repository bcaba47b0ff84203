#!/usr/bin/perl
# Create-request validation (SPEC §3), black box: every rejected request is
# a 400 invalid_request naming the field (413 request_too_large for a body
# over paygw_max_body_size), and nothing is written or charged for it.
use strict;
use warnings;

use HTTP::Tiny;
use JSON::PP ();
use Test::More;

use lib 't/lib';
use PayGW::Gateway;
use PayGW::Test qw(http http_raw sign_request);

# Only bank_card is enabled: the other channels are refused as unknown.
# conf('paygw_max_body_size 2k;') adds that directive (the body size
# tests at the end); the default limit is 16384 bytes.
sub conf {
    my $max_body_size = $_[0] // '';
    return <<"EOF";
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

    server {
        listen 127.0.0.1:%%PORT%%;
        client_body_buffer_size 16k;

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
        $max_body_size
    }
EOF
}

my $gw = PayGW::Gateway->start(http => conf());
my $JS = JSON::PP->new->canonical;

# ---- helpers ---------------------------------------------------------------------


# What the database and the acquirer hold after the last accepted request:
# every rejected request must leave exactly this.
my $STATE;
sub state_now { $STATE //= $gw->snapshot }

sub pb { PayGW::Gateway->payment_body(@_) }

# A raw JSON create body with one field's raw JSON text replaced (or added).
sub raw_body {
    my (%raw) = @_;
    my %f = (business_no => '"' . 'RAW-' . int(rand 1e12) . '"', amount => '1999',
             currency => '"CNY"', channel => '"bank_card"', subject => '"Tea"',
             card => '{"number":"4242424242424242","exp_month":12,"exp_year":2030,"cvc":"123"}',
             %raw);
    return '{' . join(',', map { "\"$_\":$f{$_}" } grep { defined $f{$_} } sort keys %f) . '}';
}

# rejected(NAME, BODY (ref: JSON data, else raw bytes), STATUS, CODE, MESSAGE_RE)
sub rejected {
    my ($name, $body, $status, $code, $re) = @_;
    my $before = state_now();
    my $r = $gw->api(POST => '/v1/payments', idempotency_key => $gw->fresh_key('val'),
                     ref $body ? (json => $body) : (body => $body));
    subtest $name => sub {
        is($r->{status}, $status, "status $status") or diag($r->{body});
        like($r->{headers}{'content-type'} // '', qr{^application/json}, 'JSON');
        my $e = ref $r->{json} eq 'HASH' ? $r->{json}{error} : undef;
        ok(ref $e eq 'HASH', 'an error object') or return diag($r->{body});
        is($e->{code}, $code, "code $code");
        like($e->{message} // '', $re, 'message names the problem') if $re;
        like($e->{request_id} // '', qr/^\S+$/, 'request_id');
        unlike($r->{body}, qr/4242424242424242|42424242\d{4}42|"cvc"/,
               'the card number and cvc are not echoed');
        is($gw->count_rows('payments'), $before->{rows}, 'no payment row');
        is($gw->charges_seen, $before->{charges}, 'the acquirer saw no charge');
    };
    return $r;
}

sub invalid { rejected($_[0], $_[1], 400, 'invalid_request', $_[2]) }

sub accepted {
    my ($name, $body) = @_;
    my $before = state_now();
    my $r = $gw->api(POST => '/v1/payments', idempotency_key => $gw->fresh_key('val'),
                     ref $body ? (json => $body) : (body => $body));
    $STATE = $gw->snapshot;
    subtest $name => sub {
        is($r->{status}, 201, 'created') or diag($r->{body});
        like($r->{json}{payment_no} // '', qr/\S/, 'payment_no');
        is($STATE->{rows}, $before->{rows} + 1, 'one payment row');
    };
    return $r;
}

# ---- a valid request, for contrast -------------------------------------------------

{
    my $body = pb(business_no => 'VAL-OK-1', amount => 1999, currency => 'CNY',
                  notify_url => 'https://merchant.example/hook', expire_seconds => 900,
                  metadata => {order => 'A-1'});
    my $r = accepted('a complete valid request', $body);
    is($r->{json}{amount}, 1999, 'amount as sent');
    is($r->{json}{currency}, 'CNY', 'currency as sent');
    is($r->{json}{business_no}, 'VAL-OK-1', 'business_no as sent');
    is_deeply($r->{json}{card}, {brand => 'visa', last4 => '4242'}, 'card as brand and last4 only');
    unlike($r->{body}, qr/4242424242424242/, 'no full card number in the answer');
}

# ---- business_no ---------------------------------------------------------------------

invalid('business_no missing', pb(business_no => undef), qr/business_no/);
invalid('business_no null', raw_body(business_no => 'null'), qr/business_no/);
invalid('business_no empty', pb(business_no => ''), qr/business_no/);
invalid('business_no of 65 chars', pb(business_no => 'b' x 65), qr/business_no/);
invalid('business_no with a space', pb(business_no => 'ORD 1'), qr/business_no/);
invalid('business_no with "/"', pb(business_no => 'ORD/1'), qr/business_no/);
invalid('business_no non-ASCII (UTF-8)', raw_body(business_no => qq("ORD-\xe8\x8c\xb6")),
        qr/business_no/);
invalid('business_no a number', pb(business_no => 12345), qr/business_no/);
accepted('business_no of 64 chars', pb(business_no => 'B' x 64));
accepted('business_no using all of [A-Za-z0-9_.:-]', pb(business_no => 'aZ09_.:-x'));

# ---- amount ------------------------------------------------------------------------------

invalid('amount 0', pb(amount => 0), qr/amount/);
invalid('amount -1', pb(amount => -1), qr/amount/);
invalid('amount 10^12 + 1', pb(amount => 1_000_000_000_001), qr/amount/);
invalid('amount 1.5', raw_body(amount => '1.5'), qr/amount must be an integer/);
invalid('amount "100"', raw_body(amount => '"100"'), qr/amount must be an integer/);
invalid('amount 100.0', raw_body(amount => '100.0'), qr/amount/);
invalid('amount 1e3', raw_body(amount => '1e3'), qr/amount/);
invalid('amount true', raw_body(amount => 'true'), qr/amount/);
invalid('amount null', raw_body(amount => 'null'), qr/amount/);
invalid('amount missing', pb(amount => undef), qr/amount/);
invalid('amount 10^23 (beyond 64 bits)', raw_body(amount => '100000000000000000000000'),
        qr/amount/);
invalid('amount -2^63', raw_body(amount => '-9223372036854775808'), qr/amount/);
{
    my $r = accepted('amount 10^12', pb(amount => 1_000_000_000_000));
    is($r->{json}{amount}, 1_000_000_000_000, 'amount 10^12 kept exactly');
    $r = accepted('amount 1', pb(amount => 1));
    is($r->{json}{amount}, 1, 'amount 1 kept');
}

# ---- currency -------------------------------------------------------------------------------

invalid("currency $_", pb(currency => $_), qr/currency/)
    for qw(cny Cny XYZ CN CNYY BTC);
invalid('currency empty', pb(currency => ''), qr/currency/);
invalid('currency a number', pb(currency => 156), qr/currency/);
invalid('currency missing', pb(currency => undef), qr/currency/);
accepted("currency $_", pb(currency => $_)) for qw(USD EUR JPY);

# ---- channel, card ------------------------------------------------------------------------

invalid('channel paypal', pb(channel => 'paypal', card => undef), qr/channel.*paypal|paypal.*channel/);
invalid('channel paypal, with a card', pb(channel => 'paypal'), qr/channel/);
invalid('channel alipay (not enabled here)', pb(channel => 'alipay', card => undef), qr/channel/);
invalid('channel BANK_CARD (case matters)', pb(channel => 'BANK_CARD'), qr/channel|card/);
invalid('channel missing', pb(channel => undef), qr/channel/);
invalid('channel a number', pb(channel => 3), qr/channel/);

invalid('card missing for bank_card', pb(card => undef), qr/\bcard\b/);
# alipay and wechat are not enabled in this gateway: the channel is refused
# first; with them enabled, the card would be.
invalid('card given for alipay', pb(channel => 'alipay'),
        qr/\bcard\b|channel "alipay" is unknown or not enabled/);
invalid('card given for wechat', pb(channel => 'wechat'),
        qr/\bcard\b|channel "wechat" is unknown or not enabled/);
invalid('card a string', pb(card => '4242424242424242'), qr/\bcard\b/);
invalid('card.number fails the Luhn check', pb(card => PayGW::Gateway->card(number => '4242424242424241')),
        qr/card\.number/);
invalid('card.number too short', pb(card => PayGW::Gateway->card(number => '4242')), qr/card\.number/);
invalid('card.number of 20 digits', pb(card => PayGW::Gateway->card(number => '42424242424242424242')),
        qr/card\.number/);
invalid('card.number with dashes', pb(card => PayGW::Gateway->card(number => '4242-4242-4242-4242')),
        qr/card\.number/);
invalid('card.number a JSON number', pb(card => PayGW::Gateway->card(number => 4242424242424242)),
        qr/card\.number/);
invalid('card.number missing', pb(card => do { my $c = PayGW::Gateway->card(); delete $c->{number}; $c }),
        qr/card\.number/);
invalid('card.exp_month 0', pb(card => PayGW::Gateway->card(exp_month => 0)), qr/card\.exp_month/);
invalid('card.exp_month 13', pb(card => PayGW::Gateway->card(exp_month => 13)), qr/card\.exp_month/);
invalid('card.exp_month "12"', pb(card => PayGW::Gateway->card(exp_month => '12')), qr/card\.exp_month/);
invalid('card.exp_year 30', pb(card => PayGW::Gateway->card(exp_year => 30)), qr/card\.exp_year/);
invalid('card.exp_year "2030"', pb(card => PayGW::Gateway->card(exp_year => '2030')), qr/card\.exp_year/);
invalid('card.cvc 2 digits', pb(card => PayGW::Gateway->card(cvc => '12')), qr/card\.cvc/);
invalid('card.cvc 5 digits', pb(card => PayGW::Gateway->card(cvc => '12345')), qr/card\.cvc/);
invalid('card.cvc letters', pb(card => PayGW::Gateway->card(cvc => 'abc')), qr/card\.cvc/);
invalid('card.cvc a JSON number', pb(card => PayGW::Gateway->card(cvc => 123)), qr/card\.cvc/);
invalid('card.cvc missing', pb(card => do { my $c = PayGW::Gateway->card(); delete $c->{cvc}; $c }),
        qr/card\.cvc/);
invalid('card with an unknown field', pb(card => PayGW::Gateway->card(holder => 'X')), qr/holder/);
accepted('a 15-digit Amex with a 4-digit cvc', pb(card => PayGW::Gateway->card(number => '378282246310005',
                                                               cvc => '1234')));

# ---- subject, notify_url, expire_seconds, metadata -------------------------------------

invalid('subject a number', pb(subject => 5), qr/subject/);
invalid('subject over 256 bytes', pb(subject => 's' x 300), qr/subject/);
invalid('notify_url not a URL', pb(notify_url => 'not a url'), qr/notify_url/);
invalid('notify_url ftp://', pb(notify_url => 'ftp://merchant.example/x'), qr/notify_url/);
invalid('notify_url http:// (https only without paygw_notify_http on)',
        pb(notify_url => 'http://10.0.0.1/hook'), qr/notify_url must be an https URL/);
invalid('notify_url a number', pb(notify_url => 7), qr/notify_url/);
invalid('expire_seconds 0', pb(expire_seconds => 0), qr/expire_seconds/);
invalid('expire_seconds -900', pb(expire_seconds => -900), qr/expire_seconds/);
invalid('expire_seconds "900"', pb(expire_seconds => '900'), qr/expire_seconds/);
invalid('expire_seconds 1.5', raw_body(expire_seconds => '1.5'), qr/expire_seconds/);
invalid('metadata an array', pb(metadata => [1, 2]), qr/metadata/);
invalid('metadata a string', pb(metadata => 'x'), qr/metadata/);

# ---- unknown fields, JSON syntax, encoding ---------------------------------------------

invalid('unknown top-level field', pb(x => 1), qr/unknown field "x"/);
invalid('unknown top-level field "Amount"', pb(Amount => 5), qr/unknown field "Amount"/);
invalid('duplicate key "business_no"',
        raw_body(business_no => '"DUP-1"') =~ s/^\{/{"business_no":"DUP-2",/r, qr/duplicate/i);
invalid('duplicate key "amount" (second one smaller)',
        raw_body(amount => '100000') =~ s/^\{/{"amount":1,/r, qr/duplicate/i);
invalid('duplicate key inside card',
        raw_body(card => '{"number":"4242424242424242","number":"4000056655665556",'
                        . '"exp_month":12,"exp_year":2030,"cvc":"123"}'), qr/duplicate/i);
invalid('malformed JSON (truncated)', '{"business_no":"X","amount":', undef);
invalid('malformed JSON (trailing garbage)', raw_body() . 'x', undef);
invalid('malformed JSON (single quotes)', "{'business_no':'X'}", undef);
invalid('empty body', '', undef);
invalid('a JSON array', '[' . raw_body() . ']', undef);
invalid('JSON null', 'null', undef);
invalid('a JSON string', '"hello"', undef);
invalid('non-UTF-8 byte 0xff', raw_body(subject => qq("\xff\xfe")), undef);
invalid('overlong UTF-8 (0xc0 0xaf)', raw_body(subject => qq("\xc0\xaf")), undef);
invalid('UTF-8-encoded surrogate (0xed 0xa0 0x80)', raw_body(subject => qq("\xed\xa0\x80")),
        undef);
invalid('Latin-1 business_no', raw_body(business_no => qq("ORD-\xe9")), undef);
invalid('lone surrogate escape \\ud800', raw_body(subject => '"\\ud800"'), undef);
accepted('UTF-8 subject', raw_body(subject => qq("\xe8\x8c\xb6 \xe5\x8f\xb6")));

# ---- GET ?business_no= ----------------------------------------------------------------------

for my $q ('business_no=ORD%201', 'business_no=', 'x=1', 'business_no=' . ('q' x 65)) {
    my $r = $gw->api(GET => "/v1/payments?$q");
    is($r->{status}, 400, "GET /v1/payments?$q: 400") or diag($r->{body});
    like($r->{json}{error}{message} // '', qr/business_no/, "GET ?$q: names business_no");
}

# ---- body size -----------------------------------------------------------------------------------

sub padded {
    my ($size) = @_;
    my $b = $JS->encode(pb());
    return $b . (' ' x ($size - length $b));
}

accepted('a body of exactly 16384 bytes (JSON padded with blanks)', padded(16384));
rejected('a body of 16385 bytes', padded(16385), 413, 'request_too_large', qr/16384/);
rejected('a body of 1 MiB', padded(1 << 20), 413, 'request_too_large', undef);

# chunked (no Content-Length): the limit holds after reading too
sub chunked_post {
    my ($body) = @_;
    my @chunks = ($body =~ /(.{1,1000})/sg);
    my $auth = sign_request('demo', 'demo-secret', 'POST', '/v1/payments', $body);
    my $r = HTTP::Tiny->new(timeout => 10)->request(POST => $gw->url('/v1/payments'), {
        headers => {Authorization => $auth, 'Idempotency-Key' => $gw->fresh_key('val'),
                    'Content-Type' => 'application/json'},
        content => sub { shift @chunks }});
    $r->{json} = eval { JSON::PP->new->decode($r->{content}) };
    return $r;
}

{
    my $before = $gw->snapshot;
    my $r = chunked_post(padded(17000));
    is($r->{status}, 413, 'chunked body over 16 KiB: 413') or diag($r->{content});
    is($r->{json}{error}{code}, 'request_too_large', 'chunked: request_too_large');
    is($gw->count_rows('payments'), $before->{rows}, 'chunked 413: no payment row');
    is($gw->charges_seen, $before->{charges}, 'chunked 413: no charge');
    $r = chunked_post(padded(3000));
    is($r->{status}, 201, 'chunked body under the limit: created') or diag($r->{content});
    $STATE = $gw->snapshot;
}

# A 413 answered before the body was read must not leave that body on a
# keep-alive connection to be parsed as the next request (request smuggling).
{
    my $inner = "GET /healthz HTTP/1.1\r\nHost: smuggled\r\n\r\n";
    my $body = $inner . ('x' x (20000 - length $inner));
    my $raw = "POST /v1/payments HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            . "Authorization: " . sign_request('demo', 'demo-secret', 'POST', '/v1/payments', $body)
            . "\r\nIdempotency-Key: smuggle-1\r\nContent-Type: application/json\r\n"
            . "Content-Length: " . length($body) . "\r\n\r\n" . $body;
    my $out = http_raw($gw->ngx->port, $raw, timeout => 3);
    my @status = $out =~ m{HTTP/1\.[01] (\d{3}) }g;
    is($status[0], 413, 'oversized body on a keep-alive connection: 413');
    is(scalar(@status), 1, 'exactly one response: the body was not run as a request')
        or diag("responses: @status");
    unlike($out, qr/"status":"ok"/, 'the smuggled GET /healthz was not answered');
}

# paygw_max_body_size is configurable
{
    $gw->reload(conf('paygw_max_body_size 2k;'));
    accepted('max_body_size 2k: a body of exactly 2048 bytes', padded(2048));
    rejected('max_body_size 2k: a body of 2049 bytes', padded(2049), 413, 'request_too_large',
             qr/2048/);
    my $before = $gw->snapshot;
    my $r = chunked_post(padded(3000));
    is($r->{status}, 413, 'max_body_size 2k: chunked 3000 bytes: 413') or diag($r->{content});
    is($gw->count_rows('payments'), $before->{rows}, 'chunked 413 (2k): no payment row');
}

done_testing;
