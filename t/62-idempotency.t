#!/usr/bin/perl
# Idempotency (SPEC §3 "Idempotency"), black box: the Idempotency-Key header,
# byte-exact replays, reuse with another request, concurrent duplicates, the
# durable (merchant_id, business_no) guard when Redis forgets, freeing the
# key after failures before any side effect, retention, per-merchant scope,
# and failing closed when Redis is down.
use strict;
use warnings;

use Digest::SHA qw(sha256_hex);
use File::Temp ();
use JSON::PP ();
use POSIX ();
use Storable ();
use Test::More;
use Time::HiRes qw(time);

use lib 't/lib';
use PayGW::Gateway qw(sql_quote);
use PayGW::Test qw(http http_parallel http_raw sign_request wait_until);

# conf(retention => '1h', keys => FILE): the gateway with
# paygw_idempotency_retention (default 24 h) and another key file.
sub conf {
    my (%o) = @_;
    my $keys = $o{keys} // '%%REPO%%/conf/demo/keys.conf';
    my $retention = $o{retention} ? "paygw_idempotency_retention $o{retention};" : '';
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
        $retention
    }
EOF
}

my $gw = PayGW::Gateway->start(http => conf());
my $JS = JSON::PP->new->canonical;

# ---- helpers -------------------------------------------------------------------------

my $seq = 0;
sub fresh { sprintf 'idem-%d-%d-%s', $$, ++$seq, join '', map { ('a' .. 'z')[rand 26] } 1 .. 10 }

sub pb { PayGW::Gateway->payment_body(@_) }

sub charge_for {
    my @c = $gw->charges_for($_[0]);
    return @c == 1 ? $c[0] : undef;
}

sub is_error {
    my ($r, $status, $code, $name) = @_;
    subtest $name => sub {
        is($r->{status}, $status, "status $status") or diag($r->{body});
        my $e = ref $r->{json} eq 'HASH' ? $r->{json}{error} : undef;
        ok(ref $e eq 'HASH', 'an error object') or return diag($r->{body});
        is($e->{code}, $code, "code $code");
        like($e->{message} // '', qr/\S/, 'a message');
        like($e->{request_id} // '', qr/^\S+$/, 'request_id');
        ok(!exists $r->{headers}{'idempotent-replayed'}, 'not marked as a replay');
    };
}

sub create {
    my ($body, %o) = @_;
    return $gw->api(POST => '/v1/payments', json => $body, nonce => fresh(), %o);
}

sub redis_key { my ($merchant, $key) = @_; "pg:{$merchant}:i:" . sha256_hex($key) }

# A create (with its own Idempotency-Key header text, sent as raw bytes).
sub raw_create {
    my ($key_text, $body) = @_;
    my $auth = sign_request('demo', 'demo-secret', 'POST', '/v1/payments', $body,
                            nonce => fresh());
    my $out = http_raw($gw->ngx->port,
        "POST /v1/payments HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        . "Authorization: $auth\r\nContent-Type: application/json\r\n"
        . "Idempotency-Key: $key_text\r\nContent-Length: " . length($body) . "\r\n\r\n$body",
        timeout => 10);
    my ($head, $b) = split /\r\n\r\n/, $out, 2;
    my ($st) = ($head // '') =~ m{^HTTP/1\.\d (\d{3})};
    return {status => $st // 599, body => $b // '', headers => {},
            json => eval { JSON::PP->new->decode($b // '') }};
}

# Runs $gw->api(@args) in a child; returns a sub that waits for its answer.
sub api_in_background {
    my (@args) = @_;
    my $tmp = File::Temp->new;
    my $file = $tmp->filename;
    my $pid = fork // die "fork: $!\n";
    if (!$pid) {
        srand();
        my $r = eval { $gw->api(@args) } // {status => 599, body => "$@", headers => {}};
        Storable::nstore($r, $file);
        POSIX::_exit(0);
    }
    return sub {
        waitpid $pid, 0;
        my $r = -s $file ? Storable::retrieve($file) : {status => 599, body => 'no answer'};
        undef $tmp;
        return $r;
    };
}

# ---- the header ---------------------------------------------------------------------------

{
    my $before = $gw->snapshot;
    is_error(create(pb()), 400, 'idempotency_key_missing', 'create without Idempotency-Key');
    is_error(create(pb(), headers => {'Idempotency-Key' => ['two-a', 'two-b']}),
             400, 'idempotency_key_invalid', 'two Idempotency-Key headers');
    is_error(create(pb(), headers => {'Idempotency-Key' => ['same', 'same']}),
             400, 'idempotency_key_invalid', 'two identical Idempotency-Key headers');
    for my $bad (['256 characters', 'k' x 256], ['a space inside', 'a b'],
                 ['a tab inside', "a\tb"], ['empty', ''], ['empty sf-string', '""'],
                 ['sf-string of 256', '"' . ('q' x 256) . '"'],
                 ['sf-string with an escaped quote', '"a\\"b"']) {
        is_error(create(pb(), idempotency_header => $bad->[1]), 400,
                 'idempotency_key_invalid', "Idempotency-Key $bad->[0]");
    }
    for my $bad (['UTF-8 bytes', "caf\xc3\xa9"], ['a DEL byte', "a\x7fb"],
                 ['a NUL-free control byte', "a\x01b"]) {
        my $r = raw_create($bad->[1], $JS->encode(pb()));
        is_error($r, 400, 'idempotency_key_invalid', "Idempotency-Key with $bad->[0]");
    }
    $gw->nothing_written($before, 'invalid Idempotency-Key headers');
}

{
    my $p = create(pb(), idempotency_key => fresh());
    is($p->{status}, 201, 'a payment to close and refund') or diag($p->{body});
    my $no = $p->{json}{payment_no} // 'none';
    is_error($gw->api(POST => "/v1/payments/$no/close"), 400, 'idempotency_key_missing',
             'close without Idempotency-Key');
    is_error($gw->api(POST => "/v1/payments/$no/refunds", json => {refund_no => 'R-NOKEY',
                                                               amount => 100}),
             400, 'idempotency_key_missing', 'refund without Idempotency-Key');
    is($gw->count_rows('refunds'), 0, 'no refund written without a key');
    is($gw->api(GET => "/v1/payments/$no")->{json}{refunded_amount}, 0, 'nothing refunded');

    my $r = create(pb(), idempotency_key => 'K' x 255);
    is($r->{status}, 201, 'a 255-character key is accepted') or diag($r->{body});
    $r = create(pb(), idempotency_header => '"' . ('Q' x 255) . '"');
    is($r->{status}, 201, 'a 255-character sf-string key is accepted') or diag($r->{body});
}

# ---- replay: same key, same request ------------------------------------------------------

{
    my $before = $gw->snapshot;
    my $body = pb();
    my $key = fresh();
    my $first = create($body, idempotency_key => $key);
    is($first->{status}, 201, 'first request creates') or diag($first->{body});
    ok(!exists $first->{headers}{'idempotent-replayed'}, 'the first answer is no replay');
    my $no = $first->{json}{payment_no};

    for my $i (1, 2) {
        my $again = create($body, idempotency_key => $key);
        is($again->{status}, $first->{status}, "replay $i: same status");
        ok($again->{body} eq $first->{body}, "replay $i: byte-identical body")
            or diag("first: $first->{body}\nagain: $again->{body}");
        is($again->{headers}{'idempotent-replayed'}, 'true', "replay $i: Idempotent-Replayed: true");
        like($again->{headers}{'content-type'} // '', qr{^application/json}, "replay $i: JSON");
    }
    is($gw->count_rows('payments'), $before->{rows} + 1, 'replays: one payment row');
    my $c = charge_for($no);
    is($c && $c->{requests}, 1, 'replays: the acquirer was asked once');

    # "abc" (sf-string) and abc (token) are the same key
    my $bare = fresh();
    my $b2 = pb();
    my $r1 = create($b2, idempotency_key => $bare);
    my $r2 = create($b2, idempotency_header => qq("$bare"));
    is($r2->{status}, 201, 'sf-string form of the same key: 201');
    is($r2->{headers}{'idempotent-replayed'}, 'true', 'sf-string form of the same key: a replay');
    ok($r2->{body} eq $r1->{body}, 'sf-string form: byte-identical body');
    my $quoted = fresh();
    my $b3 = pb();
    $r1 = create($b3, idempotency_header => qq("$quoted"));
    $r2 = create($b3, idempotency_key => $quoted);
    is($r2->{headers}{'idempotent-replayed'}, 'true', 'bare form after the sf-string: a replay');
    ok($r2->{body} eq $r1->{body}, 'bare form after the sf-string: same body');
    is(charge_for($r1->{json}{payment_no})->{requests}, 1, 'sf-string/token: one charge');

    # the stored answer of a declined payment is replayed as well
    $gw->sim->mode('decline', times => 1);
    my $b4 = pb();
    my $k4 = fresh();
    my $d1 = create($b4, idempotency_key => $k4);
    like($d1->{json}{status} // '', qr/^failed$/, 'declined payment: status failed')
        or diag($d1->{body});
    my $d2 = create($b4, idempotency_key => $k4);
    is($d2->{status}, $d1->{status}, 'declined, replayed: same status');
    ok($d2->{body} eq $d1->{body}, 'declined, replayed: byte-identical body');
    is($d2->{headers}{'idempotent-replayed'}, 'true', 'declined, replayed: marked');
    is(charge_for($d1->{json}{payment_no})->{requests}, 1, 'declined: the acquirer was asked once');
    $gw->sim->mode('normal');

    # same key, another request
    my $mid = $gw->snapshot;
    is_error(create({%$body, amount => $body->{amount} + 1}, idempotency_key => $key),
             422, 'idempotency_key_reused', 'same key, different amount');
    is_error(create({%$body, business_no => 'OTHER-' . fresh()}, idempotency_key => $key),
             422, 'idempotency_key_reused', 'same key, different business_no');
    is_error($gw->api(POST => "/v1/payments/$no/close", idempotency_key => $key, nonce => fresh()),
             422, 'idempotency_key_reused', 'same key, another endpoint');
    $gw->nothing_written($mid, 'reused key');
    is($gw->api(GET => "/v1/payments/$no")->{json}{status}, 'succeeded',
       'reused key on close: the payment was not closed');
    my $again = create($body, idempotency_key => $key);
    ok($again->{body} eq $first->{body}, 'the original answer is still replayed after a 422');
}

# ---- same business_no, new key: the durable guard -----------------------------------------

{
    my $body = pb();
    my $first = create($body, idempotency_key => fresh());
    is($first->{status}, 201, 'created') or diag($first->{body});
    my $before = $gw->snapshot;
    my $r = create($body, idempotency_key => fresh());
    subtest 'same business_no with a new key: 409 duplicate_business_no' => sub {
        is($r->{status}, 409, 'status 409') or diag($r->{body});
        is($r->{json}{error}{code}, 'duplicate_business_no', 'code');
        is($r->{json}{error}{payment_no}, $first->{json}{payment_no},
           'names the existing payment_no');
    };
    $r = create({%$body, amount => 5}, idempotency_key => fresh());
    is($r->{json}{error}{code}, 'duplicate_business_no', 'even with another amount');
    $gw->nothing_written($before, 'duplicate business_no');
}

# ---- Redis forgets every key: still one payment, one charge -------------------------------

{
    my $body = pb();
    my $key = fresh();
    my $first = create($body, idempotency_key => $key);
    is($first->{status}, 201, 'created before FLUSHALL') or diag($first->{body});
    my $no = $first->{json}{payment_no};
    my $before = $gw->snapshot;
    $gw->redis->cli('FLUSHALL');

    for my $case (['the same key', $key], ['a new key', fresh()]) {
        my $r = create($body, idempotency_key => $case->[1]);
        my $same = $r->{status} == 201 ? ($r->{json}{payment_no} // '') eq $no
                 : $r->{status} == 409
                   && ($r->{json}{error}{code} // '') eq 'duplicate_business_no'
                   && ($r->{json}{error}{payment_no} // '') eq $no;
        ok($same, "after FLUSHALL, $case->[0]: the existing payment, not a new one")
            or diag("$r->{status} $r->{body}");
        $gw->nothing_written($before, "after FLUSHALL, $case->[0]");
    }
    is(charge_for($no)->{requests}, 1, 'after FLUSHALL: the acquirer was asked once');
}

# ---- Redis forgets its scripts: the next request sends the script again -----------------

{
    # the gateway names its script by SHA1 (EVALSHA); after SCRIPT FLUSH
    # (a restart, a failover) Redis answers NOSCRIPT and the gateway
    # sends the script itself once, transparently
    my $evalsha = sub {
        # (a Redis Cluster's masters: one line each)
        my $calls = 0;
        $calls += $_ for $gw->redis->cli('INFO', 'commandstats')
                         =~ /^cmdstat_evalsha:calls=(\d+)/mg;
        return $calls;
    };
    my $before = $evalsha->();
    $gw->redis->cli('SCRIPT', 'FLUSH');
    my $body = pb();
    my $key = fresh();
    my $first = create($body, idempotency_key => $key);
    is($first->{status}, 201, 'after SCRIPT FLUSH: created') or diag($first->{body});
    my $again = create($body, idempotency_key => $key);
    is($again->{status}, 201, '... its replay: 201') or diag($again->{body});
    is($again->{body}, $first->{body}, '... byte for byte');
    is($again->{headers}{'idempotent-replayed'}, 'true', '... marked as a replay');
    cmp_ok($evalsha->(), '>=', $before + 2, '... scripts are called by SHA1 (EVALSHA)');
    is(charge_for($first->{json}{payment_no})->{requests}, 1,
       '... the acquirer was asked once');
}

# ---- the client goes away once it has the answer: the answer is still kept ----------------

{
    # the record is written right after the answer; a client that closes
    # its connection at once must not cut that write short
    for my $i (1 .. 3) {
        my $key = fresh();
        my $body = $JS->encode(pb());
        my $first = raw_create($key, $body);
        is($first->{status}, 201, "close after the answer $i: created")
            or diag($first->{body});
        my $again;
        ok(wait_until(sub {
               $again = raw_create($key, $body);
               $again->{status} != 409;
           }, timeout => 5),
           "... the key does not stay locked");
        is($again->{body}, $first->{body}, '... the replay is the answer, byte for byte');
    }
}

# ---- a request still running: 409 idempotency_key_in_use ----------------------------------

{
    my $body = pb();
    my $key = fresh();
    $gw->sim->mode('slow', delay_ms => 3000);
    my $t0 = time;
    my $wait = api_in_background(POST => '/v1/payments', json => $body,
                                 idempotency_key => $key, nonce => fresh());
    # the first request holds the key once its record is in Redis
    ok(wait_until(sub { $gw->redis->cli('EXISTS', redis_key('M100', $key)) eq '1' },
                  timeout => 2.5), 'the first request took the key');
    # ... for as long as its create may run (nginx -t sums it up): here
    # 2 x (3 s MySQL connect + 10 s query) + 13 s + attempts=3 x (1 s
    # proxy connect + 10 s read) = 72 s, longer than the 60 s default
    my $pttl = $gw->redis->cli('PTTL', redis_key('M100', $key));
    ok($pttl =~ /^\d+$/ && $pttl > 60_000 && $pttl <= 72_000,
       'the lock outlives the longest create (72 s, not 60 s)')
        or diag("PTTL $pttl");
    # ... and is waiting for the acquirer once its payment row is written
    ok(wait_until(sub { $gw->sql1("SELECT COUNT(*) FROM payments WHERE business_no = "
                                  . sql_quote($body->{business_no})) == 1 },
                  timeout => 2.5), 'the first request wrote its payment');
    my $r = create($body, idempotency_key => $key);
    is_error($r, 409, 'idempotency_key_in_use', 'same key while the first is running');
    is_error(create({%$body, amount => 7}, idempotency_key => $key), 422,
             'idempotency_key_reused', 'same key, other body, while the first is running');
    my $dup = create($body, idempotency_key => fresh());
    is($dup->{status}, 409, 'same business_no, new key, while the first is running: 409')
        or diag($dup->{body});
    is($dup->{json}{error}{code}, 'duplicate_business_no', '... duplicate_business_no');

    my $first = $wait->();
    $gw->sim->mode('normal');
    is($first->{status}, 201, 'the first request completes') or diag($first->{body});
    ok(time - $t0 >= 2.9, 'the first request did wait for the slow acquirer');
    is($first->{json}{payment_no}, $dup->{json}{error}{payment_no},
       'the duplicate named the running payment');
    my $again = create($body, idempotency_key => $key);
    is($again->{status}, 201, 'after completion: the stored answer');
    ok($again->{body} eq $first->{body}, 'after completion: byte-identical body');
    is($again->{headers}{'idempotent-replayed'}, 'true', 'after completion: marked as replay');
    my $c = charge_for($first->{json}{payment_no});
    is($c && $c->{requests}, 1, 'in-use: the acquirer was asked once');
}

# ---- 50 identical requests at once --------------------------------------------------------

{
    my $before = $gw->snapshot;
    my $body = $JS->encode(pb());
    my $key = fresh();
    my @reqs = map {
        [POST => $gw->url('/v1/payments'), body => $body, timeout => 30, headers => {
            'Content-Type' => 'application/json', 'Idempotency-Key' => $key,
            Authorization => sign_request('demo', 'demo-secret', 'POST', '/v1/payments', $body,
                                          nonce => fresh())}]
    } 1 .. 50;
    my @res = http_parallel(\@reqs);
    my (%nos, $created, $in_use, @other);
    for my $r (@res) {
        if ($r->{status} == 201) {
            $nos{$r->{json}{payment_no} // ''}++;
            $created++ unless ($r->{headers}{'idempotent-replayed'} // '') eq 'true';
        } elsif ($r->{status} == 409
                 && (($r->{json} // {})->{error} // {})->{code} eq 'idempotency_key_in_use') {
            $in_use++;
        } else {
            push @other, "$r->{status} $r->{body}";
        }
    }
    is(scalar(@other), 0, '50 at once: every answer is 201 or 409 idempotency_key_in_use')
        or diag(join "\n", @other[0 .. ($#other < 4 ? $#other : 4)]);
    is(scalar(keys %nos), 1, '50 at once: every 201 names the same payment')
        or diag(join ' ', keys %nos);
    is($created // 0, 1, '50 at once: exactly one 201 is not a replay');
    note(sprintf '50 at once: %d created/replayed, %d in use',
         scalar(grep { $_->{status} == 201 } @res), $in_use // 0);
    is($gw->count_rows('payments'), $before->{rows} + 1, '50 at once: one payment row');
    my ($no) = keys %nos;
    my $c = charge_for($no);
    is($c && $c->{requests}, 1, '50 at once: the acquirer was asked once');
    is($c && $c->{duplicates}, 0, '50 at once: no duplicate charge request');
    is(scalar(@{$gw->sim->charges->{charges}}), (split ' ', $before->{charges})[0] + 1, '50 at once: one new charge');
}

# 20 at once with 20 different keys and one business_no: the durable guard
{
    my $before = $gw->snapshot;
    my $body = $JS->encode(pb());
    my @reqs = map {
        [POST => $gw->url('/v1/payments'), body => $body, timeout => 30, headers => {
            'Content-Type' => 'application/json', 'Idempotency-Key' => fresh(),
            Authorization => sign_request('demo', 'demo-secret', 'POST', '/v1/payments', $body,
                                          nonce => fresh())}]
    } 1 .. 20;
    my @res = http_parallel(\@reqs);
    my @ok = grep { $_->{status} == 201 } @res;
    my @dup = grep { $_->{status} == 409
                     && (($_->{json} // {})->{error} // {})->{code} eq 'duplicate_business_no' } @res;
    is(scalar(@ok), 1, '20 keys, one business_no: one 201');
    is(scalar(@dup), 19, '20 keys, one business_no: 19 duplicate_business_no')
        or diag(join "\n", map { "$_->{status} $_->{body}" } grep { $_->{status} != 201 } @res);
    my $no = @ok ? $ok[0]{json}{payment_no} : 'none';
    is(scalar(grep { ($_->{json}{error}{payment_no} // '') eq $no } @dup), scalar(@dup),
       '20 keys: every duplicate names the created payment');
    is($gw->count_rows('payments'), $before->{rows} + 1, '20 keys: one payment row');
    my $c = charge_for($no);
    is($c && $c->{requests}, 1, '20 keys: the acquirer was asked once');
}

# ---- failures before any side effect free the key ---------------------------------------

{
    my $key = fresh();
    my $before = $gw->snapshot;
    my $bad = pb(amount => 0);
    is_error(create($bad, idempotency_key => $key), 400, 'invalid_request', 'invalid request');
    is($gw->redis->cli('EXISTS', redis_key('M100', $key)), '0',
       'nothing stored for the key after a validation error');
    is_error(create(pb(), idempotency_key => $key, secret => 'wrong-secret'), 401,
             'unauthenticated', 'bad signature with the key');
    is_error(create(pb(), idempotency_key => $key, key => 'viewer'), 403, 'forbidden',
             'viewer with the key');
    $gw->nothing_written($before, 'rejected requests');
    my $good = {%$bad, amount => 250};
    my $r = create($good, idempotency_key => $key);
    is($r->{status}, 201, 'the same key with a corrected body succeeds') or diag($r->{body});
    is($r->{json}{amount}, 250, '... with the corrected amount');
    ok(!exists $r->{headers}{'idempotent-replayed'}, '... and is no replay');
}

{
    my $key = fresh();
    my $body = pb();
    my $before = $gw->snapshot;
    $gw->db->stop;
    my $r = create($body, idempotency_key => $key);
    is_error($r, 503, 'backend_unavailable', 'MySQL down: 503');
    is($gw->charges_seen, $before->{charges}, 'MySQL down: no charge at the acquirer');
    is($gw->redis->cli('EXISTS', redis_key('M100', $key)), '0',
       'MySQL down: nothing stored for the key');
    $gw->db->start_again;
    is($gw->count_rows('payments'), $before->{rows}, 'MySQL down: no payment row');
    $r = create($body, idempotency_key => $key);
    is($r->{status}, 201, 'MySQL back: the same key and body now succeed') or diag($r->{body});
    ok(!exists $r->{headers}{'idempotent-replayed'}, 'MySQL back: not a replay of the 503');
    is($gw->count_rows('payments'), $before->{rows} + 1, 'MySQL back: one payment row');
    is(charge_for($r->{json}{payment_no})->{requests}, 1, 'MySQL back: one charge');
}

# Redis down: the gateway fails closed.  Without Redis there is neither the
# nonce replay window nor the idempotency record, so a create cannot be
# answered safely; the chosen behaviour is 503 backend_unavailable before
# anything is written or charged (MySQL's unique business_no would prevent
# a double charge, but not a replayed signed request).
{
    my $key = fresh();
    my $body = pb();
    my $before = $gw->snapshot;
    $gw->redis->stop;
    my $r = create($body, idempotency_key => $key);
    is_error($r, 503, 'backend_unavailable', 'Redis down: create answers 503');
    $gw->nothing_written($before, 'Redis down');
    $gw->redis->start_again;
    $r = create($body, idempotency_key => $key);
    is($r->{status}, 201, 'Redis back: the same request succeeds') or diag($r->{body});
    is($gw->count_rows('payments'), $before->{rows} + 1, 'Redis back: one payment row');
}

# ---- retention ---------------------------------------------------------------------------------

{
    my $key = fresh();
    my $r = create(pb(), idempotency_key => $key);
    is($r->{status}, 201, 'created for the retention check');
    my $rk = redis_key('M100', $key);
    my @keys = split /\n/, $gw->redis->cli('KEYS', 'pg:*:i:*');
    ok((grep { $_ eq $rk } @keys), 'the key is kept in Redis') or diag("@keys");
    my $ttl = $gw->redis->cli('PTTL', $rk);
    ok($ttl =~ /^\d+$/ && $ttl > 86_400_000 - 60_000 && $ttl <= 86_400_000,
       'kept for 24 h by default') or diag("PTTL $ttl");

    $gw->reload(conf(retention => '1h'));
    $key = fresh();
    my $body = pb();
    $r = create($body, idempotency_key => $key);
    is($r->{status}, 201, 'created with retention 1h') or diag($r->{body});
    $ttl = $gw->redis->cli('PTTL', redis_key('M100', $key));
    ok($ttl =~ /^\d+$/ && $ttl > 3_600_000 - 60_000 && $ttl <= 3_600_000,
       'paygw_idempotency_retention 1h: kept for 1 h') or diag("PTTL $ttl");
    my $again = create($body, idempotency_key => $key);
    ok($again->{body} eq $r->{body}, 'retention 1h: replayed');
}

# ---- scope: (merchant, key) ------------------------------------------------------------------

{
    my $dir = File::Temp->newdir;
    chmod 0755, "$dir";
    open my $fh, '>', "$dir/keys.conf" or die "keys.conf: $!";
    print {$fh} "demo demo-secret M100 merchant\nviewer viewer-secret M100 viewer\n"
              . "ops ops-secret * admin\ndemo2 demo2-secret M100 merchant\n"
              . "m200 m200-secret M200 merchant\n";
    close $fh;
    chmod 0644, "$dir/keys.conf";
    $gw->reload(conf(keys => "$dir/keys.conf"));

    my $key = fresh();
    my $body = pb();
    my $before = $gw->snapshot;
    my $m100 = create($body, idempotency_key => $key);
    is($m100->{status}, 201, 'M100 creates') or diag($m100->{body});

    my $other_key_same_merchant = create($body, idempotency_key => $key, key => 'demo2',
                                         secret => 'demo2-secret');
    is($other_key_same_merchant->{headers}{'idempotent-replayed'}, 'true',
       'another API key of the same merchant shares the Idempotency-Key: replay');
    ok($other_key_same_merchant->{body} eq $m100->{body}, '... with the same body');

    my $m200 = create({%$body, amount => $body->{amount} + 1}, idempotency_key => $key,
                      key => 'm200', secret => 'm200-secret');
    is($m200->{status}, 201, 'M200 may use the same key (and business_no) for its own payment')
        or diag($m200->{body});
    ok(!exists $m200->{headers}{'idempotent-replayed'}, 'M200: not a replay of M100\'s answer');
    is($m200->{json}{merchant_id}, 'M200', 'M200: its own merchant');
    isnt($m200->{json}{payment_no}, $m100->{json}{payment_no}, 'M200: its own payment');
    is($gw->count_rows('payments'), $before->{rows} + 2, 'scope: two payment rows');
    is(charge_for($m100->{json}{payment_no})->{requests}, 1, 'scope: M100 charged once');
    is(charge_for($m200->{json}{payment_no})->{requests}, 1, 'scope: M200 charged once');
}

done_testing;
