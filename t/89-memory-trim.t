#!/usr/bin/perl
# paygw_memory_trim: each worker hands the free pages of its heap back to
# the kernel on a timer (malloc_trim), so that memory freed below blocks
# still in use does not stay resident: what a container's memory limit
# and an operator's RSS graph see.  The test module leaves N MB of the
# worker's heap free but resident ({"fragment_mb": N}); with the trim the
# worker's RSS falls back, without it it stays.  The timer must not keep
# an old worker alive after a reload, and bad values are refused.
# mmap_threshold= fixes glibc's mmap threshold, so that a large block is
# mapped on its own and unmapped when freed, even after glibc saw a larger
# one ({"large_kb": N} frees two blocks of N kB one after the other).
# After each trim the worker publishes its heap as malloc counts it
# (paygw_worker_heap_bytes): the fragment shows as free, not in use.
use strict;
use warnings;

use Test::More;
use Time::HiRes qw(sleep time);

use PayGW::Test qw(http wait_until proc_kb);

sub conf {
    my ($trim) = @_;
    my $directive = defined $trim ? "paygw_memory_trim $trim;" : '';
    return <<"EOF";
    paygw_zone paygw:1m;
    $directive
    server {
        listen 127.0.0.1:%%PORT%%;
        location = /_test/backend { paygw_test_backend; }
        location = /metrics { paygw_metrics; }
    }
EOF
}

# the worker's anonymous resident memory, kB
sub rss_anon { proc_kb($_[0], 'RssAnon') }

my $ngx = PayGW::Test::Nginx->new(workers => 1, test_module => 1,
                                  error_log_level => 'debug',
                                  http => conf('300ms'))->start;

sub fragment {
    my ($mb) = @_;
    my $r = http(POST => $ngx->url('/_test/backend'),
                 json => {fragment_mb => $mb}, timeout => 20);
    is $r->{status}, 200, "$mb MB left free in the worker's heap"
        or diag $r->{body};
}

# paygw_worker_heap_bytes{worker="0",state=...} as /metrics shows it
sub heap {
    my ($state) = @_;
    my $r = http(GET => $ngx->url('/metrics'));
    return $r->{body} =~ /^paygw_worker_heap_bytes\{worker="0",state="$state"\} (\d+)$/m
        ? $1 : undef;
}

sub large {
    my ($kb) = @_;
    my $r = http(POST => $ngx->url('/_test/backend'),
                 json => {large_kb => $kb}, timeout => 20);
    is $r->{status}, 200, "two blocks of $kb kB allocated, filled and freed"
        or diag $r->{body};
}

# ---- bad values are refused, with the reason -----------------------------
for my $bad ('0', 'soon', '-5s') {
    my ($rc, $out) = $ngx->test_config(http => conf($bad));
    isnt $rc, 0, "paygw_memory_trim $bad is refused";
    like $out, qr/invalid value "\Q$bad\E": expected an interval/,
        '... saying what is expected';
}
{
    my ($rc, $out) = $ngx->test_config(
        http => conf('5s') =~ s/(paygw_memory_trim 5s;)/$1 $1/r);
    isnt $rc, 0, 'paygw_memory_trim twice is refused';
    like $out, qr/"paygw_memory_trim" directive is duplicate/, '... as a duplicate';
}
for my $bad ('1s mmap_threshold=1k', '1s mmap_threshold=64m',
             '1s mmap_threshold=lots') {
    my ($rc, $out) = $ngx->test_config(http => conf($bad));
    isnt $rc, 0, "paygw_memory_trim $bad is refused";
    like $out, qr/mmap_threshold= takes a size from 4k to 32m/,
        '... saying what is expected';
}
{
    my ($rc, $out) = $ngx->test_config(http => conf('1s mmap=64k'));
    isnt $rc, 0, 'an unknown parameter is refused';
    like $out, qr/invalid parameter "mmap=64k"/, '... naming it';
}
for my $good ('off', '250ms', '1m', '1s mmap_threshold=off',
              'off mmap_threshold=128k') {
    my ($rc, $out) = $ngx->test_config(http => conf($good));
    is $rc, 0, "paygw_memory_trim $good is accepted" or diag $out;
}
$ngx->test_config(http => conf('300ms'));   # back to what runs

SKIP: {
    skip 'ASan has its own allocator: malloc_trim does not see its heap', 16
        if $ENV{PAYGW_ASAN};

    # ---- with the trim: the freed memory leaves the worker ---------------
    my ($w) = $ngx->worker_pids;
    my $base = rss_anon($w);
    fragment(64);
    my $peak = rss_anon($w);
    my $low;
    ok wait_until(sub { $low = rss_anon($w); $low < $base + 16 * 1024 },
                  timeout => 5),
        'with paygw_memory_trim 300ms the worker gives the free 62 MB back'
        or diag "RssAnon kB: before $base, after $peak, now $low";
    # RSS falls inside malloc_trim(); the line is written when it returns
    ok wait_until(sub { $ngx->error_log
                        =~ /paygw memory: trimmed in \d+ us, pages released: yes/ },
                  timeout => 5),
        'the trim is in the debug log';

    # ---- the gauge: the fragment is free in the arena, not in use --------
    my ($free, $in_use);
    ok wait_until(sub { $free = heap('free'); ($free // 0) > 48 << 20 },
                  timeout => 5),
        'paygw_worker_heap_bytes shows the 62 MB as free in the arena'
        or diag "free: " . ($free // 'none');
    $in_use = heap('in_use');
    ok defined $in_use && $in_use > 0 && $in_use < 16 << 20,
        '... and not as in use: RSS fell while the arena kept them'
        or diag "in_use: " . ($in_use // 'none');
    my $metrics = http(GET => $ngx->url('/metrics'))->{body};
    like $metrics,
        qr/^paygw_worker_heap_bytes\{worker="0",state="mapped"\} \d+$/m,
        '... and the blocks mapped on their own';
    like $metrics,
        qr/^paygw_worker_heap_trim_seconds\{worker="0"\} 0\.\d{6}$/m,
        'the last trim\'s duration is published';
    unlike $metrics,
        qr/paygw_worker_heap_bytes\{worker="1"/,
        'only the configured workers are shown';

    # ---- without it: it stays (so the test above can fail) ---------------
    $ngx->reload(http => conf('off'));
    ($w) = $ngx->worker_pids;
    $base = rss_anon($w);
    fragment(64);
    sleep 1.5;
    my $kept = rss_anon($w);
    cmp_ok $kept, '>', $base + 48 * 1024,
        'with paygw_memory_trim off the free memory stays resident'
        or diag "RssAnon kB: before $base, 1.5 s later $kept";

    # the default where paygw runs (paygw_zone): on, every second
    $ngx->reload(http => conf(undef));
    ($w) = $ngx->worker_pids;
    $base = rss_anon($w);
    fragment(64);
    ok wait_until(sub { rss_anon($w) < $base + 16 * 1024 }, timeout => 5),
        'by default the worker trims every second';
    like $ngx->error_log,
        qr/paygw memory: blocks of 32768 bytes or more are mapped on their own/,
        'by default blocks of 32k and more are mapped on their own';

    # ---- mmap_threshold=: a large block freed leaves at once -------------
    # (the trim is off in both, so only the threshold can give it back)
    $ngx->reload(http => conf('off mmap_threshold=off'));
    ($w) = $ngx->worker_pids;
    $base = rss_anon($w);
    large(4096);
    my $moved = rss_anon($w);
    cmp_ok $moved, '>', $base + 3 * 1024,
        "with glibc's own threshold the second 4 MB block stays resident"
        or diag "RssAnon kB: before $base, after $moved";

    $ngx->reload(http => conf('off mmap_threshold=64k'));
    ($w) = $ngx->worker_pids;
    $base = rss_anon($w);
    large(4096);
    my $fixed = rss_anon($w);
    cmp_ok $fixed, '<', $base + 1024,
        'with mmap_threshold=64k both blocks leave when freed'
        or diag "RssAnon kB: before $base, after $fixed";
}

# ---- a long interval does not hold an old worker after a reload ----------
{
    $ngx->reload(http => conf('1h'));
    my @old = $ngx->worker_pids;
    my $t0 = time;
    $ngx->reload(http => conf('1h'));
    ok wait_until(sub { !grep { kill 0, $_ } @old }, timeout => 10),
        'the old worker exits after a reload though its trim timer is 1h away';
    cmp_ok time - $t0, '<', 10, '... promptly';
}

$ngx->stop;
done_testing;
