#!/usr/bin/perl
# Settlements (SPEC §7): GET /v1/settlements?date= per merchant, channel
# and currency over the day's succeeded payments and refunds (the day of
# Asia/Shanghai).  After a random (seeded) mix of 500 payments and
# refunds on the three channels, every figure equals the sum computed
# here from the payments and refunds tables, the stored fees follow the
# demo schedule, and net = gross - refunded - fees + returned_fees.
# Who sees what: a merchant its own, an admin any (merchant_id=).
use strict;
use warnings;

use Test::More;
use POSIX ();

use PayGW::Gateway qw(err_code sql_quote);

my $gw = PayGW::Gateway->start;

srand(82);

sub shanghai_day { POSIX::strftime('%Y-%m-%d', gmtime(time + 8 * 3600)) }
my $day = shanghai_day();

my %demo = (alipay => [60, 0], wechat => [60, 0], bank_card => [50, 10]);
sub fee_of {
    my ($channel, $amount) = @_;
    my ($bps, $fixed) = @{ $demo{$channel} };
    return int(($amount * $bps + 5000) / 10000) + $fixed;
}

sub pay {
    my ($channel, $amount) = @_;
    my $p = $gw->create(channel => $channel, amount => $amount)->{json} // {};
    return undef unless $p->{payment_no};
    if ($channel eq 'alipay') {
        $gw->sim->alipay_notify(out_trade_no => $p->{payment_no});
    } elsif ($channel eq 'wechat') {
        $gw->sim->wechat_notify(out_trade_no => $p->{payment_no});
    }
    return $gw->payment($p->{payment_no});
}

# ---- the mix --------------------------------------------------------------

my (@paid, %left, $refunds);
my @channels = (('bank_card') x 6, 'alipay', 'alipay', 'wechat', 'wechat');

for my $i (1 .. 500) {
    if (@paid < 5 || rand() < 0.6) {
        my $channel = $channels[int rand @channels];
        my $amount = rand() < 0.1 ? 1 + int rand 10 : 1 + int rand 200000;
        my $p = pay($channel, $amount);
        next unless $p && ($p->{status} // '') eq 'succeeded';
        push @paid, $p->{payment_no};
        $left{$p->{payment_no}} = $amount;
    } else {
        my @open = grep { $left{$_} > 0 } @paid;
        next unless @open;
        my $pno = $open[int rand @open];
        my $amount = rand() < 0.3 ? $left{$pno} : 1 + int rand $left{$pno};
        my $r = $gw->api(POST => "/v1/payments/$pno/refunds",
                         json => {refund_no => "R$i", amount => $amount},
                         idempotency_key => $gw->fresh_key('k82'));
        if (($r->{json}{status} // '') eq 'succeeded') {
            $left{$pno} -= $amount;
            $refunds++;
        }
    }
}

cmp_ok(scalar @paid, '>', 200, scalar(@paid) . ' payments succeeded');
cmp_ok($refunds // 0, '>', 100, "$refunds refunds succeeded");
my %ch = map { $_ => 1 } map { $gw->sql1('SELECT channel FROM payments '
                                 . 'WHERE payment_no = ' . sql_quote($_)) } @paid;
is_deeply([sort keys %ch], [qw(alipay bank_card wechat)],
          'on all three channels');

SKIP: {
skip 'the day changed in Shanghai during the run', 1
    if shanghai_day() ne $day;

# ---- the tables, summed here -------------------------------------------------

my (%want, $bad_fee, $bad_ret);
my $SHDAY = "DATE_FORMAT(%s + INTERVAL 8 HOUR, '%%Y-%%m-%%d')";

for (split /\n/, $gw->db->sql(
        'SELECT merchant_id, channel, currency, amount, fee, net_amount, '
        . 'fee_returned, refunded_amount, ' . sprintf($SHDAY, 'succeeded_at')
        . " FROM payments WHERE succeeded_at IS NOT NULL")) {
    my ($m, $c, $cur, $amount, $fee, $net, $ret, $refunded, $d) = split /\t/;
    $bad_fee++ unless $fee == fee_of($c, $amount) && $net == $amount - $fee;
    $bad_ret++ if $ret > $fee || ($refunded == $amount && $ret != $fee);
    next unless $d eq $day;
    my $w = $want{"$m $c $cur"} //= {};
    $w->{count}++;
    $w->{gross} += $amount;
    $w->{fees} += $fee;
}

for (split /\n/, $gw->db->sql(
        'SELECT r.merchant_id, p.channel, r.currency, r.amount, '
        . 'r.fee_returned, p.fee, p.amount, '
        . sprintf($SHDAY, 'r.succeeded_at') . ' FROM refunds r JOIN payments p '
        . "ON p.payment_no = r.payment_no WHERE r.status = 'succeeded'")) {
    my ($m, $c, $cur, $amount, $ret, $pfee, $pamount, $d) = split /\t/;
    # at least its share rounded down (the last one: what is left)
    $bad_ret++ if $ret < int($pfee * $amount / $pamount) || $ret > $pfee;
    next unless $d eq $day;
    my $w = $want{"$m $c $cur"} //= {};
    $w->{refund_count}++;
    $w->{refunded} += $amount;
    $w->{returned_fees} += $ret;
}

ok(!$bad_fee, 'every stored fee follows the demo schedule');
ok(!$bad_ret, 'no payment returned more fee than it had; full refunds all');

for my $w (values %want) {
    $w->{$_} //= 0 for qw(count gross fees refund_count refunded returned_fees);
    $w->{net} = $w->{gross} - $w->{refunded} - $w->{fees} + $w->{returned_fees};
}

# ---- the endpoint -------------------------------------------------------------

my $res = $gw->api(GET => "/v1/settlements?date=$day");
is($res->{status}, 200, "GET /v1/settlements?date=$day") or diag $res->{body};
is($res->{json}{date}, $day, '... for that day');
is($res->{json}{timezone}, 'Asia/Shanghai', '... of Asia/Shanghai');

my %got;
for my $s (@{ $res->{json}{settlements} // [] }) {
    my %row = %$s;
    my $k = join ' ', delete @row{qw(merchant_id channel currency)};
    $got{$k} = \%row;
}
is_deeply(\%got, \%want, 'every figure equals the sums of the tables')
    or diag explain {got => \%got, want => \%want};

my $identity = 1;
for my $s (values %got) {
    $identity = 0 unless $s->{net} == $s->{gross} - $s->{refunded}
                                      - $s->{fees} + $s->{returned_fees};
}
ok($identity, 'net = gross - refunded - fees + returned_fees, per row');

my $admin = $gw->api(GET => "/v1/settlements?date=$day&merchant_id=M100",
                     key => 'ops');
is_deeply($admin->{json}{settlements}, $res->{json}{settlements},
          'an admin sees M100 with merchant_id=M100');
my $all = $gw->api(GET => "/v1/settlements?date=$day", key => 'ops');
is_deeply($all->{json}{settlements}, $res->{json}{settlements},
          '... and every merchant without it (M100 is the only one here)');
}

# ---- who sees what, and refusals ---------------------------------------------

my $other = $gw->api(GET => "/v1/settlements?date=$day&merchant_id=M200");
is($other->{status}, 403, "a merchant may not see another's settlements");
is(err_code($other), 'forbidden', '... forbidden');
my $own = $gw->api(GET => "/v1/settlements?date=$day&merchant_id=M100");
is($own->{status}, 200, '... but may name itself');

my $none = $gw->api(GET => '/v1/settlements?date=2020-01-01');
is_deeply($none->{json}{settlements}, [], 'a day without payments: no rows');

for my $q ('', '?date=2026-02-29', '?date=2026-13-01', '?date=26-01-01',
           '?date=2026-01-01x', '?date=2024-02-30') {
    my $r = $gw->api(GET => "/v1/settlements$q");
    is($r->{status}, 400, "date \"$q\" is refused");
    is(err_code($r), 'invalid_request', '... invalid_request');
}
is($gw->api(GET => '/v1/settlements?date=2024-02-29')->{status}, 200,
   'a leap day is a day');
is($gw->api(POST => '/v1/settlements?date=2024-02-29', json => {},
            idempotency_key => 'k')->{status}, 405, 'POST: 405');


# The day's payments as the module asks for them (MariaDB's general log):
# ranges of idx_status (status, succeeded_at, expire_at), the index the
# settle changes anyway, not an index of their own every create writes
# (sql/007_hot_path_indexes.sql).
# (thousands of payments that succeeded on other days: a range on the
# status alone would read them all)
$gw->db->sql("INSERT INTO payments (payment_no, merchant_id, business_no, "
             . "amount, currency, channel, status, succeeded_at) SELECT "
             . "CONCAT('PX82', seq), 'M100', CONCAT('BX82', seq), 100, 'CNY', "
             . "'bank_card', 'succeeded', '2020-01-01' + INTERVAL seq MINUTE "
             . "FROM seq_1_to_3000; ANALYZE TABLE payments");
my ($day_sql) = $gw->sent_statements(qr/^SELECT merchant_id, channel/,
                                     sub { $gw->api(GET => "/v1/settlements?date=$day") });
my $day_plan = $gw->plan($day_sql);
like($day_plan, qr/"key":\s*"idx_status"/, 'the settlement read: through idx_status')
    or diag($day_sql // 'no settlement read seen');
like($day_plan, qr/"access_type":\s*"range"/, '... a range, not a scan');
like($day_plan, qr/"used_key_parts":\s*\[\s*"status",\s*"succeeded_at"/,
     '... of the day\'s succeeded_at in each state, not every succeeded payment')
    or diag($day_plan);

done_testing;
