#!/usr/bin/perl
# Merchant webhooks (SPEC §5): every state change reaches the payment's
# notify_url, signed per Standard Webhooks with the merchant's secret,
# at least once; retries on the schedule; 410 disables the endpoint;
# redirects are not followed; the events API lists events with their
# delivery and redelivers one; every event also goes to the Redis stream
# paygw:events.  The receiver is a real process (t/sim/webhook_receiver.js)
# that verifies each signature.
use strict;
use warnings;

use Test::More;
use Time::HiRes qw(time sleep);

use PayGW::Gateway qw(err_code sql_quote);
use PayGW::Receiver;
use PayGW::Test qw(wait_until);
use PayGW::Webhooks qw(webhook_http $WHSEC);

my $rx = PayGW::Receiver->start(secrets => [$WHSEC]);

# the configuration: t/lib/PayGW/Webhooks.pm shows what it adds to the
# default one (a fast retry schedule: 1s 1s 1s)
my $gw = PayGW::Gateway->start(workers => 2,
                               http => webhook_http(retry => '1s 1s 1s'));

sub requests_for { $rx->requests_for($_[0]) }
sub event_of {
    my ($no, $type) = @_;
    my ($e) = grep { $_->{type} eq $type } $gw->events($no);
    return $e;
}
sub delivered {
    my ($no, $type, $n) = @_;
    return wait_until(sub {
        my $e = event_of($no, $type) or return 0;
        scalar(requests_for($e->{event_id})) >= ($n // 1) ? $e : 0;
    }, timeout => 20);
}

# ---- create -> payment.succeeded, exactly once, signed --------------------

my $r = $gw->create(notify_url => $rx->url('/hook/ok'));
is($r->{status}, 201, 'create: 201') or diag $r->{body};
my $pno = $r->{json}{payment_no};
my $e = delivered($pno, 'payment.succeeded');
ok($e, 'payment.succeeded reached the receiver');
my @q = requests_for($e->{event_id} // '');
sleep 1.5;      # a second copy would come within a round or two
@q = requests_for($e->{event_id} // '');
is(scalar @q, 1, '... exactly once');
ok($q[0]{sig_ok}, '... its webhook-signature verifies with the merchant secret');
ok($q[0]{ts_ok}, '... webhook-timestamp is now');
is($q[0]{type}, 'payment.succeeded', '... the body is the event');
is($q[0]{content_type}, 'application/json', '... as JSON');
wait_until(sub { $gw->sql1("SELECT status FROM outbox_events WHERE event_id = "
                           . sql_quote($e->{event_id})) eq 'delivered' });
is($gw->sql1("SELECT CONCAT(status, ' ', attempts, ' ', last_status) FROM "
             . "outbox_events WHERE event_id = " . sql_quote($e->{event_id})),
   'delivered 1 200', 'the row: delivered after 1 attempt, last status 200');
is($e->{payload}{data}{status}, 'succeeded',
   'the event carries the payment as it was after the change');

# ---- refund -> refund.succeeded ---------------------------------------------

$r = $gw->api(POST => "/v1/payments/$pno/refunds",
              json => {refund_no => "RF81-$$", amount => 100},
              idempotency_key => "rf81-$$");
is($r->{status}, 201, 'refund: 201') or diag $r->{body};
my $rno = $r->{json}{refund_no} // '';
$e = delivered($rno, 'refund.succeeded');
ok($e, 'refund.succeeded reached the receiver (the payment\'s notify_url)');
ok($e && (requests_for($e->{event_id}))[0]{sig_ok}, '... signed');

# ---- close -> payment.closed ------------------------------------------------

my $qr = $gw->create(channel => 'alipay', notify_url => $rx->url('/hook/ok'))->{json};
$r = $gw->api(POST => "/v1/payments/$qr->{payment_no}/close",
              idempotency_key => "close81-$$");
is($r->{json}{status}, 'closed', 'close: closed') or diag $r->{body};
$e = delivered($qr->{payment_no}, 'payment.closed');
ok($e, 'payment.closed reached the receiver');

# ---- 3 failures, then 200: 4 attempts on the schedule -------------------------

$r = $gw->create(notify_url => $rx->url('/hook/fail/3'));
my $fno = $r->{json}{payment_no};
$e = delivered($fno, 'payment.succeeded', 4);
ok($e, 'receiver failing 3 times: a 4th attempt came');
@q = requests_for($e->{event_id} // '');
is_deeply([map { $_->{status} } @q], [500, 500, 500, 200],
          '... 500, 500, 500, then 200');
my @gaps = map { ($q[$_]{at} - $q[$_ - 1]{at}) / 1000 } 1 .. $#q;
ok(!grep({ $_ < 0.9 || $_ > 4 } @gaps),
   "... each retry about 1s after the one before (@gaps)");
ok(!grep({ !$_->{sig_ok} } @q), '... every attempt signed');
is(scalar(keys %{{ map { $_->{id} => 1 } @q }}), 1, '... one webhook-id for all');
wait_until(sub { $gw->sql1("SELECT status FROM outbox_events WHERE event_id = "
                           . sql_quote($e->{event_id})) eq 'delivered' });
is($gw->sql1("SELECT CONCAT(status, ' ', attempts) FROM outbox_events "
             . "WHERE event_id = " . sql_quote($e->{event_id})),
   'delivered 4', '... the row: delivered after 4 attempts');

# ---- always failing: the schedule ends ---------------------------------------

$r = $gw->create(notify_url => $rx->url('/hook/status/503'));
$e = delivered($r->{json}{payment_no}, 'payment.succeeded', 4);
ok(wait_until(sub { $gw->sql1("SELECT status FROM outbox_events WHERE event_id = "
                              . sql_quote($e->{event_id})) eq 'failed' }),
   'always 503: failed after the schedule (1 + 3 retries)');
sleep 1.5;
is(scalar(requests_for($e->{event_id})), 4, '... and no 5th attempt');

# ---- 410 disables the endpoint -------------------------------------------------

my $gone = $rx->url('/hook/status/410');
$r = $gw->create(notify_url => $gone);
$e = delivered($r->{json}{payment_no}, 'payment.succeeded');
ok(wait_until(sub { $gw->sql1("SELECT status FROM outbox_events WHERE event_id = "
                              . sql_quote($e->{event_id})) eq 'disabled' }),
   '410: the event is disabled');
my $gone_ev = $e->{event_id};
$r = $gw->create(notify_url => $gone);
my $g2 = $r->{json}{payment_no};
ok(wait_until(sub { (event_of($g2, 'payment.succeeded') // {})->{status} eq 'disabled' }),
   '... the next event to that endpoint is disabled too');
is(scalar(requests_for(event_of($g2, 'payment.succeeded')->{event_id})), 0,
   '... without being sent');

# ---- redirect not followed; reset and timeout retried ----------------------------

$r = $gw->create(notify_url => $rx->url('/hook/redirect'));
$e = delivered($r->{json}{payment_no}, 'payment.succeeded', 2);
@q = requests_for($e->{event_id});
ok(!grep({ $_->{path} eq '/hook/ok' } @q), 'redirect: not followed');
like($gw->sql1("SELECT last_error FROM outbox_events WHERE event_id = "
               . sql_quote($e->{event_id})), qr/redirect/, '... recorded as a failure');

for my $mode (qw(reset timeout)) {
    $r = $gw->create(notify_url => $rx->url("/hook/$mode"));
    $e = delivered($r->{json}{payment_no}, 'payment.succeeded', 2);
    ok($e, "$mode: retried");
    like($gw->sql1("SELECT last_error FROM outbox_events WHERE event_id = "
                   . sql_quote($e->{event_id})), qr/reach|timed out/,
         "... recorded: " . $gw->sql1("SELECT last_error FROM outbox_events "
                                      . "WHERE event_id = " . sql_quote($e->{event_id})));
}

$r = $gw->create(notify_url => $rx->url('/hook/big'));
$e = delivered($r->{json}{payment_no}, 'payment.succeeded');
ok(wait_until(sub { $gw->sql1("SELECT status FROM outbox_events WHERE event_id = "
                              . sql_quote($e->{event_id})) eq 'delivered' }),
   'a 200 with a 1 MB body: delivered (the body is not read)');

# ---- the events API ------------------------------------------------------------

my $all = $gw->api(GET => '/v1/events?limit=100');
is($all->{status}, 200, 'GET /v1/events: 200') or diag $all->{body};
my @evs = @{ $all->{json}{data} // [] };
ok(@evs >= 10, 'lists the merchant\'s events (' . scalar(@evs) . ')');
ok(!grep({ ($_->{data}{merchant_id} // 'M100') ne 'M100' } @evs), '... only M100\'s');
my ($fe) = grep { $_->{data}{payment_no} && $_->{data}{payment_no} eq $fno } @evs;
is_deeply([@{$fe->{delivery}}{qw(status attempts last_status)}],
          ['delivered', 4, 200], '... with delivery state, attempts, last status');
my ($ge) = grep { $_->{id} eq $gone_ev } @evs;
is($ge->{delivery}{status}, 'disabled', '... the 410 one: disabled');
ok($ge->{delivery}{endpoint_disabled}, '... endpoint_disabled: true');

# pagination
my (@pages, $after);
for (1 .. 50) {
    my $p = $gw->api(GET => '/v1/events?limit=3' . ($after ? "&after=$after" : ''));
    last unless $p->{status} == 200 && @{ $p->{json}{data} };
    push @pages, map { $_->{id} } @{ $p->{json}{data} };
    $after = $p->{json}{next_after};
    last unless $p->{json}{has_more};
}
is_deeply(\@pages, [map { $_->{id} } @evs], 'pages of 3 walk the same list, in order');
is(scalar(grep { !/^evt_[0-9a-f]{20}$/ } @pages), 0, 'event ids are evt_... (SPEC §5)');
is($gw->api(GET => '/v1/events?limit=0')->{status}, 400, 'limit=0: 400');
is(scalar @{ $gw->api(GET => '/v1/events?after=Enosuchevent')->{json}{data} }, 0,
   'an unknown cursor lists nothing');

# redeliver: one more attempt now (and the endpoint enabled again)
$rx->clear;
my $first = $evs[0]{id};
$r = $gw->api(POST => "/v1/events/$first/redeliver", idempotency_key => "rd-$$");
is($r->{status}, 202, 'redeliver: 202') or diag $r->{body};
ok(wait_until(sub { scalar requests_for($first) }, timeout => 10),
   '... the event is sent again');
is($gw->api(POST => "/v1/events/Enope/redeliver", idempotency_key => "rd2-$$")->{status},
   404, 'redeliver an unknown event: 404');

# ---- no destination: streamed, recorded skipped (one statement per round) ------

{
    my @nos = map { $_->{json}{payment_no} } map { $gw->create } 1 .. 3;
    is(scalar(grep { defined } @nos), 3, 'three creates without a notify_url');
    my $rows = sub {
        join ',', map { $gw->sql1("SELECT CONCAT(status, ' ', attempts, ' ', "
                                  . "streamed, ' ', COALESCE(last_error, '-'), ' ', "
                                  . "ISNULL(lease_owner)) FROM outbox_events "
                                  . "WHERE object_no = " . sql_quote($_)) } @nos;
    };
    ok(wait_until(sub { $rows->() eq join ',', ('skipped 0 1 - 1') x 3 },
                  timeout => 20),
       'their events: skipped, no attempt, streamed, no error, lease released')
        or diag $rows->();
    my $stream = $gw->redis->cli('XRANGE', 'paygw:events', '-', '+');
    my $seen = grep { my $id = (event_of($_, 'payment.succeeded') // {})->{event_id};
                      $id && $stream =~ /^\Q$id\E$/m } @nos;
    is($seen, 3, '... and each is in paygw:events');
}

# ---- the stream -----------------------------------------------------------------

my $types = $gw->redis->cli('XRANGE', 'paygw:events', '-', '+');
for my $t (qw(payment.succeeded refund.succeeded payment.closed)) {
    like($types, qr/^\Q$t\E$/m, "paygw:events has $t");
}

# ---- metrics ------------------------------------------------------------------

ok(($gw->metric('paygw_webhook_deliveries_total{result="delivered"}') // 0) >= 5,
   'paygw_webhook_deliveries_total{result="delivered"} counts');
ok(($gw->metric('paygw_webhook_deliveries_total{result="failed"}') // 0) >= 3,
   '... and {result="failed"}');
ok(defined $gw->metric('paygw_webhook_backlog'), 'paygw_webhook_backlog shown');
ok(($gw->metric('paygw_webhook_duration_seconds_count{endpoint="merchant"}') // 0) > 0,
   'paygw_webhook_duration_seconds counts');

# ---- housekeeping: delivered events past the retention (7d) are purged -----------

# the retention counts from when an event was settled: a delivered
# event's next_attempt_at is its delivery (not its lease's end)
my ($delivered, $off) = split /\t/, $gw->sql1(
    "SELECT COUNT(*), SUM(ABS(TIMESTAMPDIFF(MICROSECOND, next_attempt_at, "
    . "delivered_at)) > 1000000) FROM outbox_events WHERE status = 'delivered'");
ok($delivered > 0, "events were delivered ($delivered)");
is($off, 0, '... each with next_attempt_at = its delivery');

# (settled: next_attempt_at is when; the retention counts from there)
for my $ev (['delivered', 8], ['failed', 8], ['late', 0]) {
    my ($name, $days) = @$ev;
    my $st = $name eq 'late' ? 'delivered' : $name;
    $gw->db->sql("INSERT INTO outbox_events (event_id, merchant_id, type, object_no, "
                 . "payload, status, created_at, next_attempt_at) VALUES "
                 . "('Eold$name$$', 'M100', 'payment.succeeded', 'Pold', '{}', "
                 . "'$st', NOW(3) - INTERVAL 8 DAY, "
                 . "NOW(3) - INTERVAL $days DAY - INTERVAL 1 HOUR)");
}
ok(wait_until(sub { $gw->sql1("SELECT COUNT(*) FROM outbox_events "
                              . "WHERE event_id = 'Eolddelivered$$'") == 0 }),
   'an event delivered 8 days ago is purged');
is($gw->sql1("SELECT COUNT(*) FROM outbox_events WHERE event_id = 'Eoldfailed$$'"), 1,
   '... a failed one is kept');
is($gw->sql1("SELECT COUNT(*) FROM outbox_events WHERE event_id = 'Eoldlate$$'"), 1,
   '... and one created 8 days ago but delivered an hour ago: the retention '
   . 'counts from its delivery');
# the purge as the module sends it (MariaDB's general log): a range of
# idx_due, no index on created_at for every event to write
my ($purge) = $gw->sent_statements(qr/^DELETE FROM outbox_events/, sub { },
                                   timeout => 30);
my $purge_plan = $gw->plan($purge);
like($purge_plan, qr/"key":\s*"idx_due"/, 'the purge: through idx_due')
    or diag($purge // 'no purge seen');
like($purge_plan, qr/"access_type":\s*"range"/, '... a range, not a scan');

ok(wait_until(sub { ($gw->metric('paygw_webhook_backlog') // -1) == 0 }, timeout => 30),
   'paygw_webhook_backlog: 0 once everything is settled')
    or diag $gw->db->sql("SELECT event_id, status, attempts, next_attempt_at, "
                         . "lease_until, NOW(3) FROM outbox_events WHERE status = 'pending'")
       . "metric: " . ($gw->metric('paygw_webhook_backlog') // 'none');

unlike($gw->ngx->error_log, qr/MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw/, 'no secret in the error log');

done_testing;
