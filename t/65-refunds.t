#!/usr/bin/perl
# Refunds as a merchant sees them (SPEC §3 Refunds): partial then full,
# the payment's state and refunded_amount, the refund object, refusals
# (over-refund 422, reused refund_no 409, refund of a failed payment 409),
# and the money invariant -- succeeded plus pending refunds never exceed
# the payment -- under 20 concurrent refunds, checked in the gateway's
# answers, its database and at the acquirer.  A refund whose answer is lost
# is "unknown" (202), keeps its amount reserved, and is settled later.
use strict;
use warnings;

use Test::More;
use JSON::PP ();

use PayGW::Gateway qw(err_code sql_quote);
use PayGW::Test qw(http_parallel sign_request wait_until);

# Four workers share the refunds below.  Two tries per provider call; a
# generous per-try timeout, so that 20 refunds at once on a loaded machine
# do not time out into "unknown" (the faults below are 500s, not
# timeouts); unknown_grace no less than the time a create may still run
# (MySQL 1 s + 2 s, 2 x (1 s + 10 s)), or nginx -t refuses it.
my $gw = PayGW::Gateway->start(workers => 4, http => <<'EOF');
    paygw_zone  paygw:1m;
    upstream paygw_redis { server 127.0.0.1:%%REDIS_PORT%%; keepalive 16; }
    paygw_mysql main host=127.0.0.1 port=%%MYSQL_PORT%% user=paygw
                password_file=%%MYSQL_PASSWORD_FILE%%
                database=paygw max_conns=8 connect_timeout=1s
                query_timeout=2s;
    paygw_keys  %%REPO%%/conf/demo/keys.conf;

    paygw_channel bank_card location=/_paygw/bank merchant_id=ACQ-M100
                  secret_file=%%REPO%%/conf/demo/acquirer.secret
                  attempts=2 unknown_grace=25s breaker_failures=0;
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
    }
EOF

my $REFUNDS = '/acquirer/v1/refunds';

sub pay { $gw->create({@_})->{json} // {} }

sub refund {
    my ($pno, $rno, $amount, %o) = @_;
    return $gw->api(POST => "/v1/payments/$pno/refunds",
                    json => {refund_no => $rno, amount => $amount,
                             reason => $o{reason} // 'customer request'},
                    idempotency_key => $o{key} // $gw->fresh_key('k65'));
}

# payments row: [status, refunded_amount, refund_reserved]
sub prow {
    [split /\t/, $gw->sql1("SELECT status, refunded_amount, refund_reserved "
                      . "FROM payments WHERE payment_no = " . sql_quote($_[0]))]
}

sub acq_refunds {
    my ($pno) = @_;
    return grep { $_->{out_trade_no} eq $pno } @{ $gw->sim->charges->{refunds} };
}

sub acq_refunded_sum {
    my $s = 0;
    $s += $_->{amount} for grep { $_->{status} eq 'succeeded' } acq_refunds($_[0]);
    return $s;
}

sub event_types {
    my ($object_no) = @_;
    [split /\n/, $gw->db->sql("SELECT type FROM outbox_events WHERE object_no = "
                              . sql_quote($object_no) . " ORDER BY id")]
}

# ---- partial, then full ---------------------------------------------------

my $P = pay(amount => 1000);
my $pno = $P->{payment_no} // '';
is($P->{status}, 'succeeded', 'a 1000 payment to refund');

my $rno1 = "R65a-$$";
my $r1 = refund($pno, $rno1, 300);
is($r1->{status}, 201, 'partial refund 300: 201') or diag($r1->{body});
my $j = $r1->{json} // {};
is_deeply({map { $_ => $j->{$_} } qw(refund_no payment_no amount currency status reason)},
          {refund_no => $rno1, payment_no => $pno, amount => 300, currency => 'CNY',
           status => 'succeeded', reason => 'customer request'},
          '... the refund object');
my @ar = acq_refunds($pno);
is(scalar @ar, 1, '... one refund at the acquirer');
is($j->{channel_refund_no}, $ar[0] && $ar[0]{refund_id},
   '... channel_refund_no is the acquirer\'s refund id');
is($ar[0] && $ar[0]{amount}, 300, '... for 300');

my $pp = $gw->payment($pno);
is_deeply([@$pp{qw(status refunded_amount amount)}], ['partially_refunded', 300, 1000],
          'payment: partially_refunded, refunded_amount 300');
is_deeply(prow($pno), ['partially_refunded', 300, 0], 'DB: same, nothing left reserved');
is_deeply(event_types($rno1), ['refund.succeeded'], 'one refund.succeeded event');
{
    my ($hex) = $gw->sql1("SELECT HEX(payload) FROM outbox_events WHERE object_no = "
                     . sql_quote($rno1));
    my $pl = eval { JSON::PP->new->decode(pack 'H*', $hex) } // {};
    is_deeply([$pl->{type}, $pl->{data}{refund_no}, $pl->{data}{amount}],
              ['refund.succeeded', $rno1, 300], '... its payload carries the refund');
}

my $g = $gw->api(GET => "/v1/refunds/$rno1");
is($g->{status}, 200, 'GET /v1/refunds/{no}: 200');
is_deeply($g->{json}, $j, '... the same refund object');
my $g404 = $gw->api(GET => "/v1/refunds/R65-none-$$");
is_deeply([$g404->{status}, err_code($g404)], [404, 'not_found'],
          'GET of an unknown refund_no: 404 not_found');

# idempotent replay: no second refund
{
    my $k = $gw->fresh_key('k65');
    my $a = refund($pno, "R65r-$$", 50, key => $k);
    # the answer's record lands right after the answer: a replay that
    # comes first finds the key in use, as a client may, and tries again
    # (seen with 4 workers on a loaded machine, clustered backends)
    my $b;
    wait_until(sub {
        $b = refund($pno, "R65r-$$", 50, key => $k);
        !($b->{status} == 409 && err_code($b) eq 'idempotency_key_in_use');
    }, timeout => 10);
    is($a->{status}, 201, 'refund 50: 201');
    is_deeply([$b->{status}, $b->{body}], [$a->{status}, $a->{body}],
              'same key, same body: the stored answer byte for byte')
        or diag($b->{body});
    is($b->{headers}{'idempotent-replayed'}, 'true', '... Idempotent-Replayed: true');
    is(scalar(acq_refunds($pno)), 2, '... and no second refund at the acquirer');
}
# refunded so far: 350

# over-refund: nothing written, nothing sent
{
    my $rows = $gw->count_rows('refunds');
    my $acq = scalar acq_refunds($pno);
    my $o = refund($pno, "R65o-$$", 651);
    is($o->{status}, 422, 'refund 651 of the 650 left: 422');
    is(err_code($o), 'refund_exceeds_payment', '... refund_exceeds_payment');
    is($gw->count_rows('refunds'), $rows, '... no refund row');
    is(scalar(acq_refunds($pno)), $acq, '... nothing sent to the acquirer');
    is_deeply(prow($pno), ['partially_refunded', 350, 0], '... payment unchanged');
}

# reused refund_no
{
    my $d = refund($pno, $rno1, 10);
    is($d->{status}, 409, 'reused refund_no (new idempotency key): 409');
    is(err_code($d), 'duplicate_refund_no', '... duplicate_refund_no');
    is($gw->sql1("SELECT COUNT(*) FROM refunds WHERE refund_no = " . sql_quote($rno1)), 1,
       '... still one refund with that number');
    is($gw->api(GET => "/v1/refunds/$rno1")->{json}{amount}, 300,
       '... and it is the original');
    is_deeply(prow($pno), ['partially_refunded', 350, 0],
              '... nothing reserved by the refused refund');
}

# the rest, exactly
{
    my $rno2 = "R65b-$$";
    my $f = refund($pno, $rno2, 650);
    is($f->{status}, 201, 'refund the remaining 650: 201') or diag($f->{body});
    is($f->{json}{status}, 'succeeded', '... succeeded');
    my $fp = $gw->payment($pno);
    is_deeply([@$fp{qw(status refunded_amount)}], ['refunded', 1000],
              'payment: refunded, refunded_amount 1000');
    is_deeply(prow($pno), ['refunded', 1000, 0], 'DB: refunded 1000, nothing reserved');
    is(acq_refunded_sum($pno), 1000, 'acquirer refunded 1000 in all');

    # A fully refunded payment has nothing left: any further refund is
    # an excess (422), the same answer whichever refund lost the race.
    my $more = refund($pno, "R65c-$$", 1);
    is($more->{status}, 422, 'one more unit on a fully refunded payment: 422')
        or diag($more->{body});
    is(err_code($more), 'refund_exceeds_payment', '... refund_exceeds_payment');
    is(acq_refunded_sum($pno), 1000, '... nothing more refunded');
}

# refund of a failed payment / of no payment
{
    my $F = pay(card => {number => '4000000000000002', exp_month => 12,
                         exp_year => 2030, cvc => '123'});
    is($F->{status}, 'failed', 'a declined payment');
    my $x = refund($F->{payment_no} // '', "R65f-$$", 100);
    is($x->{status}, 409, 'refund of a failed payment: 409');
    is(err_code($x), 'invalid_state', '... invalid_state');
    is(scalar(acq_refunds($F->{payment_no} // '')), 0, '... nothing sent to the acquirer');
    is($gw->sql1("SELECT COUNT(*) FROM refunds WHERE payment_no = "
            . sql_quote($F->{payment_no})), 0, '... no refund row');

    my $y = refund('P00000000000000000000', "R65n-$$", 100);
    is_deeply([$y->{status}, err_code($y)], [404, 'not_found'],
              'refund of a nonexistent payment: 404 not_found');
}

# ---- concurrency: the sum never exceeds the payment ---------------------

sub concurrent_refunds {
    my ($pno, $count, $amount, $tag) = @_;
    my $enc = JSON::PP->new->canonical;
    my $path = "/v1/payments/$pno/refunds";
    my @reqs;
    for my $i (1 .. $count) {
        my $body = $enc->encode({refund_no => "R65$tag-$$-$i", amount => $amount,
                                 reason => 'concurrent'});
        push @reqs, [POST => $gw->url($path), body => $body, timeout => 30,
                     headers => {'Content-Type' => 'application/json',
                                 'Idempotency-Key' => "k65$tag-$$-$i",
                                 Authorization => sign_request('demo', 'demo-secret',
                                                               'POST', $path, $body)}];
    }
    return http_parallel(\@reqs);
}

sub tally {
    my %c;
    $c{ $_->{status} == 201 ? "201 " . ($_->{json}{status} // '?')
        : "$_->{status} " . (err_code($_) // '?') }++ for @_;
    return \%c;
}

# A race shows only sometimes: the 100s run three times, on fresh payments.
for my $case ([100, 10, 1000, 'refunded', 'x'], [100, 10, 1000, 'refunded', 'xx'],
              [100, 10, 1000, 'refunded', 'xxx'], [150, 6, 900, 'partially_refunded', 'y']) {
    my ($amount, $wins, $total, $state, $tag) = @$case;
    my $C = pay(amount => 1000);
    my $cno = $C->{payment_no} // '';
    my @res = concurrent_refunds($cno, 20, $amount, $tag);
    my $t = tally(@res);
    # A loser is told the amount is exceeded (422); one that only arrives
    # once the payment is fully refunded may be told it is no longer
    # refundable (409 invalid_state, README) -- nothing else.
    my $late = $t->{"409 invalid_state"} // 0;
    is_deeply($t, {"201 succeeded" => $wins,
                   "422 refund_exceeds_payment" => 20 - $wins - $late,
                   ($late ? ("409 invalid_state" => $late) : ())},
              "20 concurrent refunds of $amount on 1000: $wins succeed, "
              . (20 - $wins) . " refused")
        or diag(explain($t));
    ok(!$late || $state eq 'refunded', '... 409 only once nothing is left to refund');
    my $cp = $gw->payment($cno);
    is_deeply([@$cp{qw(status refunded_amount)}], [$state, $total],
              "... payment $state, refunded_amount $total");
    is_deeply(prow($cno), [$state, $total, 0], "... DB row agrees, nothing left reserved");
    is($gw->sql1("SELECT COALESCE(SUM(amount), 0) FROM refunds WHERE status = 'succeeded' "
            . "AND payment_no = " . sql_quote($cno)), $total,
       "... SUM of succeeded refunds in the DB is $total");
    is($gw->sql1("SELECT COUNT(*) FROM refunds WHERE status <> 'succeeded' "
            . "AND payment_no = " . sql_quote($cno)), 0,
       '... no refund left pending or unknown');
    my %won = map { ($_->{json}{refund_no} // '') => 1 } grep { $_->{status} == 201 } @res;
    is_deeply([sort split /\n/, $gw->db->sql(
                   "SELECT refund_no FROM refunds WHERE status = 'succeeded' "
                   . "AND payment_no = " . sql_quote($cno))],
              [sort keys %won], '... exactly the refunds answered 201 are succeeded');
    is(acq_refunded_sum($cno), $total, "... the acquirer refunded $total");
    ok(acq_refunded_sum($cno) <= 1000, '... never more than the payment');
    is($gw->sql1("SELECT COUNT(*) FROM outbox_events WHERE type = 'refund.succeeded' "
            . "AND object_no IN (SELECT refund_no FROM refunds WHERE payment_no = "
            . sql_quote($cno) . ")"), $wins, "... $wins refund.succeeded events");
}

# ---- the acquirer's answer is lost ---------------------------------------

# The acquirer processed the refund but answered 500 to every attempt.
{
    my $U = pay(amount => 1000);
    my $uno = $U->{payment_no} // '';
    my $rno = "R65u-$$";
    $gw->sim->mode('error500_after', path_prefix => $REFUNDS);
    my $u = refund($uno, $rno, 400);
    $gw->sim->mode('normal');
    is($u->{status}, 202, 'refund, acquirer refunded but answered 500: 202')
        or diag($u->{body});
    is($u->{json}{status}, 'unknown', '... status unknown');
    unlike($u->{body}, qr/fail/i, '... never says failed');
    is_deeply(prow($uno), ['succeeded', 0, 400], '... 400 reserved, not yet refunded');
    is(scalar @{ event_types($rno) }, 0, '... no event for unknown');

    my $g = $gw->api(GET => "/v1/refunds/$rno");
    is($g->{status}, 200, 'GET the refund after the acquirer recovered: 200');
    is($g->{json}{status}, 'succeeded', '... settled succeeded');
    like($g->{json}{channel_refund_no} // '', qr/^re_/, '... with the acquirer refund id');
    is_deeply(prow($uno), ['partially_refunded', 400, 0],
              '... payment partially_refunded 400, reservation released');
    is_deeply(event_types($rno), ['refund.succeeded'], '... one refund.succeeded event');
    is(acq_refunded_sum($uno), 400, '... the acquirer refunded it exactly once');
}

# The acquirer is down (500 without processing) for every attempt.
{
    my $D = pay(amount => 1000);
    my $dno = $D->{payment_no} // '';
    my $rno = "R65d-$$";
    $gw->sim->mode('error500', path_prefix => $REFUNDS);
    my $d = refund($dno, $rno, 400);
    is($d->{status}, 202, 'refund while the acquirer is down: 202') or diag($d->{body});
    is($d->{json}{status}, 'unknown', '... status unknown');
    unlike($d->{body}, qr/fail/i, '... never says failed');
    is_deeply(prow($dno), ['succeeded', 0, 400], '... its 400 stays reserved');

    my $over = refund($dno, "R65d2-$$", 700);
    is($over->{status}, 422, 'another 700 while 400 is in doubt: 422');
    is(err_code($over), 'refund_exceeds_payment', '... refund_exceeds_payment');
    is($gw->sql1("SELECT COUNT(*) FROM refunds WHERE payment_no = " . sql_quote($dno)), 1,
       '... not written');
    $gw->sim->mode('normal');

    my $st = $gw->api(GET => "/v1/refunds/$rno")->{json}{status} // '';
    ok($st eq 'unknown' || $st eq 'failed' || $st eq 'succeeded',
       "GET right after recovery answers a refund state ($st)");

    # The acquirer never saw it: once unknown_grace has passed a GET must
    # settle it one way or the other, or its reservation blocks the
    # payment forever.
    my $last;
    wait_until(sub { $last = $gw->api(GET => "/v1/refunds/$rno");
                     ($last->{json}{status} // '') ne 'unknown' },
               timeout => 6, interval => 0.5);
    my $fin = $last->{json}{status} // '';
    isnt($fin, 'unknown', 'GET after the acquirer recovered settles the refund')
        or diag($last->{body});
    if ($fin eq 'failed') {
        is_deeply(prow($dno), ['succeeded', 0, 0], '... failed: reservation released');
        is(acq_refunded_sum($dno), 0, '... and the acquirer refunded nothing');
        is_deeply(event_types($rno), ['refund.failed'], '... one refund.failed event');
        is(refund($dno, "R65d3-$$", 1000)->{status}, 201,
           '... the full amount can be refunded again');
    } elsif ($fin eq 'succeeded') {
        is_deeply(prow($dno), ['partially_refunded', 400, 0],
                  '... succeeded: payment refunded 400');
        is(acq_refunded_sum($dno), 400, '... and the acquirer refunded 400 once');
        is_deeply(event_types($rno), ['refund.succeeded'], '... one refund.succeeded event');
    }
}

is($gw->sql1("SELECT COUNT(*) FROM payments WHERE refunded_amount + refund_reserved > amount"),
   0, 'no payment anywhere has more refunded or reserved than its amount');

done_testing;
