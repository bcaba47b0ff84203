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
# the wake-up; the second part below reaches the synchronous finish, and
# ASan reported the read of op->queued after the posted requests there.)
use strict;
use warnings;

use Test::More;
use POSIX ();

use JSON::PP ();
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

# ---- the waiting request is finished and freed inside the wake-up ----------
# A holds the one connection with SELECT SLEEP(1); B waits in the queue
# with a statement whose parameters do not match it.  When A's connection
# comes back, the wake-up dispatches B: its op fails before any round trip,
# finalizes B's subrequest, and the wake-up's ngx_http_run_posted_requests()
# answers B and frees B's request -- op's pool -- before the wake-up goes
# on.  That the free happens in there is read from the debug log; that the
# wake-up does not touch op afterwards is what ASan checks (make test-asan).
{
    my $ngx2 = PayGW::Test::Nginx->new(
        vars => backend_vars(redis => $redis, db => $db), workers => 1,
        test_module => 1, error_log_level => 'debug', http => <<'EOF')->start;
    paygw_zone paygw:1m;
    upstream redis { server 127.0.0.1:%%REDIS_PORT%%; keepalive 8; }
    paygw_mysql db host=127.0.0.1 port=%%MYSQL_PORT%% user=paygw
                password_file=%%MYSQL_PASSWORD_FILE%%
                database=paygw max_conns=1 idle_timeout=60s
                connect_timeout=10s query_timeout=10s;
    server {
        listen 127.0.0.1:%%PORT%%;
        lingering_close off;    # an answered request is freed at once
        paygw_redis_timeout 10s;
        location = /_paygw/redis { internal; paygw_redis_pass redis; }
        location = /_paygw/mysql { internal; paygw_mysql_pass db; }
        location = /_test/backend { paygw_test_backend; }
    }
EOF
    my $sql = sub {
        my ($text, @params) = @_;
        return [POST => $ngx2->url('/_test/backend'), timeout => 20,
                json => {mysql => {transaction => JSON::PP::false(),
                                   statements => [{sql => $text,
                                                   params => \@params}]}}];
    };
    for my $round (1 .. 3) {
        pipe(my $rd, my $wr) or die "pipe: $!\n";
        my $a = fork // die "fork: $!\n";
        if ($a == 0) {
            close $rd;
            print {$wr} http(@{ $sql->('SELECT SLEEP(1) AS s') })->{status};
            close $wr;
            POSIX::_exit(0);
        }
        close $wr;
        ok(wait_until(sub {
            $db->sql("SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                     . "WHERE INFO LIKE 'SELECT SLEEP(1)%'") > 0
        }, timeout => 10), "round $round: A holds the connection (SLEEP)");
        is(http(@{ $sql->('SELECT ?, ?', 'only one') })->{status}, 500,
           "round $round: B (parameters that do not match) answered 500");
        waitpid $a, 0;
        is(scalar(<$rd>), 200, "round $round: A answered 200");
    }
    my $log = $ngx2->error_log;
    my @wakes = $log =~ /wake-up dispatches a waiting op\n(.*?)wake-up ran the posted requests/sg;
    my @freed = grep { /does not match its parameters/
                       && /http close request|set http keepalive handler/ } @wakes;
    ok(@freed >= 1, sprintf('B was answered and its request freed inside the '
                            . 'wake-up (%d of %d wake-ups)', scalar @freed,
                            scalar @wakes));
    is(http(@{ $sql->('SELECT ?', 'after') })->{status}, 200,
       'the pool still serves');
    $ngx2->stop;
}

done_testing;
