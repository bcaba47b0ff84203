#!/usr/bin/perl
# GET /v1/payments/{no} from Redis (docs/architecture.md, "Payment
# cache"): a payment in a final state is answered without MySQL once a
# GET has read it; a refund's settlement can never leave the old body
# visible once the refund's answer came back, also while many GETs of
# the same payments run at the same time; the cache keeps merchant
# scoping (another merchant's payment stays 404, an admin key sees it);
# a cache entry Redis cannot read sends the GET to MySQL, never to an
# error; a refund settlement that cannot mark the cache writes nothing and
# is settled later; payments that are not final are never cached.
use strict;
use warnings;

use Test::More;
use POSIX ();
use Storable ();
use File::Temp ();
use Time::HiRes qw(clock_gettime CLOCK_MONOTONIC);

use PayGW::Gateway qw(sql_quote);
use PayGW::Test qw(wait_until);

my $gw = PayGW::Gateway->start(workers => 2);

# tagged by merchant: on a Redis Cluster the read rides with the nonce
sub key_of { my ($pno, $m) = @_; $m //= 'M100'; "pg:{$m}:pay:$pno" }

sub cached_body { $gw->redis->cli('HGET', key_of(@_), 'b') }

# MariaDB's SELECT count; the harness's own client adds its marker
# SELECT to every call, so deltas are compared with an idle interval.
sub com_select {
    my $out = $gw->sql1("SHOW GLOBAL STATUS LIKE 'Com_select'");
    return (split /\t/, $out)[1];
}

sub paid {
    my $r = $gw->create(@_);
    is $r->{status}, 201, 'payment created' or diag $r->{body};
    return $r->{json}{payment_no};
}

sub refund {
    my ($pno, $amount) = @_;
    return $gw->api(POST => "/v1/payments/$pno/refunds",
                    json => {refund_no => 'R-' . PayGW::Test::random_token(10),
                             amount => $amount, reason => 'test'},
                    idempotency_key => $gw->fresh_key('k88'));
}

# ---- a final payment is read from Redis after its first GET ----------------

my $pno = paid(amount => 1000);

is cached_body($pno), '', 'nothing is cached before the first GET';
my $first = $gw->get_payment($pno);
is $first->{status}, 200, 'first GET answers 200';
is $first->{json}{status}, 'succeeded', '... the payment succeeded';
like cached_body($pno), qr/"payment_no":"\Q$pno\E"/,
    'the first GET kept the rendered payment in Redis';

my $idle0 = com_select();
my $idle1 = com_select();
my $baseline = $idle1 - $idle0;

my $s0 = com_select();
my @gets = map { $gw->get_payment($pno) } 1 .. 20;
my $s1 = com_select();
is scalar(grep { $_->{status} == 200 } @gets), 20, '20 more GETs answer 200';
is_deeply [map { $_->{json} } @gets], [($first->{json}) x 20],
    '... with the body of the first';
is $s1 - $s0, $baseline, '... and no SELECT reached MySQL';

# Redis forgot the scripts (a restart, SCRIPT FLUSH, a failover): the
# nonce's EVALSHA is refused with NOSCRIPT beside the cache's HMGET; both
# go again, the script as EVAL, on every worker
$gw->redis->cli('SCRIPT', 'FLUSH');
my @after_flush = map { $gw->get_payment($pno) } 1 .. 6;
is scalar(grep { $_->{status} == 200 } @after_flush), 6,
    'after SCRIPT FLUSH, GETs of a cached payment still answer 200'
    or diag $after_flush[0]{body};
is_deeply [map { $_->{json} } @after_flush], [($first->{json}) x 6],
    '... with the same body';

# ---- a refund is visible in the first GET after its answer -----------------

my $r = refund($pno, 300);
is $r->{status}, 201, 'partial refund answered 201' or diag $r->{body};
my $after = $gw->payment($pno);
is $after->{status}, 'partially_refunded',
    'the GET right after the refund shows the new state';
is $after->{refunded_amount}, 300, '... and the refunded amount';
$gw->payment($pno);
like cached_body($pno), qr/"refunded_amount":300/,
    'the new state is cached again by a later GET';

$r = refund($pno, 700);
is $r->{status}, 201, 'the rest refunded';
$after = $gw->payment($pno);
is $after->{status}, 'refunded', 'GET shows refunded';
is $after->{refunded_amount}, 1000, '... all of it';

# ---- merchant scoping survives the cache -----------------------------------

my $other = paid(amount => 500);
$gw->db->sql("UPDATE payments SET merchant_id = 'M200' WHERE payment_no = "
         . sql_quote($other));
my $admin = $gw->api(GET => "/v1/payments/$other", key => 'ops');
is $admin->{status}, 200, 'an admin key reads any merchant\'s payment';
is cached_body($other, 'M200'), '',
    '... from MySQL: an admin key names no merchant, so no cache key';
is $gw->get_payment($other)->{status}, 404,
    'another merchant\'s payment is still 404';
is cached_body($other), '', '... and nothing is cached under M100';

# ---- an entry Redis cannot read: MySQL answers ------------------------------

my $broken = paid(amount => 700);
$gw->redis->cli('SET', key_of($broken), 'not a hash');
my $g = $gw->get_payment($broken);
is $g->{status}, 200, 'a cache key of the wrong type: GET still 200';
is $g->{json}{payment_no}, $broken, '... from MySQL';
is $gw->redis->cli('GET', key_of($broken)), 'not a hash',
    '... and the gateway did not touch the key';

# ---- a refund whose cache mark fails is not recorded -------------------------
#
# The mark is what makes the cache safe: a settlement that cannot make it
# writes nothing and waits (here: the key is of a type the mark script
# cannot change; Redis itself answers).

my $unmarkable = paid(amount => 900);
$gw->redis->cli('SET', key_of($unmarkable), 'not a hash');
my $rno = 'R-' . PayGW::Test::random_token(10);
my $pending = $gw->api(POST => "/v1/payments/$unmarkable/refunds",
                       json => {refund_no => $rno, amount => 400,
                                reason => 'test'},
                       idempotency_key => $gw->fresh_key('k88'));
is $pending->{status}, 202, 'refund approved at the acquirer, mark failed: 202';
is $pending->{json}{status}, 'pending', '... the refund stays pending';
is $gw->sql1("SELECT refunded_amount FROM payments WHERE payment_no = "
             . sql_quote($unmarkable)), 0, '... the payment is unchanged';
like $gw->ngx->error_log, qr/payment cache could not be marked/,
    '... and the log says why';
$gw->redis->cli('DEL', key_of($unmarkable));
my $settled = $gw->api(GET => "/v1/refunds/$rno");
is $settled->{json}{status}, 'succeeded',
    'once Redis can be marked, a read of the refund settles it';
is $gw->payment($unmarkable)->{refunded_amount}, 400,
    '... and the payment shows it';

# ---- what is not final is not cached ----------------------------------------

my $qr = $gw->create(channel => 'alipay', amount => 800);
is $qr->{status}, 201, 'a QR payment is created';
is $qr->{json}{status}, 'pending', '... pending';
my $qno = $qr->{json}{payment_no};
$gw->get_payment($qno) for 1 .. 2;
is cached_body($qno), '', 'a pending payment is never cached';
is $gw->sim->alipay_notify(out_trade_no => $qno)->{body}, 'success',
    'the buyer pays (callback)';
is $gw->payment($qno)->{status}, 'succeeded',
    'the next GET shows it succeeded';

# ---- a reader that read MySQL before a refund fills after its answer ------
#
# Made to happen, not hoped for: a second gateway (one worker) on the same
# backends serves a GET whose SELECT waits for a table lock; its worker is
# stopped, the lock released (the SELECT reads the payment as it was), the
# refund runs through the first gateway and answers, then the worker
# continues and tries to keep what it read.  The generation it saw at its
# miss is gone: the next GET must show the refund.

my $slow = PayGW::Gateway->start(share => $gw, workers => 1);
my ($worker) = $slow->ngx->worker_pids;
my $lagging = paid(amount => 1000);
is $gw->payment($lagging)->{refunded_amount}, 0, 'a payment, cached';
$gw->redis->cli('DEL', key_of($lagging));    # the next GET misses

sub waiting_selects {
    $gw->sql1("SELECT COUNT(*) FROM information_schema.processlist "
              . "WHERE info LIKE 'SELECT%FROM payments WHERE payment_no%' "
              . "AND user = 'paygw'");
}

$gw->db->sql('LOCK TABLES payments WRITE');
my $reader = fork // die "fork: $!\n";
if (!$reader) {
    my $res = $slow->get_payment($lagging);
    POSIX::_exit($res->{status} == 200 ? 0 : 1);
}
ok wait_until(sub { waiting_selects() >= 1 }, timeout => 10),
    'the slow gateway\'s SELECT waits for the lock';
kill 'STOP', $worker;
$gw->db->sql('UNLOCK TABLES');
ok wait_until(sub { waiting_selects() == 0 }, timeout => 10),
    '... and ran once the lock was gone, its worker stopped';
$r = refund($lagging, 300);
is $r->{status}, 201, 'a refund answered meanwhile' or diag $r->{body};
kill 'CONT', $worker;
waitpid $reader, 0;
is $? >> 8, 0, 'the slow GET answered (with what it read)';
is $gw->payment($lagging)->{refunded_amount}, 300,
    'a GET after the refund\'s answer shows the refund';
is $slow->payment($lagging)->{refunded_amount}, 300,
    '... on either gateway';

# ---- the race: GETs from many processes while refunds change payments ------
#
# Readers GET the payments in a loop and write down, for each answer, when
# they sent the request and what refunded_amount it showed.  The writer
# refunds each payment step by step and writes down when each answer came
# back.  A GET sent after a refund's answer must show at least that
# refund.

my @pay = map { paid(amount => 10_000) } 1 .. 2;
$gw->payment($_) for @pay;                          # all cached

my $dir = File::Temp::tempdir('paygw-88-XXXXXX', TMPDIR => 1, CLEANUP => 1);
my $stop = "$dir/stop";
my @readers;
for my $i (1 .. 6) {
    my $pid = fork // die "fork: $!\n";
    if (!$pid) {
        my @seen;
        my $n = 0;
        until (-e $stop) {
            my $p = $pay[$n++ % @pay];
            my $t = clock_gettime(CLOCK_MONOTONIC);
            my $res = $gw->get_payment($p);
            push @seen, [$p, $t, $res->{status},
                         $res->{json} ? $res->{json}{refunded_amount} : -1];
        }
        Storable::nstore(\@seen, "$dir/reader$i");
        POSIX::_exit(0);
    }
    push @readers, $pid;
}

my %done;                                   # pno -> [[time, amount], ...]
my $refund_errors = 0;
for my $step (1 .. 16) {
    for my $p (@pay) {
        my $res = refund($p, 500);
        if ($res->{status} != 201 || $res->{json}{status} ne 'succeeded') {
            $refund_errors++;
            diag "refund: $res->{status} $res->{body}";
            next;
        }
        push @{ $done{$p} }, [clock_gettime(CLOCK_MONOTONIC), 500 * $step];
    }
}
open my $fh, '>', $stop or die "$stop: $!\n";
close $fh;
waitpid $_, 0 for @readers;

is $refund_errors, 0, '32 refunds succeeded while GETs ran';

my ($answers, $stale, $failed) = (0, 0, 0);
for my $i (1 .. 6) {
    my $seen = Storable::retrieve("$dir/reader$i");
    for my $s (@$seen) {
        my ($p, $t, $status, $amount) = @$s;
        $answers++;
        if ($status != 200) { $failed++; next }
        my $expect = 0;
        for my $d (@{ $done{$p} // [] }) {
            $expect = $d->[1] if $d->[0] < $t;
        }
        if ($amount < $expect) {
            $stale++;
            diag "stale: $p showed $amount after $expect was answered"
                if $stale <= 5;
        }
    }
}
cmp_ok $answers, '>', 40, "the readers got answers ($answers)";
is $failed, 0, 'every GET answered 200';
is $stale, 0, 'no GET sent after a refund\'s answer showed the amount before it';
is $gw->payment($_)->{refunded_amount}, 8000, "final GET of $_ shows 8000"
    for @pay;

done_testing;
