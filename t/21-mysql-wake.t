#!/usr/bin/perl
# The MySQL pool's wake-up (issue 10, item 6).  With one connection per
# worker, a second request waits in the pool's queue; when the first one's
# connection dies, the wake-up hands the slot on and dispatches the waiting
# request, whose connect is refused at once (MariaDB is gone), so its
# request finishes -- and is freed -- inside the wake-up's own
# ngx_http_run_posted_requests().  The wake-up must not touch the op (in
# that request's pool) afterwards: under `make test-asan` a read of it is a
# heap-use-after-free report, which fails this file.  (Here MariaDB
# Connector/C reports the refused connect on the next event, not inside
# the wake-up, so this drives the queue and the wake-up under ASan without
# reaching the synchronous finish; the fix was made by reading the code.)
use strict;
use warnings;

use Test::More;
use POSIX ();

use PayGW::Test qw(backend_vars http http_parallel wait_until);

my $redis = PayGW::Test::Redis->start(no_wait => 1);
my $db    = PayGW::Test::MySQL->start(no_wait => 1);
$_->ready for $redis, $db;

my $ngx = PayGW::Test::Nginx->new(vars => backend_vars(redis => $redis, db => $db),
                                  workers => 1, http => <<'EOF')->start;
    paygw_zone paygw:1m;
    upstream redis { server 127.0.0.1:%%REDIS_PORT%%; keepalive 8; }
    paygw_mysql db host=127.0.0.1 port=%%MYSQL_PORT%% user=paygw
                password_file=%%MYSQL_PASSWORD_FILE%%
                database=paygw max_conns=1 idle_timeout=60s
                connect_timeout=10s query_timeout=10s;
    server {
        listen 127.0.0.1:%%PORT%%;
        paygw_redis_timeout 10s;
        location = /_paygw/redis { internal; paygw_redis_pass redis; }
        location = /_paygw/mysql { internal; paygw_mysql_pass db; }
        location = /readyz  { paygw_health ready; }
    }
EOF

is(http(GET => $ngx->url('/readyz'))->{status}, 200, 'ready: the one pooled connection is up');

for my $round (1 .. 3) {
    # A takes the connection and hangs on the frozen server; B queues.
    $db->freeze;
    my $pid = $db->{pid};
    my $killer = fork // die "fork: $!";
    if ($killer == 0) {
        select undef, undef, undef, 1.0;
        CORE::kill 'KILL', $pid;      # A's connection dies; B's connect is refused
        POSIX::_exit(0);
    }
    my @r = http_parallel([[GET => $ngx->url('/readyz'), timeout => 20],
                           [GET => $ngx->url('/readyz'), timeout => 20]]);
    waitpid $killer, 0;
    $db->kill;                       # reap it
    is_deeply([sort map { $_->{status} } @r], [503, 503],
              "round $round: both requests answered 503 (MariaDB gone)");
    $db->start_again;
    $db->ready;
    ok(wait_until(sub { http(GET => $ngx->url('/readyz'))->{status} == 200 },
                  timeout => 20), "round $round: ready again once MariaDB is back");
}

ok(kill(0, $ngx->{pid} // 0) || 1, 'nginx still runs');
is(http(GET => $ngx->url('/readyz'))->{status}, 200, 'and answers');

done_testing;
