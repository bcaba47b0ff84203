#!/usr/bin/perl
# Scheduled reconciliation (SPEC §7): paygw_reconcile_schedule makes one
# worker of each nginx ask its gateway to reconcile every channel over
# the last N days; a lease in MySQL lets one run go on at a time across
# workers and across nginx instances.  A run sets
# paygw_reconciliation_differences{channel} and writes a
# reconciliation.differences event for each report with differences.
use strict;
use warnings;

use Test::More;
use POSIX ();

use PayGW::Gateway qw(sql_quote);
use PayGW::Test qw(wait_until);

my $sched = 'paygw_reconcile_schedule 127.0.0.1:%%PORT%% key=ops '
          . 'interval=1s days=2 lease=60s;';

(my $http = $PayGW::Gateway::DEFAULT_HTTP)
    =~ s{(paygw_keys\s+\S+;)}{$1\n    $sched} or die;

my $gw = PayGW::Gateway->start(workers => 2, http => $http);
my $gw2 = PayGW::Gateway->start(workers => 2, http => $http, share => $gw);

# a day with a payment, and a foreign line in the acquirer's statement
my $p = $gw->create(amount => 4321)->{json};
is($p->{status}, 'succeeded', 'a card payment today');
$gw->sim->statement(provider => 'acquirer',
                    add => [['charge', 'PSCHED1', '', 'ch_sched', 500, 'CNY',
                             'approved', POSIX::strftime('%Y-%m-%dT%H:%M:%SZ', gmtime)]]);

# every statement takes 300 ms: runs last long enough to collide
$gw->sim->mode('slow_before', delay_ms => 300, path_prefix => '/acquirer/v1/settlements');

ok(wait_until(sub {
       $gw->sql1('SELECT COUNT(DISTINCT run_holder) FROM reconciliations '
                 . 'WHERE run_holder IS NOT NULL') >= 3 }, timeout => 40),
   'scheduled runs happened (three or more)');

$gw->sim->mode('normal');

# runs, by holder: [first report, last report] never overlap
my @runs = map { [split /\t/] } split /\n/, $gw->db->sql(
    'SELECT run_holder, MIN(created_at), MAX(created_at), COUNT(*) '
    . 'FROM reconciliations WHERE run_holder IS NOT NULL '
    . 'GROUP BY run_holder ORDER BY MIN(created_at)');
my $overlap = 0;
for my $i (1 .. $#runs) {
    $overlap++ if $runs[$i][1] le $runs[$i - 1][2];
}
is($overlap, 0, 'no two runs overlapped (' . scalar(@runs) . ' runs)')
    or diag explain \@runs;
my $complete = grep { $_->[3] == 6 } @runs;
cmp_ok($complete, '>=', 2, 'each run: 3 channels x 2 days = 6 reports');

my $log = $gw->ngx->error_log . $gw2->ngx->error_log;
my $skipped = () = $log =~ /the lease is held by L[0-9a-f]+, not running/g;
cmp_ok($skipped, '>=', 1, "runs found the lease taken and did not run ($skipped)");
my $ran_here = () = $gw->ngx->error_log =~ /lease taken/g;
my $ran_there = () = $gw2->ngx->error_log =~ /lease taken/g;
diag("runs: $ran_here on the first nginx, $ran_there on the second; "
     . "$skipped skipped");
ok($ran_here + $ran_there >= 3, 'runs were made by the instances');

# each nginx counts the runs it made
my ($m1, $m2) = map { $_->metric('paygw_reconciliation_differences{channel="bank_card"}') // 0 }
                $gw, $gw2;
cmp_ok(($m1 > $m2 ? $m1 : $m2), '>=', 1,
       "paygw_reconciliation_differences{channel=\"bank_card\"}: $m1 and $m2");
is($gw->metric('paygw_reconciliation_differences{channel="wechat"}'), 0,
   '... and 0 for wechat, which has no difference');
ok(wait_until(sub {
       $gw->sql1("SELECT COUNT(*) FROM outbox_events "
                 . "WHERE type = 'reconciliation.differences'") > 0 }, timeout => 10),
   'reconciliation.differences events were written');
my $ev = $gw->sql1("SELECT payload FROM outbox_events WHERE "
                   . "type = 'reconciliation.differences' ORDER BY id LIMIT 1");
like($ev, qr/"channel":"bank_card"/, '... naming the channel');
like($ev, qr/"differences":1\b/, '... and the count');

done_testing;
