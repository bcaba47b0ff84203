#!/usr/bin/perl
# Reconciliation with WeChat Pay's trade bill (SPEC §7): GET
# /v3/bill/tradebill (a signed answer: hash_type, hash_value,
# download_url), then the download, only from a host that
# paygw_statement_hosts allows, its SHA1 checked while it streams.  The
# day is Asia/Shanghai's.  Zero differences for a clean day; each injected
# difference; a bad hash, a truncated file, other columns and a download
# host nobody allowed fail the report.  The bill is asked for gzip-ed
# (tar_type=GZIP): the hash is the gzip file's; it is inflated as it
# streams.
use strict;
use warnings;

use Test::More;
use POSIX ();

use PayGW::Gateway qw(sql_quote);

my $gw = PayGW::Gateway->start;
my $sim = $gw->sim;
my $day = POSIX::strftime('%Y-%m-%d', gmtime(time + 8 * 3600));

sub reconcile {
    my (%o) = @_;
    my $r = $gw->api(POST => '/v1/reconciliations',
                     json => {channel => 'wechat', date => $o{date} // $day},
                     key => 'ops', idempotency_key => $gw->fresh_key('k85'));
    return $r->{json} // {};
}

sub kinds {
    my %k;
    push @{ $k{$_->{kind}} }, $_ for @{ $_[0]{differences} // [] };
    return \%k;
}

# four paid orders, one left unpaid, one refund
my @p;
for my $amount (1001, 2002, 3003, 4004) {
    my $p = $gw->create(channel => 'wechat', amount => $amount)->{json};
    $sim->wechat_notify(out_trade_no => $p->{payment_no});
    push @p, $gw->payment($p->{payment_no});
}
is(scalar(grep { $_->{status} eq 'succeeded' } @p), 4, 'four WeChat payments paid');
my $unpaid = $gw->create(channel => 'wechat', amount => 99)->{json};
my $rf = $gw->api(POST => "/v1/payments/$p[0]{payment_no}/refunds",
                  json => {refund_no => 'R85', amount => 500},
                  idempotency_key => 'k85-r')->{json};
is($rf->{status}, 'succeeded', 'one refund');
my $out_refund_no = $gw->sql1("SELECT out_refund_no FROM refunds WHERE refund_no = 'R85'");

{
    my $rep = reconcile();
    is($rep->{status}, 'completed', 'a clean day: completed') or diag explain $rep;
    is_deeply($rep->{summary}, {local => 6, remote => 6, matched => 6,
                                missing_local => 0, missing_remote => 0,
                                amount_mismatch => 0, status_mismatch => 0},
              '... every line matched (the unpaid order too)')
        or diag explain $rep;
    my @q = grep { $_->{path} =~ m{^/v3/bill/tradebill\?bill_date=$day&tar_type=GZIP$} }
            @{ $sim->requests };
    is(scalar @q, 1, '... the bill was asked for the Shanghai day, gzip-ed');
    like($q[0]{headers}{authorization} // '', qr/^WECHATPAY2-SHA256-RSA2048 /,
         '... with a signed request');
}

{
    $sim->statement(provider => 'wechat', drop => [$p[1]{payment_no}],
                    add => [['trade', 'PFOREIGN85', '', '4200000000000000000000000085',
                             123, 'SUCCESS', "${day}T10:00:00+08:00"]],
                    amount => {$p[2]{payment_no} => -3},
                    status => {$out_refund_no => 'ABNORMAL'});
    my $rep = reconcile();
    is($rep->{status}, 'completed', 'injected differences: completed');
    is_deeply($rep->{summary}, {local => 6, remote => 6, matched => 3,
                                missing_local => 1, missing_remote => 1,
                                amount_mismatch => 1, status_mismatch => 1},
              '... each counted') or diag explain $rep;
    my $k = kinds($rep);
    is($k->{missing_remote}[0]{payment_no}, $p[1]{payment_no},
       'missing_remote: the dropped payment');
    is_deeply($k->{missing_remote}[0]{local}, {amount => 2002, status => 'succeeded'},
              '... with its local amount and status');
    is($k->{missing_local}[0]{payment_no}, 'PFOREIGN85', 'missing_local: the foreign line');
    is_deeply($k->{missing_local}[0]{remote}, {amount => 123, status => 'SUCCESS'},
              '... with its remote amount and status');
    is_deeply([@{ $k->{amount_mismatch}[0] }{qw(payment_no local remote)}],
              [$p[2]{payment_no}, {amount => 3003, status => 'succeeded'},
               {amount => 3000, status => 'SUCCESS'}],
              'amount_mismatch: 3003 here, 3000 there');
    is_deeply([@{ $k->{status_mismatch}[0] }{qw(payment_no refund_no remote)}],
              [$p[0]{payment_no}, 'R85', {amount => 500, status => 'ABNORMAL'}],
              'status_mismatch: the refund, ABNORMAL there');
    is_deeply($gw->api(GET => "/v1/reconciliations/$rep->{id}", key => 'ops')->{json},
              $rep, 'GET reads the stored report back');
}

for ([{bad_hash => 1}, qr/SHA1 is not the hash_value/, 'a bad hash'],
     [{truncate => 1}, qr/truncated/, 'a truncated bill'],
     [{columns => 'wrong'}, qr/unexpected statement columns/, 'other columns'],
     [{bad_utf8 => 1}, qr/not valid UTF-8/, 'bad encoding']) {
    my ($tweak, $re, $what) = @$_;
    $sim->statement(provider => 'wechat', %$tweak);
    my $rep = reconcile();
    is($rep->{status}, 'failed', "$what: failed") or diag explain $rep;
    like($rep->{reason} // '', $re, '... saying why');
    is_deeply($rep->{differences}, [], '... no differences listed');
}

{
    $sim->statement(provider => 'wechat', large => 50000);
    my $rep = reconcile();
    is($rep->{status}, 'completed', 'a gzip-ed bill 50,000 lines longer: completed')
        or diag $rep->{reason};
    is($rep->{summary}{missing_local}, 50000, '... every foreign line counted');
    is($rep->{summary}{matched}, 6, '... and ours matched');
}

{
    $sim->statement(provider => 'wechat');
    (my $http = $gw->http_conf) =~ s/paygw_statement_hosts wechat [^;]*;//;
    $gw->reload($http);
    my $rep = reconcile();
    is($rep->{status}, 'failed', 'a download host nobody allowed: failed');
    like($rep->{reason} // '', qr/download host "127\.0\.0\.1:\d+" is not in paygw_statement_hosts/,
         '... saying so');
}

done_testing;
