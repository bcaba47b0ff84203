#!/usr/bin/perl
# Redis through the module's backend API (POST /_test/backend): commands,
# pipelines, every RESP reply type, large values, connection reuse, and
# what a user sees when Redis dies or hangs and comes back.  It runs with
# paygw_redis_multiplex on (the default: every request's round trips on
# one connection per worker) and, from t/10-redis-upstream.t, with it
# off (a subrequest and a pooled upstream connection per round trip).
use strict;
use warnings;

use Test::More;
use Time::HiRes qw(time sleep);

use PayGW::Test qw(backend_vars http http_parallel wait_until proc_kb);

my $multiplex = $ENV{PAYGW_TEST_MULTIPLEX} // 'on';
my $redis = PayGW::Test::Redis->start;
# Generous timeouts while the machine may be busy; the hang test below
# reloads with paygw_redis_timeout 1s.
sub conf {
    my ($timeout) = @_;
    return <<"EOF";
    paygw_zone paygw:1m;
    upstream redis { server 127.0.0.1:%%REDIS_PORT%%; keepalive 8; }
    server {
        listen 127.0.0.1:%%PORT%%;
        client_body_buffer_size 4m;
        client_max_body_size 8m;
        paygw_redis_timeout $timeout;
        paygw_redis_multiplex $multiplex;
        location = /_paygw/redis { internal; paygw_redis_pass redis; }
        location = /_test/backend { paygw_test_backend; }
    }
EOF
}

my $ngx = PayGW::Test::Nginx->new(test_module => 1, vars => backend_vars(redis => $redis),
                                  workers => 2, http => conf('10s'))->start;
note("paygw_redis_multiplex $multiplex");

# One pipeline through the module: the whole HTTP response.
sub redis_req {
    my (@cmds) = @_;
    return http(POST => $ngx->url('/_test/backend'),
                json => {redis => \@cmds}, timeout => 10);
}

# The replies of a pipeline that must succeed (undef, with a diagnostic,
# otherwise).
sub replies {
    my (@cmds) = @_;
    my $r = redis_req(@cmds);
    if ($r->{status} != 200 || ref $r->{json} ne 'HASH') {
        diag("POST /_test/backend: $r->{status} $r->{body}");
        return undef;
    }
    return $r->{json}{replies};
}

sub str { {type => 'string', len => length $_[0], value => $_[0]} }

# ---- one command, one pipeline -------------------------------------------------

is_deeply(replies(['SET', 'greeting', 'hello']),
          [{type => 'status', value => 'OK'}], 'single SET: status OK');
is($redis->cli(qw(GET greeting)), 'hello', '... and Redis really has it');

is_deeply(replies(['INCR', 'ctr'], ['INCR', 'ctr'], ['INCRBY', 'ctr', '40'],
                  ['GET', 'ctr'], ['DEL', 'ctr'], ['GET', 'ctr']),
          [{type => 'integer', value => 1}, {type => 'integer', value => 2},
           {type => 'integer', value => 42}, str('42'),
           {type => 'integer', value => 1}, {type => 'nil'}],
          'pipeline of six commands: one reply each, in order');

{
    # many replies: they arrive in several reads, split anywhere
    my @cmds = map { ['INCR', 'many'] } 1 .. 2000;
    my $rep = replies(@cmds, ['GET', 'many']);
    is(scalar @{$rep || []}, 2001, 'pipeline of 2001 commands: 2001 replies');
    is_deeply($rep && [map { $_->{value} } @$rep[0 .. 1999]], [1 .. 2000],
              '... in order');
}

# ---- every reply type --------------------------------------------------------

$redis->cli(qw(RPUSH list a bb ccc));
is_deeply(replies(['PING'], ['GET', 'greeting'], ['GET', 'no-such-key'],
                  ['STRLEN', 'greeting'], ['LRANGE', 'list', '0', '-1'],
                  ['LRANGE', 'no-such-list', '0', '-1'],
                  ['EVAL', "return {1,{2,'x'},{}}", '0'],
                  ['INCR', 'greeting']),
          [{type => 'status', value => 'PONG'},
           str('hello'),
           {type => 'nil'},
           {type => 'integer', value => 5},
           {type => 'array', value => [str('a'), str('bb'), str('ccc')]},
           {type => 'array', value => []},
           {type => 'array', value => [{type => 'integer', value => 1},
                                       {type => 'array', value => [
                                           {type => 'integer', value => 2},
                                           str('x')]},
                                       {type => 'array', value => []}]},
           {type => 'error',
            value => 'ERR value is not an integer or out of range'}],
          'status, bulk string, nil, integer, array, empty array, nested '
          . 'array, error');

{
    my $rep = replies(['NOSUCHCOMMAND', 'x']);
    is($rep && $rep->[0]{type}, 'error', 'unknown command: error reply');
    like($rep && $rep->[0]{value}, qr/^ERR unknown command/,
         '... carrying Redis\' message');
}

{
    # '\255' is Lua for the single byte 0xFF: not UTF-8
    my $rep = replies(['EVAL', "return '\\255ok'", '0'],
                      ['SET', 'n', '9007199254740992'], ['INCR', 'n'],
                      ['SET', 'max', '9223372036854775806'], ['INCR', 'max'],
                      ['SET', 'min', '-9223372036854775807'], ['DECR', 'min'],
                      ['SET', 'empty', ''], ['GET', 'empty']);
    is_deeply($rep && $rep->[0], {type => 'string', len => 3, value => undef},
              'non-UTF-8 bulk string: len 3, value null');
    is_deeply($rep && [map { $_->{value} } @$rep[2, 4, 6]],
              ['9007199254740993', '9223372036854775807',
               '-9223372036854775808'],
              'integer replies above 2^53, up to INT64 max and min, exact');
    is_deeply($rep && $rep->[8], str(''), 'empty bulk string is not nil');
}

{
    # The harness speaks UTF-8 byte strings (JSON::PP without ->utf8).
    my $want = utf8_bytes("caf\x{e9} \x{1F4B3} \x{4E2D}\x{6587}");
    my $rep = replies(['SET', 'utf8', $want], ['GET', 'utf8']);
    is($rep && $rep->[1]{value}, $want, 'UTF-8 (2, 3 and 4 byte) round trip');
    is($rep && $rep->[1]{len}, length $want, '... len counts bytes (17)');
    is($redis->cli(qw(STRLEN utf8)), 17, '... Redis stored 17 bytes');
}

# ---- keys and values Redis must get byte for byte ------------------------------

{
    my @keys = ('a b', "line1\nline2", "cr\r\nlf", " lead", "trail ",
                "tab\there", '*3', '$5', 'quote"back\\slash');
    my $i = 0;
    my $rep = replies(map({ ['SET', $_, 'v' . $i++] } @keys),
                      map({ ['GET', $_] } @keys),
                      ['EXISTS', 'a'], ['EXISTS', 'line1'], ['EXISTS', 'cr'],
                      ['DBSIZE']);
    my @got = $rep ? map { $_->{value} } @$rep[@keys .. 2 * @keys - 1] : ();
    is_deeply(\@got, [map { "v$_" } 0 .. $#keys],
              'keys with spaces, CR/LF, tabs, RESP markers: own values');
    is_deeply($rep && [map { $_->{value} } @$rep[2 * @keys .. 2 * @keys + 2]],
              [0, 0, 0], '... no key was split at a space or newline');

    my $found = replies(['KEYS', '*']);
    my %k = map { $_->{value} => 1 } @{$found && $found->[0]{value} || []};
    is(scalar(grep { $k{$_} } @keys), scalar @keys,
       '... and Redis stored exactly those names');

    my $inject = "x\r\n*3\r\n\$3\r\nSET\r\n\$8\r\ninjected\r\n\$1\r\n1\r\n";
    $rep = replies(['SET', 'payload', $inject], ['GET', 'payload'],
                   ['EXISTS', 'injected']);
    is_deeply($rep && [$rep->[1]{value}, $rep->[2]{value}], [$inject, 0],
              'a value that looks like RESP is data, not a command');
}

# ---- a 1 MB value --------------------------------------------------------------

{
    my $big = join '', map { sprintf '%07d,', $_ } 0 .. 131071;    # 1 MiB
    is(length $big, 1048576, 'test value is 1 MiB');
    my $r = redis_req(['SET', 'big', $big]);
    is($r->{status}, 200, 'SET of a 1 MiB value: 200');
    is($redis->cli(qw(STRLEN big)), 1048576, '... Redis holds all of it');
    my $rep = replies(['GET', 'big'], ['PING']);
    is($rep && $rep->[0]{len}, 1048576, 'GET back: len 1048576');
    ok($rep && defined $rep->[0]{value} && $rep->[0]{value} eq $big,
       '... content identical');
    is_deeply($rep && $rep->[1], {type => 'status', value => 'PONG'},
              '... and the reply after it in the pipeline is intact');
    $rep = replies(['GET', 'greeting']);
    is_deeply($rep, [str('hello')],
              'next request on the pooled connection reads its own reply');
}

# ---- connection reuse ----------------------------------------------------------

{
    my $total = sub {
        ($redis->cli(qw(INFO stats)) =~ /^total_connections_received:(\d+)/m)[0];
    };
    my $before = $total->();
    my $ok = 0;
    my $t0 = time;
    for my $i (1 .. 1000) {
        my $rep = replies(['SET', 'seq', "$i"], ['GET', 'seq']);
        $ok++ if $rep && ($rep->[1]{value} // '') eq $i;
    }
    note(sprintf '1000 requests in %.1fs', time - $t0);
    is($ok, 1000, '1000 sequential requests, each read its own reply');
    my ($clients) = $redis->cli(qw(INFO clients)) =~ /^connected_clients:(\d+)/m;
    cmp_ok($clients, '<=', 8 + 2,
           'connected_clients stays within keepalive 8 (+ redis-cli)');
    # redis-cli itself connects once per call ($total, INFO clients, $total)
    cmp_ok($total->() - $before, '<=', 20,
           'Redis accepted almost no new connections: the pool is reused');
}

# ---- concurrency: no cross-talk between requests on pooled connections ---------

{
    my @res = http_parallel([map {
        [POST => $ngx->url('/_test/backend'),
         json => {redis => [['SET', "par$_", "value-$_-" . ('z' x (3000 * $_))],
                            ['GET', "par$_"], ['INCR', 'par-count']]}]
    } 1 .. 30]);
    my $good = grep {
        my $rep = $res[$_ - 1]{json} && $res[$_ - 1]{json}{replies};
        $rep && ($rep->[1]{value} // '') eq "value-$_-" . ('z' x (3000 * $_))
    } 1 .. 30;
    is($good, 30, '30 parallel pipelines (3 kB .. 90 kB values): each got '
                  . 'its own replies')
        or diag(join "\n", map { "$_->{status} " . substr($_->{body}, 0, 200) }
                            grep { $_->{status} != 200 } @res);
    is($redis->cli(qw(GET par-count)), 30, '... and each ran exactly once');
}

# ---- multiplexed: all requests on one connection per worker ----------------------

if ($multiplex eq 'on') {
    my $total = sub {
        ($redis->cli(qw(INFO stats)) =~ /^total_connections_received:(\d+)/m)[0];
    };
    # both workers have their connection open, then the count starts
    ok(replies(['PING']), 'warm') for 1 .. 4;
    my $before = $total->();
    my @res = http_parallel([map {
        [POST => $ngx->url('/_test/backend'),
         json => {redis => [['INCR', "mux$_"], ['GET', "mux$_"]]}]
    } 1 .. 60]);
    my $good = grep {
        my $rep = $res[$_ - 1]{json} && $res[$_ - 1]{json}{replies};
        $rep && ($rep->[1]{value} // '') eq '1'
    } 1 .. 60;
    is($good, 60, '60 parallel requests, multiplexed: each read its own '
                  . 'replies, and each ran once');
    # redis-cli connects once per call: $before and this one
    cmp_ok($total->() - $before, '<=', 2 + 2,
           'Redis accepted no new connection for them (one per worker, '
           . 'already open)');
    my ($clients) = $redis->cli(qw(INFO clients)) =~ /^connected_clients:(\d+)/m;
    cmp_ok($clients, '<=', 2 + 1, 'connected_clients: one per worker '
                                  . '(+ redis-cli)');

    # A burst's commands grow the connection's send buffer; once they are
    # all written it goes back to its usual size instead of holding the
    # worker at the largest burst it ever saw (bench soak 2026-12-03T1330Z)
    SKIP: {
        skip 'ASan has its own allocator', 2 if $ENV{PAYGW_ASAN};
        my $anon = sub {
            my $kb = 0;
            $kb += proc_kb($_, 'RssAnon') // 0 for $ngx->worker_pids;
            return $kb;
        };
        my $before = $anon->();
        my $big = 'b' x (2 << 20);
        ok(replies(['SET', 'big', $big], ['STRLEN', 'big']), 'a 2 MB SET');
        my $after = $anon->();
        cmp_ok($after - $before, '<', 1024,
               'its 2 MB of commands did not stay in the worker once sent')
            or diag("workers' RssAnon kB: before $before, after $after");
    }

    # Redis closes the idle connections (a restart, CLIENT KILL, timeout):
    # the next request opens a new one instead of failing on the old one
    $redis->cli(qw(CLIENT KILL TYPE normal));
    my $ok = grep { my $rep = replies(['GET', 'mux1']);
                    $rep && ($rep->[0]{value} // '') eq '1' } 1 .. 6;
    is($ok, 6, 'connections killed by Redis while idle: the next requests '
               . 'succeed on new ones');
}

# ---- a pipeline is never replayed -----------------------------------------------

{
    # The pooled connection breaks after Redis ran part of the pipeline
    # (QUIT stands in for a crash, a CLIENT KILL or an output buffer limit).
    # Running it again on a new connection would INCR twice, or find its
    # own SET NX lock taken.
    ok(replies(['PING']), 'pool warm');
    my $r = redis_req(['INCR', 'once'], ['SET', 'lock', 'me', 'NX'],
                      ['QUIT'], ['GET', 'once']);
    isnt($r->{status}, 200, 'connection closed mid-pipeline: not a 200')
        or diag($r->{body});
    is($redis->cli(qw(GET once)), 1,
       '... and the commands Redis already ran were not sent again');
    my $rep = replies(['GET', 'lock']);
    is_deeply($rep, [str('me')], '... next request fine');
}

# ---- a reply over paygw_redis_max_reply_size (default 8m) -------------------------

{
    my $rep = replies(['EVAL', "return redis.call('SET', KEYS[1], "
                               . "string.rep('y', 9 * 1024 * 1024))", '1',
                       'huge']);
    is_deeply($rep, [{type => 'status', value => 'OK'}], '9 MiB value stored');
    my $r = redis_req(['GET', 'huge'], ['PING']);
    ok($r->{status} >= 500 && $r->{status} <= 504,
       "GET of 9 MiB over the 8 MiB reply limit: $r->{status}, not a 200");
    like($ngx->error_log, qr/paygw_redis_max_reply_size/,
         '... the error log names paygw_redis_max_reply_size');
    is_deeply(replies(['GET', 'greeting']), [str('hello')],
              '... next request reads its own reply');
}

# ---- Redis dies and comes back --------------------------------------------------

{
    $redis->kill;
    for my $n (1, 2) {
        my $r = redis_req(['GET', 'greeting']);
        is($r->{status}, 503, "Redis killed: request $n gets 503");
        is($r->{json} && $r->{json}{error}{code}, 'backend_unavailable',
           '... code backend_unavailable');
        cmp_ok($r->{elapsed}, '<', 2, '... promptly');
        is($r->{json} && $r->{json}{error}{request_id},
           $r->{headers}{'x-request-id'},
           '... error.request_id is the X-Request-Id header') if $n == 1;
    }
    $redis->start_again;
    my $rep = replies(['SET', 'back', 'yes'], ['GET', 'back']);
    is_deeply($rep && $rep->[1], str('yes'),
              'Redis restarted: first request succeeds, no nginx reload');
    is_deeply(replies(['PING']), [{type => 'status', value => 'PONG'}],
              '... and the next one');
}

# ---- Redis hangs -----------------------------------------------------------------

{
    $ngx->reload(http => conf('1s'));
    ok(replies(['PING']), 'reloaded with paygw_redis_timeout 1s; pool warm');
    $redis->freeze;
    for my $n (1, 2) {
        my $r = redis_req(['SET', "frozen$n", 'x'], ['GET', "frozen$n"]);
        is($r->{status}, 504, "Redis frozen: request $n gets 504");
        is($r->{json} && $r->{json}{error}{code}, 'backend_timeout',
           '... code backend_timeout');
        ok($r->{elapsed} > 0.8 && $r->{elapsed} < 3,
           sprintf('... after paygw_redis_timeout 1s (took %.2fs)',
                   $r->{elapsed}));
    }
    $redis->thaw;
    my $good = 0;
    for my $i (1 .. 20) {
        my $rep = replies(['SET', "after$i", "val$i"], ['GET', "after$i"]);
        $good++ if $rep && ($rep->[1]{value} // '') eq "val$i";
    }
    is($good, 20, 'thawed: 20 requests each get their own reply '
                  . '(no timed-out connection was reused)');
}

# ---- bad input ---------------------------------------------------------------------

{
    my $r = http(POST => $ngx->url('/_test/backend'), body => '{"redis": [',
                 headers => {'Content-Type' => 'application/json'});
    is($r->{status}, 400, 'malformed JSON: 400');
    $r = redis_req([]);
    is($r->{status}, 400, 'empty command: 400');
}

my @bad = $ngx->error_log
          =~ /^.*(?:\[(?:alert|emerg|crit)\]|exited on signal).*$/mg;
is(join("\n", @bad), '', 'no crash, alert, crit or emerg in the error log');

done_testing;

sub utf8_bytes { my $s = $_[0]; utf8::encode($s); return $s }
