#!/usr/bin/perl
# The provider simulator's bank-card acquirer (t/sim/sim.js): request and
# response signatures, charges, refunds, settlement files, fault modes,
# callbacks, and that full card numbers never reach its log or records.
use strict;
use warnings;

use Digest::SHA qw(hmac_sha256_hex);
use IO::Socket::IP;
use JSON::PP ();
use POSIX qw(strftime);
use Test::More;
use Time::HiRes qw(time sleep);

use PayGW::Test qw(free_port http wait_until);

my $sim = PayGW::Test::Sim->start;
my $SECRET = 'acq-demo-secret';
my $YEAR = (gmtime)[5] + 1900;
my $TODAY = strftime('%Y-%m-%d', gmtime);
my %CARD = (number => '4242424242424242', exp_month => 12, exp_year => $YEAR + 5,
            cvc => '123');
my @PANS;       # every full card number sent: none may be logged

# charge_body(OUT_TRADE_NO, FIELD => VALUE, card => {FIELD => VALUE}): a
# charge request; undef values (and card => undef) leave the field out.
sub charge_body {
    my ($otn, %o) = @_;
    my $card_o = exists $o{card} ? delete $o{card} : {};
    my $body = {out_trade_no => $otn, amount => 1999, currency => 'CNY',
                description => 'test order', %o};
    if ($card_o) {
        my %card = (%CARD, %$card_o);
        delete @card{grep { !defined $card{$_} } keys %card};
        push @PANS, $card{number} if ($card{number} // '') =~ /^\d{12,}$/;
        $body->{card} = \%card;
    }
    delete @$body{grep { !defined $body->{$_} } keys %$body};
    return $body;
}

sub charge { $sim->acquirer(POST => '/acquirer/v1/charges', json => charge_body(@_)) }

sub refund {
    my ($otn, $orn, $amount, %o) = @_;
    return $sim->acquirer(POST => '/acquirer/v1/refunds',
                          json => {out_trade_no => $otn, out_refund_no => $orn,
                                   amount => $amount, currency => 'CNY',
                                   reason => 'customer request', %o});
}

sub entry {
    my ($kind, $key) = @_;
    my $f = $kind eq 'charges' ? 'out_trade_no' : 'out_refund_no';
    my ($e) = grep { $_->{$f} eq $key } @{$sim->charges->{$kind}};
    return $e;
}

sub query { $sim->acquirer(GET => "/acquirer/v1/charges/$_[0]") }

# ---- a charge, signed both ways ---------------------------------------------

my $first;
{
    my $t0 = time;
    my $r = charge('P1001');
    $first = $r->{json};
    is($r->{status}, 200, 'charge: 200');
    ok($r->{sig_ok}, 'charge: response signature verifies');
    like($r->{headers}{'content-type'}, qr{^application/json}, 'charge: JSON');
    my $ts = $r->{headers}{'x-acquirer-timestamp'} // 0;
    ok(abs($ts - $t0) <= 5, 'charge: response timestamp is now');
    is($r->{headers}{'x-acquirer-signature'},
       hmac_sha256_hex("$ts\n$r->{body}", $SECRET), 'signature = HMAC(ts\nbody)');
    like($first->{charge_id}, qr/^ch_[0-9a-f]{24}$/, 'charge_id ch_<24 hex>');
    is_deeply({%$first, charge_id => 'X'},
              {charge_id => 'X', out_trade_no => 'P1001', status => 'approved',
               amount => 1999, currency => 'CNY', card_brand => 'visa',
               card_last4 => '4242'}, 'charge object');

    $r = charge('P1001');
    is($r->{status}, 200, 'duplicate charge: 200');
    is_deeply($r->{json}, $first, 'duplicate charge: the same charge object');
    my $e = entry(charges => 'P1001');
    is_deeply([@$e{qw(charge_id amount status requests duplicates)}],
              [$first->{charge_id}, 1999, 'approved', 2, 1],
              '/_sim/charges: one charge, 2 requests, 1 duplicate');
    is(scalar @{$sim->charges->{charges}}, 1, 'charged once');

    $r = charge('P1001', amount => 2000);
    is($r->{status}, 409, 'same out_trade_no, other amount: 409');
    is_deeply($r->{json}, {error => 'conflicting_request'}, '... conflicting_request');
    ok($r->{sig_ok}, '... signed');
    is(charge('P1001', currency => 'USD')->{status}, 409, 'other currency: 409');
    is(entry(charges => 'P1001')->{amount}, 1999, 'stored charge unchanged');

    $r = query('P1001');
    is($r->{status}, 200, 'GET charge: 200');
    ok($r->{sig_ok}, 'GET charge: signed');
    is_deeply($r->{json}, $first, 'GET charge: the charge object');
    $r = query('P-none');
    is("$r->{status} $r->{body}", '404 {"error":"not_found"}', 'GET unknown: 404');
    ok($r->{sig_ok}, '404 signed');
    is(entry(charges => 'P1001')->{queries}, 1, 'queries counted');

    $r = $sim->acquirer(GET => '/acquirer/v1/charges/P1001?expand=card');
    is($r->{status}, 200, 'query string is part of the signed path');
    my $ts2 = int time;
    $r = $sim->acquirer(GET => '/acquirer/v1/charges/P1001?expand=card', ts => $ts2,
                        signature => $sim->acquirer_sign($ts2, 'GET',
                                                         '/acquirer/v1/charges/P1001', ''));
    is($r->{status}, 401, 'signature without the query string: 401');
}

# ---- request authentication ---------------------------------------------------

{
    my $path = '/acquirer/v1/charges';
    my $r = $sim->acquirer(POST => $path, json => charge_body('P-auth'),
                           signature => '0' x 64);
    is("$r->{status} $r->{body}", '401 {"error":"bad_signature"}', 'wrong signature: 401');
    ok($r->{sig_ok}, '401 is signed');
    is($sim->acquirer(POST => $path, json => charge_body('P-auth'),
                      signature => undef)->{status}, 401, 'no signature: 401');
    is($sim->acquirer(POST => $path, json => charge_body('P-auth'),
                      secret => 'other')->{status}, 401, 'other secret: 401');
    my $sig = $sim->acquirer_sign(my $ts = int time, 'POST', $path, '{}');
    is($sim->acquirer(POST => $path, json => charge_body('P-auth'), ts => $ts,
                      signature => $sig)->{status}, 401, 'signature over another body: 401');
    is($sim->acquirer(POST => $path, json => charge_body('P-auth'),
                      ts => int(time) - 330)->{status}, 401, 'timestamp 330 s old: 401');
    is($sim->acquirer(POST => $path, json => charge_body('P-auth'),
                      ts => int(time) + 330)->{status}, 401, 'timestamp 330 s ahead: 401');
    is($sim->acquirer(POST => $path, json => charge_body('P-auth'),
                      ts => 'abc')->{status}, 401, 'non-numeric timestamp: 401');
    $r = $sim->acquirer(POST => $path, json => charge_body('P-auth'), merchant => 'ACQ-X');
    is("$r->{status} $r->{body}", '401 {"error":"unknown_merchant"}',
       'wrong merchant: 401 unknown_merchant');
    ok(!entry(charges => 'P-auth'), 'rejected requests charge nothing');
    $r = $sim->acquirer(POST => $path, json => charge_body('P-auth'),
                        ts => int(time) - 280);
    is($r->{status}, 200, 'timestamp 280 s old: accepted');
    is(entry(charges => 'P-auth')->{requests}, 1,
       'only authentic requests are counted');
    $r = $sim->acquirer(GET => '/acquirer/v1/nothing');
    is("$r->{status} $r->{body}", '404 {"error":"not_found"}', 'unknown endpoint: 404');
}

# ---- validation ---------------------------------------------------------------

{
    my %bad = (      # the fields changed in a good request
        'missing card'         => [card => undef],
        'Luhn-invalid number'  => [card => {number => '4242424242424241'}],
        '11-digit number'      => [card => {number => '42424242424'}],
        '20-digit number'      => [card => {number => '42424242424242424242'}],
        'number with spaces'   => [card => {number => '4242 4242 4242 4242'}],
        'amount 0'             => [amount => 0],
        'amount -5'            => [amount => -5],
        'amount 19.99'         => [amount => 19.99],
        'amount as a string'   => [amount => '1999'],
        'missing currency'     => [currency => undef],
        'lowercase currency'   => [currency => 'cny'],
        'exp_month 13'         => [card => {exp_month => 13}],
        'missing cvc'          => [card => {cvc => undef}],
        'missing out_trade_no' => [out_trade_no => undef],
    );
    for my $name (sort keys %bad) {
        my $body = charge_body('P-v', @{$bad{$name}});
        my $r = $sim->acquirer(POST => '/acquirer/v1/charges', json => $body);
        is("$r->{status} " . ($r->{json}{error} // ''), '400 invalid_request',
           "$name: 400 invalid_request");
        ok(length($r->{json}{message} // ''), "$name: with a message ($r->{json}{message})");
    }
    my $r = $sim->acquirer(POST => '/acquirer/v1/charges', body => 'not json');
    is($r->{status}, 400, 'body not JSON: 400');
    ok($r->{sig_ok}, '400 is signed');
    ok(!entry(charges => 'P-v'), 'invalid requests charge nothing');
    $r = charge('P-12', card => {number => '424242424242'});
    is($r->{json}{status}, 'approved', '12-digit card number accepted');
}

# ---- declines and brands ------------------------------------------------------

{
    my $r = charge('P-d1', card => {number => '4000000000000002'});
    is("$r->{status} $r->{json}{status} $r->{json}{decline_code}",
       '200 declined card_declined', '4000000000000002: card_declined');
    my $id = $r->{json}{charge_id};
    $r = charge('P-d1', card => {number => '4000000000000002'});
    is($r->{json}{charge_id}, $id, 'declined charge is stored (idempotent)');
    is(entry(charges => 'P-d1')->{duplicates}, 1, '... counted as a duplicate');
    $r = charge('P-d2', card => {number => '4000000000009995'});
    is("$r->{json}{status} $r->{json}{decline_code}", 'declined insufficient_funds',
       '4000000000009995: insufficient_funds');
    $r = charge('P-d3', card => {exp_year => $YEAR - 1});
    is("$r->{json}{status} $r->{json}{decline_code}", 'declined expired_card',
       'expired card: expired_card');
    $r = charge('P-d4', card => {exp_year => $YEAR, exp_month => (gmtime)[4] + 1});
    is($r->{json}{status}, 'approved', 'card expiring this month: approved');
    ok(!exists $first->{decline_code}, 'approved charge has no decline_code');

    my %brands = ('5555555555554444' => 'mastercard', '378282246310005' => 'amex',
                  '6200000000000005' => 'unionpay', '6011111111111117' => 'unknown');
    my $n = 0;
    for my $pan (sort keys %brands) {
        $r = charge('P-b' . ++$n, card => {number => $pan});
        is("$r->{json}{card_brand} $r->{json}{card_last4}",
           "$brands{$pan} " . substr($pan, -4), "brand of $brands{$pan}");
    }
}

# ---- refunds ------------------------------------------------------------------

{
    my $r = refund('P1001', 'R1', 500);
    is($r->{status}, 200, 'refund: 200');
    ok($r->{sig_ok}, 'refund: signed');
    my $re = $r->{json};
    like($re->{refund_id}, qr/^re_[0-9a-f]{24}$/, 'refund_id re_<24 hex>');
    is_deeply({%$re, refund_id => 'X'},
              {refund_id => 'X', out_refund_no => 'R1', out_trade_no => 'P1001',
               status => 'succeeded', amount => 500, currency => 'CNY'},
              'refund object');
    $r = refund('P1001', 'R1', 500);
    is_deeply($r->{json}, $re, 'duplicate refund: the same object');
    is_deeply([@{entry(refunds => 'R1')}{qw(refund_id requests duplicates)}],
              [$re->{refund_id}, 2, 1], '/_sim/charges: refund requests 2');
    is(refund('P1001', 'R1', 600)->{status}, 409, 'same out_refund_no, other amount: 409');

    $r = refund('P1001', 'R2', 1500);
    is("$r->{status} $r->{json}{status} $r->{json}{failure_code}",
       '200 failed amount_exceeds_charge', 'over-refund (500 + 1500 > 1999): failed');
    is(refund('P1001', 'R3', 1499)->{json}{status}, 'succeeded', 'refund of the rest');
    is(refund('P1001', 'R4', 1)->{json}{failure_code}, 'amount_exceeds_charge',
       'one more unit: failed');
    is(refund('P1001', 'R2', 1500)->{json}{status}, 'failed',
       'failed refund is stored (idempotent)');
    is(refund('P-d1', 'R5', 100)->{json}{failure_code}, 'charge_not_refundable',
       'declined charge: charge_not_refundable');
    is(refund('P-none', 'R6', 100)->{json}{failure_code}, 'charge_not_refundable',
       'unknown charge: charge_not_refundable');
    is(refund('P-12', 'R7', 100, currency => 'USD')->{status}, 400,
       'currency other than the charge: 400');
    is(refund('P-12', 'R8', 0)->{status}, 400, 'amount 0: 400');

    $r = $sim->acquirer(GET => '/acquirer/v1/refunds/R1');
    is_deeply($r->{json}, $re, 'GET refund');
    ok($r->{sig_ok}, 'GET refund: signed');
    is($sim->acquirer(GET => '/acquirer/v1/refunds/R-none')->{status}, 404,
       'GET unknown refund: 404');
}

# ---- settlement file ------------------------------------------------------------

{
    my $r = $sim->acquirer(GET => "/acquirer/v1/settlements/$TODAY");
    is($r->{status}, 200, 'settlement: 200');
    like($r->{headers}{'content-type'}, qr{^text/csv}, 'settlement: text/csv');
    ok($r->{sig_ok}, 'settlement: signed over the CSV');
    my @lines = split /\n/, $r->{body};
    is($lines[0], 'type,out_trade_no,out_refund_no,provider_id,amount,currency,'
                  . 'status,created_at', 'settlement header');
    my $all = $sim->charges;
    is(@lines - 1, @{$all->{charges}} + @{$all->{refunds}},
       'one line per charge and refund');
    my ($c) = grep { /^charge,P1001,/ } @lines;
    like($c // '', qr/^charge,P1001,,\Q$first->{charge_id}\E,1999,CNY,approved,
                      \Q$TODAY\ET\d\d:\d\d:\d\dZ$/x, 'charge line');
    my ($re) = grep { /^refund,P1001,R1,/ } @lines;
    like($re // '', qr/^refund,P1001,R1,re_[0-9a-f]{24},500,CNY,succeeded,\Q$TODAY\ET/,
         'refund line');
    ok((grep { /^refund,P1001,R2,re_\w+,1500,CNY,failed,/ } @lines), 'failed refund line');
    ok((grep { /^charge,P-d1,,ch_\w+,1999,CNY,declined,/ } @lines), 'declined charge line');
    $r = $sim->acquirer(GET => '/acquirer/v1/settlements/2001-01-01');
    is("$r->{status} $r->{body}", "200 $lines[0]\n", 'day without activity: header only');
    is($sim->acquirer(GET => '/acquirer/v1/settlements/2024-02-30')->{status}, 400,
       'impossible date: 400');
}

# ---- fault modes ------------------------------------------------------------------

{
    ok($sim->reset, 'reset');
    is_deeply($sim->charges, {charges => [], refunds => []}, 'reset forgets charges');

    $sim->mode('error500', times => 1);
    my $r = charge('F1');
    is("$r->{status} $r->{body}", '500 {"error":"internal"}', 'error500: 500');
    ok($r->{sig_ok}, 'error500: signed');
    ok(!entry(charges => 'F1'), 'error500: not charged');
    is(charge('F1')->{status}, 200, 'error500 times 1: next request normal');
    is(entry(charges => 'F1')->{requests}, 2, 'requests counts the 500 one too');
    is($sim->mode('normal')->{mode}, 'normal', 'mode normal');

    $sim->mode('error500_after', times => 1);
    $r = charge('F2');
    is("$r->{status} $r->{body}", '500 {"error":"internal"}', 'error500_after: 500');
    ok($r->{sig_ok}, 'error500_after: signed');
    $r = query('F2');
    is("$r->{status} $r->{json}{status}", '200 approved', 'error500_after: charged');
    my $id = $r->{json}{charge_id};
    is(charge('F2')->{json}{charge_id}, $id, '... a retry gets that charge');
    is_deeply([@{entry(charges => 'F2')}{qw(requests duplicates)}], [2, 1],
              '... one charge, two requests');

    $sim->mode('reset', times => 1);
    is(charge('F3')->{status}, 599, 'reset: no answer');
    is(query('F3')->{status}, 404, 'reset: not charged');

    $sim->mode('reset_after', times => 1);
    is(charge('F4')->{status}, 599, 'reset_after: no answer');
    is(query('F4')->{json}{status}, 'approved', 'reset_after: charged');

    $sim->mode('slow', delay_ms => 1500, times => 1);
    my $t0 = time;
    $r = $sim->acquirer(POST => '/acquirer/v1/charges', json => charge_body('F5'),
                        timeout => 0.5);
    is($r->{status}, 599, 'slow: client times out');
    is(query('F5')->{json}{status}, 'approved', 'slow: already charged');
    $sim->mode('slow', delay_ms => 1000, times => 1);
    $t0 = time;
    $r = charge('F5b');
    ok($r->{status} == 200 && time - $t0 >= 0.9, 'slow: answers after delay_ms')
        or diag("$r->{status} after " . (time - $t0));

    $sim->mode('slow_before', delay_ms => 1500, times => 1);
    $r = $sim->acquirer(POST => '/acquirer/v1/charges', json => charge_body('F6'),
                        timeout => 0.5);
    is($r->{status}, 599, 'slow_before: client times out');
    is(query('F6')->{status}, 404, 'slow_before: not charged yet');
    ok(wait_until(sub { query('F6')->{status} == 200 }, timeout => 5),
       'slow_before: charged after delay_ms (late charge)');
    $sim->mode('slow_before', delay_ms => 1000, times => 1);
    $t0 = time;
    $r = charge('F6b');
    ok($r->{status} == 200 && time - $t0 >= 0.9, 'slow_before: answers after delay_ms');

    $sim->mode('bad_signature', times => 1);
    $r = charge('F7');
    is("$r->{status} $r->{json}{status}", '200 approved', 'bad_signature: processed');
    like($r->{headers}{'x-acquirer-signature'} // '', qr/^[0-9a-f]{64}$/,
         'bad_signature: a well-formed signature');
    ok(!$r->{sig_ok}, 'bad_signature: that does not verify');
    ok(charge('F7')->{sig_ok}, 'bad_signature times 1: next one verifies');

    $sim->mode('amount_mismatch', times => 2);
    $r = charge('F8');
    is($r->{json}{amount}, 2000, 'amount_mismatch: amount + 1 reported');
    ok($r->{sig_ok}, 'amount_mismatch: correctly signed');
    is(query('F8')->{json}{amount}, 2000, 'amount_mismatch: also on queries');
    is(entry(charges => 'F8')->{amount}, 1999, 'amount_mismatch: charged 1999');

    $sim->mode('decline', times => 1);
    $r = charge('F9');
    is("$r->{json}{status} $r->{json}{decline_code}", 'declined card_declined',
       'decline: good card declined');
    is(charge('F10')->{json}{status}, 'approved', 'decline times 1: then approved');

    $sim->mode('error500', times => 2);
    is(join(' ', map { charge("F11")->{status} } 1 .. 3), '500 500 200',
       'times 2: two requests, then normal');
    is($sim->mode('normal')->{mode}, 'normal', 'back to normal');

    $sim->mode('error500');
    is(http(GET => $sim->url('/health'))->{status}, 200, 'control API not affected');
    is(join(' ', map { charge("F12")->{status} } 1 .. 3), '500 500 500',
       'without times: every request');
    $sim->mode('normal');

    my $m = $sim->mode('error500', times => 1, path_prefix => '/acquirer/v1/refunds');
    is($m->{path_prefix}, '/acquirer/v1/refunds', 'path_prefix set');
    is(charge('F13')->{status}, 200, 'path_prefix: charges not affected');
    is(query('F13')->{status}, 200, '... nor queries, nor do they count');
    is(refund('F13', 'RF13', 100)->{status}, 500, 'path_prefix: refund gets 500');
    is(refund('F13', 'RF13', 100)->{json}{status}, 'succeeded', '... once');
    is(entry(refunds => 'RF13')->{requests}, 2, '... two refund requests');

    eval { $sim->mode('bogus') };
    like($@, qr/400/, 'unknown mode: 400');
    eval { $sim->mode('slow', path_prefix => 'acquirer') };
    like($@, qr/400/, 'bad path_prefix: 400');
}

# ---- no full card number anywhere ---------------------------------------------------

{
    my $r = $sim->acquirer(POST => '/acquirer/v1/charges',
                           body => '{"card":{"number":"4111111111111111","cvc":"987"');
    push @PANS, '4111111111111111';
    is($r->{status}, 400, 'truncated JSON with a card: 400');
    charge('P-pan', description => 'paid with 5105105105105100');
    push @PANS, '5105105105105100';
    my $reqs = $sim->requests;
    my ($rec) = grep { $_->{body} =~ /"P-pan"/ } @$reqs;
    like($rec->{body} // '', qr/"number":"424242\*{6}4242"/, 'recorded body: PAN masked');
    like($rec->{body} // '', qr/"cvc":"\*\*\*"/, 'recorded body: cvc masked');
    like($rec->{body} // '', qr/paid with 510510\*{6}5100/, 'PAN in free text masked');
    like($sim->log_text, qr/424242\*{6}4242/, 'log shows the masked PAN');
    my $recorded = JSON::PP->new->encode($reqs);
    my $log = $sim->log_text;
    my %seen = map { $_ => 1 } @PANS;
    my @leaks = grep { index($log, $_) >= 0 || index($recorded, $_) >= 0 } sort keys %seen;
    ok(keys(%seen) >= 10, scalar(keys %seen) . ' distinct card numbers sent');
    is("@leaks", '', 'no full card number in the log or /_sim/requests');
    unlike($log . $recorded, qr/"cvc"\s*:\s*"(?:123|987)"/, 'no CVC either');
}

# ---- callbacks ----------------------------------------------------------------------

{
    # A stand-in for the gateway's /v1/notify/bank_card: checks merchant,
    # timestamp and signature, records what it got.
    my $port = free_port();
    my $srv = IO::Socket::IP->new(LocalHost => '127.0.0.1', LocalPort => $port,
                                  Listen => 8, ReuseAddr => 1) or die "listen: $!";
    my $rec_file = $sim->dir . '/callbacks';
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        $SIG{TERM} = 'DEFAULT';
        while (my $c = $srv->accept) {
            my $head = '';
            while (defined(my $l = <$c>)) { $head .= $l; last if $l eq "\r\n" }
            my ($len) = $head =~ /^content-length:\s*(\d+)/mi;
            my $body = '';
            read($c, $body, $len) if $len;
            my %h;
            $h{lc $1} = $2 while $head =~ /^([\w-]+):\s*(.*?)\r$/mg;
            my $ts = $h{'x-acquirer-timestamp'} // '';
            my $err = ($h{'x-acquirer-merchant'} // '') ne 'ACQ-M100' ? 'unknown_merchant'
                : ($ts !~ /^\d+$/ || abs(time - $ts) > 300
                   || ($h{'x-acquirer-signature'} // '')
                      ne hmac_sha256_hex("$ts\n$body", $SECRET)) ? 'bad_signature'
                : '';
            open my $fh, '>>', $rec_file;
            print {$fh} JSON::PP->new->canonical->encode({head => $head, body => $body}), "\n";
            close $fh;
            print {$c} $err
                ? "HTTP/1.1 401 Unauthorized\r\nContent-Length: " . (length($err) + 12)
                  . "\r\nConnection: close\r\n\r\n{\"error\":\"$err\"}"
                : "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n";
            close $c;
        }
        POSIX::_exit(0);
    }
    close $srv;
    my $url = "http://127.0.0.1:$port/v1/notify/bank_card";
    my $stored = query('F2')->{json};

    my $r = $sim->notify(url => $url, out_trade_no => 'F2', status => 'approved',
                         amount => 1999, currency => 'CNY');
    is($r->{status}, 204, 'notify: the receiver accepts the signature');
    my $sent = JSON::PP->new->decode($r->{sent}{body});
    is_deeply($sent, {event => 'charge.updated', charge => $stored},
              'notify: charge.updated with the stored charge object');
    my @got = map { JSON::PP->new->decode($_) } split /\n/, PayGW::Test::_slurp($rec_file);
    is($got[-1]{body}, $r->{sent}{body}, 'notify: body received as sent');
    like($got[-1]{head}, qr{^POST /v1/notify/bank_card HTTP/1.1\r\n}, 'notify: POST to url');
    like($got[-1]{head}, qr{^content-type: application/json\r$}mi, 'notify: JSON');

    $r = $sim->notify(url => $url, out_trade_no => 'F2', tamper => 'signature');
    is("$r->{status} $r->{body}", '401 {"error":"bad_signature"}', 'tamper signature');
    $r = $sim->notify(url => $url, out_trade_no => 'F2', tamper => 'body');
    is($r->{status}, 401, 'tamper body (changed after signing)');
    $r = $sim->notify(url => $url, out_trade_no => 'F2', tamper => 'merchant');
    is("$r->{status} $r->{body}", '401 {"error":"unknown_merchant"}', 'tamper merchant');
    $r = $sim->notify(url => $url, out_trade_no => 'F2', tamper => 'amount');
    is($r->{status}, 204, 'tamper amount: signature still valid');
    is(JSON::PP->new->decode($r->{sent}{body})->{charge}{amount}, 2000,
       'tamper amount: amount + 1');
    $r = $sim->notify(url => $url, out_trade_no => 'F2', timestamp => int(time) - 600);
    is($r->{status}, 401, 'old timestamp');
    $r = $sim->notify(url => $url, out_trade_no => 'P-new', amount => 500,
                      currency => 'CNY', status => 'declined',
                      decline_code => 'card_declined');
    $sent = JSON::PP->new->decode($r->{sent}{body})->{charge};
    is("$r->{status} $sent->{out_trade_no} $sent->{amount} $sent->{status} "
       . "$sent->{decline_code}", '204 P-new 500 declined card_declined',
       'notify for a charge the simulator does not know');
    like($sent->{charge_id}, qr/^ch_[0-9a-f]{24}$/, '... with a charge_id');

    kill 'TERM', $pid;
    waitpid $pid, 0;
    $r = $sim->notify(url => $url, out_trade_no => 'F2');
    like($r->{error} // '', qr/callback failed/, 'receiver down: error');
    is(http(POST => $sim->url('/_sim/notify'), json => {url => 'ftp://x'})->{status}, 400,
       'notify: bad request 400');
}

done_testing;
