#!/usr/bin/perl
# What a merchant sees when the acquirer misbehaves (SPEC §3 payment states,
# §4 retries): a lost, failed, unverifiable or mismatching answer is
# "unknown" (202) -- never guessed as failed -- and a later GET or the admin
# resolve endpoint settles it by asking the acquirer: succeeded when the
# acquirer did charge, failed (charge_not_received) once unknown_grace has
# passed when it never saw the charge.  Retries reuse out_trade_no, so they
# never charge twice.  MySQL down: 503 before anything is charged, and the
# same request succeeds once MySQL is back.
use strict;
use warnings;

use Test::More;
use JSON::PP ();
use Time::HiRes qw(time);

use PayGW::Gateway qw(err_code sql_quote);
use PayGW::Test qw(wait_until);

# Two tries per provider call, each bounded by a 1 s read timeout (the
# "slow" acquirer answers after 3 s); a payment the acquirer never saw
# counts as not charged once it is 7 s old (unknown_grace: no less than
# the time its create may still run, MySQL 1 s + 2 s and 2 x (1 s + 1 s),
# or nginx -t refuses it).
my $gw = PayGW::Gateway->start(http => <<'EOF');
    paygw_zone  paygw:1m;
    upstream paygw_redis { server 127.0.0.1:%%REDIS_PORT%%; keepalive 16; }
    paygw_mysql main host=127.0.0.1 port=%%MYSQL_PORT%% user=paygw
                password_file=%%MYSQL_PASSWORD_FILE%%
                database=paygw max_conns=8 connect_timeout=1s
                query_timeout=2s;
    paygw_keys  %%REPO%%/conf/demo/keys.conf;

    paygw_channel bank_card location=/_paygw/bank merchant_id=ACQ-M100
                  secret_file=%%REPO%%/conf/demo/acquirer.secret
                  attempts=2 unknown_grace=7s breaker_failures=0;
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
            proxy_send_timeout 1s;
            proxy_read_timeout 1s;
            subrequest_output_buffer_size 64k;
        }
        location /v1/ { paygw_api; }
    }
EOF

my $CHARGES = '/acquirer/v1/charges';

sub db_status {
    $gw->sql1("SELECT status FROM payments WHERE payment_no = " . sql_quote($_[0]))
}

# A 202 "unknown" answer, as a merchant must be able to read it: no
# failure, no guess.
sub unknown_ok {
    my ($r, $name) = @_;
    is($r->{status}, 202, "$name: 202") or diag($r->{body});
    my $j = $r->{json} // {};
    is($j->{status}, 'unknown', "$name: status unknown");
    ok(!defined $j->{failure_code}, "$name: no failure_code");
    # (our random identifiers may spell "fail": they are not the answer's words)
    (my $words = $r->{body} // '') =~ s/"(?:payment_no|business_no|channel_trade_no)":"[^"]*"//g;
    unlike($words, qr/fail|declin/i, "$name: the answer never says failed");
    like($j->{payment_no} // '', qr/\S/, "$name: payment_no given for a later GET");
}

# ---- each fault: 202 unknown, then settled by a GET ---------------------

# mode => [sim options, the acquirer processed the charge?, charge requests]
my @modes = (
    [error500        => {},                  0, 2],
    [reset           => {},                  0, 2],
    [slow            => {delay_ms => 3000},  1, 2],
    [error500_after  => {},                  1, 2],
    [reset_after     => {},                  1, 2],
    [bad_signature   => {},                  1, undef],
    [amount_mismatch => {},                  1, undef],
);

my %unprocessed;        # payment_no => mode
for my $m (@modes) {
    my ($mode, $opt, $processed, $reqs) = @$m;
    $gw->sim->mode($mode, %$opt, path_prefix => $CHARGES);
    my $r = $gw->create();
    $gw->sim->mode('normal');
    my $no = $r->{json}{payment_no} // '';

    unknown_ok($r, "create, acquirer $mode");

    # Within unknown_grace (7 s) for the never-charged case: GET at once,
    # before anything slower, so the age cannot pass the grace meanwhile.
    my $g = $processed ? undef : $gw->get_payment($no);
    is(db_status($no), 'unknown', "$mode: stored as unknown");
    is(scalar($gw->events($no)), 0, "$mode: no outbox event for unknown");
    my @c = $gw->charges_for($no);
    if ($processed) {
        is(scalar @c, 1, "$mode: the acquirer did charge (once)");
    } else {
        is(scalar @c, 0, "$mode: the acquirer has no charge");
    }
    if (defined $reqs) {
        my $seen = grep { $_->{path} eq $CHARGES && ($_->{body} // '') =~ /\Q$no\E/ }
                   @{ $gw->sim->requests };
        is($seen, $reqs, "$mode: the charge was tried exactly attempts=$reqs times");
    }

    $g //= $gw->get_payment($no);
    is($g->{status}, 200, "$mode: GET after the acquirer recovered: 200");
    my $j = $g->{json} // {};
    if ($processed) {
        is($j->{status}, 'succeeded', "$mode: GET settles it succeeded");
        is($j->{channel_trade_no}, $c[0] && $c[0]{charge_id},
           "$mode: with the acquirer's charge id");
        is(db_status($no), 'succeeded', "$mode: stored succeeded");
        my @ev = $gw->events($no);
        is_deeply([map { $_->{type} } @ev], ['payment.succeeded'],
                  "$mode: one payment.succeeded event");
        is($ev[0] && $ev[0]{payload}{data}{payment_no}, $no,
           "$mode: event payload names the payment");
    } else {
        is($j->{status}, 'unknown',
           "$mode: acquirer never saw it, within unknown_grace: still unknown");
        unlike($g->{body}, qr/fail/i, "$mode: ... the answer never says failed");
        is(db_status($no), 'unknown', "$mode: ... still stored unknown");
        is(scalar($gw->events($no)), 0, "$mode: ... no event yet");
        $unprocessed{$no} = $mode;
    }
}

# ---- never charged: failed (charge_not_received) after unknown_grace -----

for my $no (sort keys %unprocessed) {
    my $mode = $unprocessed{$no};
    my $last;
    wait_until(sub { $last = $gw->get_payment($no); ($last->{json}{status} // '') ne 'unknown' },
               timeout => 15, interval => 0.5);
    is($last->{status}, 200, "$mode: GET after unknown_grace: 200");
    is($last->{json}{status}, 'failed', "$mode: settled failed");
    is($last->{json}{failure_code}, 'charge_not_received',
       "$mode: failure_code charge_not_received");
    is(db_status($no), 'failed', "$mode: stored failed");
    is(scalar($gw->charges_for($no)), 0, "$mode: and indeed never charged");
    $gw->get_payment($no);
    is_deeply([map { $_->{type} } $gw->events($no)], ['payment.failed'],
              "$mode: exactly one payment.failed event (a second GET adds none)");
}

# ---- retries: same out_trade_no, never a double charge ------------------

{
    $gw->sim->mode('error500', times => 1, path_prefix => $CHARGES);
    my $r = $gw->create();
    is($r->{status}, 201, 'one acquirer 500, attempts=2: the retry succeeds, 201')
        or diag($r->{body});
    is($r->{json}{status}, 'succeeded', '... succeeded');
    my $no = $r->{json}{payment_no} // '';
    my @c = $gw->charges_for($no);
    is(scalar @c, 1, '... exactly one charge at the acquirer');
    is($c[0] && $c[0]{requests}, 2, '... after two charge requests');

    $gw->sim->mode('error500_after', times => 1, path_prefix => $CHARGES);
    $r = $gw->create();
    $no = $r->{json}{payment_no} // '';
    is($r->{status}, 201, 'charged but answered 500, retried: 201') or diag($r->{body});
    is($r->{json}{status}, 'succeeded', '... succeeded');
    @c = $gw->charges_for($no);
    is(scalar @c, 1, '... the retry did not charge twice');
    is($c[0] && $c[0]{duplicates}, 1, '... the acquirer saw the retry as a duplicate');
    is_deeply([map { $_->{type} } $gw->events($no)], ['payment.succeeded'],
              '... one payment.succeeded event');
    $gw->sim->mode('normal');
}

# ---- MySQL down: nothing charged, the same request works later ----------

{
    my $body = PayGW::Gateway->payment_body(amount => 4321);
    my $k = $gw->fresh_key('k64');
    $gw->sim->reset;
    $gw->db->stop;
    my $r = $gw->api(POST => '/v1/payments', json => $body, idempotency_key => $k);
    is($r->{status}, 503, 'MySQL down: create answers 503') or diag($r->{body});
    is(err_code($r), 'backend_unavailable', '... backend_unavailable');
    is(scalar @{ $gw->sim->requests }, 0, '... and the acquirer received no request');
    is(scalar @{ $gw->sim->charges->{charges} }, 0, '... so nothing was charged');
    like($gw->ngx->error_log, qr/mysql unavailable: \S/,
         '... and the error log says why (the driver\'s reason)');

    $gw->db->start_again;
    my $r2 = $gw->api(POST => '/v1/payments', json => $body, idempotency_key => $k);
    is($r2->{status}, 201, 'MySQL back: the same request (same key) succeeds')
        or diag($r2->{body});
    is($r2->{json}{status}, 'succeeded', '... succeeded');
    ok(!$r2->{headers}{'idempotent-replayed'}, '... a real run, not a replay of the 503');
    is(scalar @{ $gw->sim->charges->{charges} }, 1, '... one charge at the acquirer');
    is($gw->sql1("SELECT COUNT(*) FROM payments WHERE business_no = "
            . sql_quote($body->{business_no})), 1, '... one payment row');
}

# ---- MySQL refuses a statement: its errno and message in the log --------

{
    $gw->sim->reset;
    $gw->db->sql('RENAME TABLE payments TO payments_away');
    my $bno = 'B64-' . $gw->fresh_key('gone');
    my $r = $gw->api(POST => '/v1/payments',
                     json => PayGW::Gateway->payment_body(business_no => $bno),
                     idempotency_key => $gw->fresh_key('k64'));
    $gw->db->sql('RENAME TABLE payments_away TO payments');
    is($r->{status}, 500, 'payments table gone: create answers 500');
    is(scalar @{ $gw->sim->requests }, 0, '... and the acquirer received no request');
    my $log = $gw->ngx->error_log;
    like($log, qr/cannot insert payment: error 1146: Table '\?' doesn't exist/,
         '... the log has the MySQL errno and message');
    unlike($log, qr/\Q$bno\E/, '... never a value of the statement');

    # a read the server refuses: "unavailable" to the client, why in the log
    $gw->db->sql('RENAME TABLE payments TO payments_away');
    $r = $gw->api(GET => '/v1/settlements?date=2026-01-02');
    $gw->db->sql('RENAME TABLE payments_away TO payments');
    is(err_code($r), 'backend_unavailable',
       'payments table gone: settlements answer backend_unavailable');
    like($gw->ngx->error_log,
         qr/mysql unavailable: error 1146: Table '\?' doesn't exist/,
         '... the log says why, not an empty reason');
}

# ---- admin resolve settles every unknown payment at once ----------------

{
    my (@charged, $lost);
    for my $mode (qw(error500_after error500_after bad_signature)) {
        $gw->sim->mode($mode, path_prefix => $CHARGES);
        my $r = $gw->create();
        unknown_ok($r, "resolve setup ($mode)");
        push @charged, $r->{json}{payment_no} // '';
    }
    $gw->sim->mode('normal');

    my $d = $gw->api(POST => '/v1/admin/resolve', json => {}, key => 'demo',
                     idempotency_key => $gw->fresh_key('k64'));
    is($d->{status}, 403, 'resolve with a merchant key: 403');
    is(err_code($d), 'forbidden', '... forbidden');
    my $nk = $gw->api(POST => '/v1/admin/resolve', json => {}, key => 'ops');
    is($nk->{status}, 400, 'resolve without Idempotency-Key: 400');
    is(err_code($nk), 'idempotency_key_missing', '... idempotency_key_missing');
    is($gw->sql1("SELECT COUNT(*) FROM payments WHERE status = 'unknown'"), 3,
       '... neither settled anything');

    # the never-charged one last, so it is well within unknown_grace below
    $gw->sim->mode('error500', path_prefix => $CHARGES);
    my $r = $gw->create();
    $gw->sim->mode('normal');
    $lost = $r->{json}{payment_no} // '';
    my $res = $gw->api(POST => '/v1/admin/resolve', json => {}, key => 'ops',
                       idempotency_key => $gw->fresh_key('k64'));
    is($res->{status}, 200, 'admin resolve: 200') or diag($res->{body});
    is_deeply($res->{json}, {examined => 4, settled => 3},
              '... examined 4, settled the 3 the acquirer charged');
    for my $no (@charged) {
        is(db_status($no), 'succeeded', "resolved $no: succeeded");
        is_deeply([map { $_->{type} } $gw->events($no)], ['payment.succeeded'],
                  "resolved $no: one payment.succeeded event");
    }
    unknown_ok($r, 'resolve setup (error500, never charged)');
    is(db_status($lost), 'unknown', 'never charged, within unknown_grace: still unknown');
    is(scalar($gw->events($lost)), 0, '... no event');

    ok($gw->wait_unknown_grace($lost, 7), 'the never-charged one is past unknown_grace (7 s)');
    my $res2 = $gw->api(POST => '/v1/admin/resolve', json => {}, key => 'ops',
                        idempotency_key => $gw->fresh_key('k64'));
    is_deeply([$res2->{status}, $res2->{json}], [200, {examined => 1, settled => 1}],
              'resolve after unknown_grace: examined 1, settled 1')
        or diag($res2->{body});
    is($gw->sql1("SELECT CONCAT(status, '/', failure_code) FROM payments "
            . "WHERE payment_no = " . sql_quote($lost)), 'failed/charge_not_received',
       '... failed with charge_not_received');
    is_deeply([map { $_->{type} } $gw->events($lost)], ['payment.failed'],
              '... one payment.failed event');

    my $res3 = $gw->api(POST => '/v1/admin/resolve', json => {}, key => 'ops',
                        idempotency_key => $gw->fresh_key('k64'));
    is_deeply([$res3->{status}, $res3->{json}], [200, {examined => 0, settled => 0}],
              'nothing left to resolve');
}

is($gw->sql1("SELECT COUNT(*) FROM payments WHERE status IN ('unknown', 'processing')"), 0,
   'in the end no payment is left unknown');
is($gw->sql1("SELECT COUNT(*) FROM payments p WHERE (SELECT COUNT(*) FROM outbox_events e "
        . "WHERE e.object_no = p.payment_no) <> 1"), 0,
   'and every payment has exactly one outbox event');

done_testing;
