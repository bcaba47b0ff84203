package PayGW::Drill;

# What the drills share (make drill: t/drill/drill.pl, make drill-ha:
# t/drill/drill_ha.pl): the settler run until nothing is open, then the
# invariants checked against the simulator's own ledger:
#   - every charge the acquirer made belongs to exactly one payment;
#   - no payment was charged twice, and none the acquirer charged is
#     recorded failed or closed;
#   - a payment's refunds at the acquirer never exceed it, and equal what
#     the gateway recorded as refunded;
#   - none lost: every payment (and refund) a client was answered 201 or
#     202 for has its row;
#   - nothing stays unknown/processing (payments) or pending/unknown
#     (refunds) once the faults stopped and the settler ran;
#   - every payment in a final state has its one outbox event.
#
#   my $secs = PayGW::Drill::settle($gw);
#   my ($violations, $summary) = PayGW::Drill::check($gw,
#       payments => [payment_no, ...], refunds => [refund_no, ...]);
#
# sql_prefix => TEXT (both): put before every query, e.g. "SET SESSION
# wsrep_sync_wait = 1;" so that a Galera node answers only once it
# applied every write the cluster committed before the query.

use strict;
use warnings;

use Time::HiRes qw(time);

use PayGW::Gateway qw(sql_quote);
use PayGW::Test qw(wait_until);

sub _sql {
    my ($gw, $text, %o) = @_;
    return $gw->db->sql(($o{sql_prefix} // '') . $text);
}

sub _sql1 {
    my $v = _sql(@_);
    chomp $v;
    return $v;
}

sub open_rows {
    my ($gw, %o) = @_;
    return _sql1($gw, "SELECT (SELECT COUNT(*) FROM payments WHERE status IN "
                 . "('unknown', 'processing')) + (SELECT COUNT(*) FROM refunds "
                 . "WHERE status IN ('pending', 'unknown'))", %o);
}

# settle(GW, timeout => 240): asks the settler (POST /v1/admin/resolve,
# key ops) every 2 s until no payment or refund is open; returns the
# seconds it took (or the timeout: check() then reports what is open).
sub settle {
    my ($gw, %o) = @_;
    my $t0 = time;
    wait_until(sub {
        $gw->api(POST => '/v1/admin/resolve', json => {}, key => 'ops',
                 idempotency_key => $gw->fresh_key('drill'), timeout => 60);
        open_rows($gw, %o) == 0;
    }, timeout => $o{timeout} // 240, interval => 2);
    return time - $t0;
}

# check(GW, payments => [...], refunds => [...], sql_prefix => ...) ->
# ([violations], summary line)
sub check {
    my ($gw, %o) = @_;
    my $ledger = $gw->sim->charges;
    my (%pay, @violations);
    for (split /\n/, _sql($gw, "SELECT payment_no, status, amount, "
                          . "refunded_amount, refund_reserved FROM payments", %o)) {
        my ($no, $st, $amount, $ref, $res) = split /\t/;
        $pay{$no} = {status => $st, amount => $amount, refunded => $ref,
                     reserved => $res};
    }

    my %charges;
    $charges{ $_->{out_trade_no} }++ for @{ $ledger->{charges} };
    my $charged = 0;
    for my $c (@{ $ledger->{charges} }) {
        my $p = $pay{ $c->{out_trade_no} };
        if (!$p) {
            push @violations, "charge $c->{charge_id} ($c->{out_trade_no}) "
                              . "belongs to no payment";
            next;
        }
        next unless ($c->{status} // '') eq 'approved';
        $charged++;
        push @violations, "payment $c->{out_trade_no} charged but recorded "
                          . $p->{status}
            unless $p->{status} =~ /^(succeeded|partially_refunded|refunded)$/;
    }
    for my $no (grep { $charges{$_} > 1 } keys %charges) {
        push @violations, "payment $no charged $charges{$no} times";
    }

    my %refunded;
    for my $r (@{ $ledger->{refunds} }) {
        $refunded{ $r->{out_trade_no} } += $r->{amount}
            if ($r->{status} // '') eq 'succeeded';
    }
    for my $no (keys %refunded) {
        my $p = $pay{$no} // {amount => 0, refunded => 0};
        push @violations, "payment $no refunded $refunded{$no} > amount "
                          . $p->{amount}
            if $refunded{$no} > $p->{amount};
        push @violations, "payment $no refunded $refunded{$no} at the "
                          . "acquirer, $p->{refunded} here"
            if $refunded{$no} != $p->{refunded};
    }

    # none lost: what the clients were told exists
    my @lost = grep { !$pay{$_} } @{ $o{payments} // [] };
    push @violations, scalar(@lost) . " payments answered 201/202 have no "
                      . "row, e.g. $lost[0]" if @lost;
    my @rnos = @{ $o{refunds} // [] };
    if (@rnos) {
        my %have = map { $_ => 1 } split /\n/,
            _sql($gw, "SELECT refund_no FROM refunds", %o);
        my @rlost = grep { !$have{$_} } @rnos;
        push @violations, scalar(@rlost) . " refunds answered 201/202 have "
                          . "no row, e.g. $rlost[0]" if @rlost;
    }

    my $open = open_rows($gw, %o);
    push @violations, "$open payments or refunds still open after the "
                      . "settler ran" if $open;

    my $missing = _sql1($gw,
        "SELECT COUNT(*) FROM payments p LEFT JOIN (SELECT object_no, "
        . "COUNT(*) AS n FROM outbox_events WHERE type IN "
        . "('payment.succeeded', 'payment.failed', 'payment.closed') "
        . "GROUP BY object_no) e ON e.object_no = p.payment_no "
        . "WHERE p.status IN ('succeeded', 'partially_refunded', "
        . "'refunded', 'failed', 'closed') AND COALESCE(e.n, 0) <> 1", %o);
    push @violations, "$missing final payments without exactly one payment "
                      . "event" if $missing;

    my $final = grep { $_->{status} ne 'unknown'
                       && $_->{status} ne 'processing' } values %pay;
    my $summary = sprintf "checked %d payments (%d final), %d acquirer "
        . "charges (%d approved), %d acquirer refunds over %d payments, "
        . "outbox of %d final payments, %d payments and %d refunds the "
        . "clients were answered 201/202",
        scalar(keys %pay), $final, scalar(@{ $ledger->{charges} }), $charged,
        scalar(@{ $ledger->{refunds} }), scalar(keys %refunded), $final,
        scalar(@{ $o{payments} // [] }), scalar(@rnos);
    return (\@violations, $summary);
}

1;
