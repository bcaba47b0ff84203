#!/usr/bin/perl
# Reconciliation with the acquirer's settlement file (SPEC §7): a day of
# card payments and refunds reconciles with no differences; each kind of
# difference injected in the simulator's statement is reported with its
# ids and amounts; statements that cannot be trusted (truncated, bad
# signature, other columns, not UTF-8) fail the report with a reason and
# never report "all matched"; reports are stored and read back with GET.
use strict;
use warnings;

use Test::More;
use POSIX ();

use PayGW::Gateway qw(err_code sql_quote);

my $gw = PayGW::Gateway->start;
my $sim = $gw->sim;
my $day = POSIX::strftime('%Y-%m-%d', gmtime);    # the acquirer's day: UTC

sub reconcile {
    my (%o) = @_;
    return $gw->api(POST => '/v1/reconciliations',
                    json => {channel => $o{channel} // 'bank_card',
                             date => $o{date} // $day},
                    key => $o{key} // 'ops',
                    idempotency_key => $gw->fresh_key('k83'));
}

sub diffs_by_kind {
    my ($report) = @_;
    my %k;
    push @{ $k{$_->{kind}} }, $_ for @{ $report->{differences} // [] };
    return \%k;
}

# ---- a day of payments and refunds -------------------------------------------

my @p = map { $gw->create(amount => 1000 * $_)->{json} } 1 .. 6;
is(scalar(grep { ($_->{status} // '') eq 'succeeded' } @p), 6,
   'six card payments succeeded');

my @r;
for my $i (0, 1) {
    my $res = $gw->api(POST => "/v1/payments/$p[$i]{payment_no}/refunds",
                       json => {refund_no => "R83-$i", amount => 400},
                       idempotency_key => $gw->fresh_key('k83r'));
    push @r, $res->{json};
}
is($r[1]{status}, 'succeeded', 'two refunds succeeded');

my $out_refund_no = $gw->sql1('SELECT out_refund_no FROM refunds WHERE '
                              . "refund_no = 'R83-1'");

{
    my $res = reconcile();
    is($res->{status}, 200, 'POST /v1/reconciliations: 200') or diag $res->{body};
    my $rep = $res->{json};
    is($rep->{status}, 'completed', '... completed') or diag explain $rep;
    is($rep->{channel}, 'bank_card', '... of bank_card');
    is($rep->{date}, $day, "... for $day");
    like($rep->{id}, qr/^C[0-9a-f]{20}$/, '... with an id');
    is_deeply($rep->{summary}, {local => 8, remote => 8, matched => 8,
                                missing_local => 0, missing_remote => 0,
                                amount_mismatch => 0, status_mismatch => 0},
              '... 8 lines, all matched') or diag explain $rep;
    is_deeply($rep->{differences}, [], '... no differences');

    my $again = $gw->api(GET => "/v1/reconciliations/$rep->{id}", key => 'ops');
    is($again->{status}, 200, 'GET /v1/reconciliations/{id}: 200');
    is_deeply($again->{json}, $rep, '... the same report');

    my $rerun = reconcile();
    isnt($rerun->{json}{id}, $rep->{id}, 'a rerun of the day makes a new report');
}

# ---- each difference -----------------------------------------------------------

{
    $sim->statement(provider => 'acquirer',
                    drop => [$p[2]{payment_no}],
                    add => [['charge', 'PFOREIGN1', '', 'ch_foreign', 777, 'CNY',
                             'approved', "${day}T01:02:03Z"]],
                    amount => {$p[3]{payment_no} => 1},
                    status => {$p[4]{payment_no} => 'declined',
                               $out_refund_no => 'failed'});
    my $rep = reconcile()->{json};
    is($rep->{status}, 'completed', 'with injected differences: completed');
    is_deeply($rep->{summary}, {local => 8, remote => 8, matched => 4,
                                missing_local => 1, missing_remote => 1,
                                amount_mismatch => 1, status_mismatch => 2},
              '... each counted') or diag explain $rep;
    my $k = diffs_by_kind($rep);

    is_deeply($k->{missing_remote}, [{kind => 'missing_remote',
        payment_no => $p[2]{payment_no}, refund_no => undef,
        channel_trade_no => $p[2]{channel_trade_no},
        local => {amount => 3000, status => 'succeeded'}, remote => undef}],
        'a dropped line: missing_remote, with the local side');
    is_deeply($k->{missing_local}, [{kind => 'missing_local',
        payment_no => 'PFOREIGN1', refund_no => undef,
        channel_trade_no => 'ch_foreign', local => undef,
        remote => {amount => 777, status => 'approved'}}],
        'a foreign line: missing_local, with the remote side');
    is_deeply($k->{amount_mismatch}, [{kind => 'amount_mismatch',
        payment_no => $p[3]{payment_no}, refund_no => undef,
        channel_trade_no => $p[3]{channel_trade_no},
        local => {amount => 4000, status => 'succeeded'},
        remote => {amount => 4001, status => 'approved'}}],
        'a changed amount: amount_mismatch, both amounts');
    my @sm = sort { ($a->{refund_no} // '') cmp ($b->{refund_no} // '') }
             @{ $k->{status_mismatch} // [] };
    is_deeply(\@sm, [
        {kind => 'status_mismatch', payment_no => $p[4]{payment_no},
         refund_no => undef, channel_trade_no => $p[4]{channel_trade_no},
         local => {amount => 5000, status => 'succeeded'},
         remote => {amount => 5000, status => 'declined'}},
        {kind => 'status_mismatch', payment_no => $p[1]{payment_no},
         refund_no => 'R83-1', out_refund_no => $out_refund_no,
         channel_trade_no => $p[1]{channel_trade_no},
         local => {amount => 400, status => 'succeeded'},
         remote => {amount => 400, status => 'failed'}}],
        'changed statuses: status_mismatch, of a payment and of a refund')
        or diag explain \@sm;

    is($gw->sql1('SELECT CONCAT(status, " ", differences) FROM reconciliations '
                 . 'WHERE recon_no = ' . sql_quote($rep->{id})),
       'completed 5', 'the report is stored with its count of differences');
    is_deeply($gw->api(GET => "/v1/reconciliations/$rep->{id}",
                       key => 'ops')->{json}, $rep, '... and read back');
}

# ---- statements that cannot be trusted ----------------------------------------

for ([{truncate => 1}, qr/truncated/, 'a truncated statement'],
     [{columns => 'wrong'}, qr/unexpected statement columns/, 'other columns'],
     [{bad_utf8 => 1}, qr/not valid UTF-8/, 'a line that is not UTF-8'],
     [{add => [['charge', 'PX', '', 'ch', 'ten', 'CNY', 'approved', 'x']]},
      qr/line 10 of the statement is malformed/, 'an amount that is no number'],
     [{add => [['refund', 'PX']]}, qr/malformed/, 'a short line']) {
    my ($tweak, $re, $what) = @$_;
    $sim->statement(provider => 'acquirer', %$tweak);
    my $res = reconcile();
    is($res->{status}, 200, "$what: the report is made");
    is($res->{json}{status}, 'failed', '... failed') or diag explain $res->{json};
    like($res->{json}{reason} // '', $re, '... saying why');
    is_deeply($res->{json}{differences}, [], '... and lists no differences');
    is($gw->sql1('SELECT status FROM reconciliations WHERE recon_no = '
                 . sql_quote($res->{json}{id} // '')), 'failed', '... stored');
}

{
    $sim->statement(provider => 'acquirer');
    $sim->mode('bad_signature', path_prefix => '/acquirer/v1/settlements');
    my $res = reconcile();
    is($res->{json}{status}, 'failed', 'a statement with a bad signature fails');
    like($res->{json}{reason} // '', qr/signature does not verify/, '... saying so');
    $sim->mode('normal');
    is(reconcile()->{json}{status}, 'completed', 'the next one completes');
}

# ---- who may, and refusals ---------------------------------------------------------

{
    my $res = reconcile(key => 'demo');
    is($res->{status}, 403, 'a merchant key may not reconcile');
    is(err_code($res), 'forbidden', '... forbidden');
    my $rep = reconcile()->{json};
    is($gw->api(GET => "/v1/reconciliations/$rep->{id}")->{status}, 403,
       '... nor read a report');
    is($gw->api(GET => '/v1/reconciliations/C0000', key => 'ops')->{status},
       404, 'an unknown report: 404');
    for my $body ({channel => 'bank_card', date => '2026-02-30'},
                  {channel => 'nope', date => $day},
                  {channel => 'bank_card', date => $day, extra => 1},
                  {channel => 'bank_card'}) {
        my $r = $gw->api(POST => '/v1/reconciliations', json => $body,
                         key => 'ops', idempotency_key => $gw->fresh_key('k'));
        is($r->{status}, 400, 'refused: ' . JSON::PP->new->canonical->encode($body));
    }
}

done_testing;
