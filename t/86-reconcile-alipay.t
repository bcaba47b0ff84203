#!/usr/bin/perl
# Reconciliation with Alipay's trade bill (SPEC §7):
# alipay.data.dataservice.bill.downloadurl.query (signed, its answer
# verified), then the zip it names -- only from a host
# paygw_statement_hosts allows -- read as it streams: the zip's local
# headers (the summary entry, 汇总, skipped), the details entry inflated, GBK converted to UTF-8, "#" lines around
# the table, amounts in yuan (refunds negative), the CRC-32 checked.  The
# day is Asia/Shanghai's.  Zero differences for a clean day, each injected
# difference, and a truncated zip, a damaged zip, bytes that are not GBK
# and other columns fail the report.
use strict;
use warnings;

use Test::More;
use POSIX ();

use PayGW::Gateway qw(sql_quote);

my $gw = PayGW::Gateway->start;
my $sim = $gw->sim;
my $day = POSIX::strftime('%Y-%m-%d', gmtime(time + 8 * 3600));

sub reconcile {
    my $r = $gw->api(POST => '/v1/reconciliations',
                     json => {channel => 'alipay', date => $day},
                     key => 'ops', idempotency_key => $gw->fresh_key('k86'));
    return $r->{json} // {};
}

sub kinds {
    my %k;
    push @{ $k{$_->{kind}} }, $_ for @{ $_[0]{differences} // [] };
    return \%k;
}

my @p;
for my $amount (1999, 2500, 3001, 10) {
    my $p = $gw->create(channel => 'alipay', amount => $amount,
                        subject => '咖啡')->{json};
    $sim->alipay_notify(out_trade_no => $p->{payment_no});
    push @p, $gw->payment($p->{payment_no});
}
is(scalar(grep { $_->{status} eq 'succeeded' } @p), 4, 'four Alipay payments paid');
$gw->create(channel => 'alipay', amount => 77);    # left unpaid
my $rf = $gw->api(POST => "/v1/payments/$p[0]{payment_no}/refunds",
                  json => {refund_no => 'R86', amount => 999},
                  idempotency_key => 'k86-r')->{json};
is($rf->{status}, 'succeeded', 'one refund of 9.99');
my $out_refund_no = $gw->sql1("SELECT out_refund_no FROM refunds WHERE refund_no = 'R86'");

{
    my $rep = reconcile();
    is($rep->{status}, 'completed', 'a clean day: completed') or diag explain $rep;
    is_deeply($rep->{summary}, {local => 6, remote => 6, matched => 6,
                                missing_local => 0, missing_remote => 0,
                                amount_mismatch => 0, status_mismatch => 0},
              '... all six lines matched (GBK zip read)') or diag explain $rep;
    is($rep->{lines}, 14, '... 14 lines: 4 "#" before, header, 6, 3 "#" after');
}

{
    $sim->statement(provider => 'alipay', drop => [$p[1]{payment_no}],
                    add => [['2026120222001400000000000086', 'PFOREIGN86', '交易',
                             'Tea', "$day 10:00:00", "$day 10:00:00", '1.23', '',
                             'TRADE_SUCCESS']],
                    amount => {$p[2]{payment_no} => 100},
                    status => {$p[3]{payment_no} => 'TRADE_CLOSED'});
    my $rep = reconcile();
    is($rep->{status}, 'completed', 'injected differences: completed');
    is_deeply($rep->{summary}, {local => 6, remote => 6, matched => 3,
                                missing_local => 1, missing_remote => 1,
                                amount_mismatch => 1, status_mismatch => 1},
              '... each counted') or diag explain $rep;
    my $k = kinds($rep);
    is($k->{missing_remote}[0]{payment_no}, $p[1]{payment_no},
       'missing_remote: the dropped payment');
    is_deeply([@{ $k->{missing_local}[0] }{qw(payment_no channel_trade_no remote)}],
              ['PFOREIGN86', '2026120222001400000000000086',
               {amount => 123, status => 'TRADE_SUCCESS'}],
              'missing_local: the foreign line, 1.23 yuan = 123');
    is_deeply([@{ $k->{amount_mismatch}[0] }{qw(payment_no local remote)}],
              [$p[2]{payment_no}, {amount => 3001, status => 'succeeded'},
               {amount => 3101, status => 'TRADE_SUCCESS'}],
              'amount_mismatch: 30.01 here, 31.01 there');
    is_deeply([@{ $k->{status_mismatch}[0] }{qw(payment_no local remote)}],
              [$p[3]{payment_no}, {amount => 10, status => 'succeeded'},
               {amount => 10, status => 'TRADE_CLOSED'}],
              'status_mismatch: closed there');
    is_deeply($gw->api(GET => "/v1/reconciliations/$rep->{id}", key => 'ops')->{json},
              $rep, 'GET reads the stored report back');

    $sim->statement(provider => 'alipay', drop => [$out_refund_no]);
    $rep = reconcile();
    is_deeply([map { [$_->{kind}, $_->{refund_no}, $_->{local}{amount}] }
               @{ $rep->{differences} }], [['missing_remote', 'R86', 999]],
              'a dropped refund line: missing_remote of the refund');
}

for ([{truncate => 1}, qr/truncated/, 'a truncated zip'],
     [{bad_zip => 1}, qr/zip is corrupt|CRC-32|not GBK/,
      'a damaged zip (garbage it inflates to may fail GBK first)'],
     [{bad_gbk => 1}, qr/not GBK/, 'bytes that are not GBK'],
     [{columns => 'wrong'}, qr/unexpected statement columns/, 'other columns']) {
    my ($tweak, $re, $what) = @$_;
    $sim->statement(provider => 'alipay', %$tweak);
    my $rep = reconcile();
    is($rep->{status}, 'failed', "$what: failed") or diag explain $rep;
    like($rep->{reason} // '', $re, '... saying why');
    is_deeply($rep->{differences}, [], '... no differences listed');
}

{
    $sim->statement(provider => 'alipay');
    (my $http = $gw->http_conf) =~ s/paygw_statement_hosts alipay [^;]*;//;
    $gw->reload($http);
    my $rep = reconcile();
    is($rep->{status}, 'failed', 'a download host nobody allowed: failed');
    like($rep->{reason} // '', qr/is not in paygw_statement_hosts for alipay/,
         '... saying so');
}

done_testing;
