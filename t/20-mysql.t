#!/usr/bin/perl
# MySQL (MariaDB) through the module's backend API (POST /_test/backend):
# values round-trip exactly, transactions roll back, the per-worker pool
# reuses and bounds connections, nothing blocks the worker, and MariaDB
# dying, restarting, hanging or being slow gives the documented errors and
# then recovers without touching nginx.
use strict;
use warnings;

use POSIX ();
use Storable ();
use Test::More;
use Time::HiRes qw(time sleep);

use PayGW::Test qw(backend_vars http http_parallel wait_until);

my $redis = PayGW::Test::Redis->start(no_wait => 1);
my $db    = PayGW::Test::MySQL->start(no_wait => 1);
$_->ready for $redis, $db;

# Three pools in one nginx (one server block each, so each has its own
# /_paygw/mysql), each logging in as its own user, so that a pool's
# connections can be counted exactly in the processlist.
#   main   paygw   max_conns=4 query_timeout=10s            port %%PORT%%
#   fast   paygw3  max_conns=1 query_timeout=1s connect_timeout=1s
#                  idle_timeout=1s
#   small  paygw2  max_conns=2 query_timeout=10s
my $secrets = PayGW::Test::_mkdir('secrets');
for my $u ('paygw2', 'paygw3') {
    PayGW::Test::_spew("$secrets/$u.pass", "Pw-of-$u-9\n", 0600);
    $db->sql(<<"SQL");
CREATE USER '$u'\@'127.0.0.1' IDENTIFIED BY 'Pw-of-$u-9';
GRANT ALL PRIVILEGES ON paygw.* TO '$u'\@'127.0.0.1';
SQL
}

my ($fast_port, $small_port) = (PayGW::Test::free_port(),
                                PayGW::Test::free_port());
my $ngx;
{
    my $mysql = "host=127.0.0.1 port=%%MYSQL_PORT%% database=paygw";
    my $server = sub {
        my ($listen, $pool) = @_;
        return <<"EOF";
    server {
        listen 127.0.0.1:$listen;
        client_body_buffer_size 16m;
        client_max_body_size 16m;
        paygw_redis_timeout 10s;
        location = /_paygw/redis { internal; paygw_redis_pass redis; }
        location = /_paygw/mysql { internal; paygw_mysql_pass $pool; }
        location = /healthz { paygw_health live; }
        location = /_test/backend { paygw_test_backend; }
    }
EOF
    };
    $ngx = PayGW::Test::Nginx->new(
        test_module => 1,
        vars => {%{ backend_vars(redis => $redis, db => $db) }, SECRETS => $secrets,
                 FAST_PORT => $fast_port, SMALL_PORT => $small_port},
        http => <<"EOF" . join '',
    paygw_zone paygw:1m;
    upstream redis { server 127.0.0.1:%%REDIS_PORT%%; keepalive 8; }
    paygw_mysql main $mysql user=paygw password_file=%%MYSQL_PASSWORD_FILE%%
                max_conns=4 idle_timeout=60s connect_timeout=3s
                query_timeout=10s;
    paygw_mysql fast $mysql user=paygw3 password_file=%%SECRETS%%/paygw3.pass
                max_conns=1 idle_timeout=1s connect_timeout=1s
                query_timeout=1s;
    paygw_mysql small $mysql user=paygw2 password_file=%%SECRETS%%/paygw2.pass
                max_conns=2 idle_timeout=60s connect_timeout=3s
                query_timeout=10s;
EOF
        $server->('%%PORT%%', 'main'), $server->('%%FAST_PORT%%', 'fast'),
        $server->('%%SMALL_PORT%%', 'small'))->start;
}

package Endpoint {
    sub new { my ($c, $port) = @_; bless {port => $port}, $c }
    sub url { "http://127.0.0.1:$_[0]{port}" . ($_[1] // '') }
}
my $fast  = Endpoint->new($fast_port);
my $small = Endpoint->new($small_port);

# POST {"mysql": {...}} to an nginx; the whole HTTP response.
sub mysql_req {
    my ($n, $statements, %o) = @_;
    my $timeout = delete $o{timeout} // 15;
    return http(POST => $n->url('/_test/backend'), timeout => $timeout,
                json => {mysql => {transaction => JSON::PP::false(),
                                   read_only => JSON::PP::false(), %o,
                                   statements => $statements}});
}

# One statement that must succeed; its result (undef + diagnostic if not).
sub q1 {
    my ($sql, @params) = @_;
    my $r = mysql_req($ngx, [{sql => $sql, params => \@params}]);
    if ($r->{status} != 200 || !$r->{json} || !$r->{json}{ok}) {
        diag("$sql: $r->{status} $r->{body}");
        return undef;
    }
    return $r->{json}{results}[0];
}

sub rows { my $res = q1(@_); return $res ? $res->{rows} : undef }

sub bytes { my $s = $_[0]; utf8::encode($s); return $s }

sub status_var {
    my ($name) = @_;
    return ($db->sql("SHOW GLOBAL STATUS LIKE '$name'") =~ /\t(\d+)/)[0];
}

sub user_conns {
    my ($user) = @_;
    return 0 + $db->sql("SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                        . "WHERE USER = '$user'");
}

$db->sql(<<'SQL');
CREATE TABLE rt (
    id   BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    txt  MEDIUMTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    n    BIGINT NULL,
    tag  VARCHAR(64) NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE TABLE acct (
    id   INT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    name VARCHAR(32) NOT NULL,
    bal  BIGINT NOT NULL,
    UNIQUE KEY uq_name (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
INSERT INTO acct (name, bal) VALUES ('alice', 100);
SQL

# ---- values round-trip exactly -------------------------------------------------

{
    my $res = q1('SELECT 1 AS one, NULL AS nothing, \'x\' AS ex');
    is_deeply($res && [$res->{fields}, $res->{rows}],
              [['one', 'nothing', 'ex'], [['1', undef, 'x']]],
              'SELECT: field names, values as strings, NULL as null');
}

my @texts = (
    bytes("caf\x{e9} \x{4E2D}\x{6587} \x{1F4B3}\x{1F600}"),
    "it's",
    q{'; DROP TABLE rt; --},
    q{x'); DELETE FROM acct; --},
    q{back\\slash \\' \\\\ trailing\\},
    q{double "quoted" `backtick`},
    q{percent % under_score},
    q{question ? mark ?},
    "line\nfeed\r\ncrlf\ttab \x1a ctrl-z",
    '',
);

{
    my %ids;
    my $ok = 0;
    for my $i (0 .. $#texts) {
        my $res = q1('INSERT INTO rt (txt, n, tag) VALUES (?, ?, ?)',
                     $texts[$i], $i, "text$i");
        $ok++ if $res && $res->{affected} == 1 && $res->{insert_id} > 0
                 && !$ids{$res->{insert_id}}++;
    }
    is($ok, scalar @texts,
       'INSERTs: affected 1 and a fresh insert_id each');

    my $rows = rows('SELECT txt, n FROM rt WHERE tag LIKE ? ORDER BY n',
                    'text%');
    is_deeply($rows, [map { [$texts[$_], "$_"] } 0 .. $#texts],
              'text with UTF-8, emoji, quotes, backslashes, injection, '
              . 'control characters: read back identical');

    # what MariaDB stored, seen by another client: the module did not
    # double-encode or mangle what it sent
    my $hex = $db->sql('SELECT HEX(txt) FROM rt WHERE tag = \'text0\'');
    is($hex, uc(unpack('H*', $texts[0])) . "\n",
       'UTF-8 stored as the same bytes (no double encoding)');
    is($db->sql("SELECT CHAR_LENGTH(txt), LENGTH(txt) FROM rt "
                . "WHERE tag = 'text0'"),
       "10\t21\n", '... 10 characters in 21 bytes: an emoji is one '
                   . 'character (utf8mb4)');
    is($db->sql('SELECT COUNT(*) FROM acct'), "1\n",
       'the injection-looking strings did nothing');

    $rows = rows('SELECT COUNT(*) FROM rt WHERE txt = ?', $texts[2]);
    is_deeply($rows, [['1']], 'injection string as a WHERE parameter matches '
                              . 'itself only');
}

{
    my @big = ('-9223372036854775808', '9223372036854775807');
    my $res = q1('INSERT INTO rt (n, tag) VALUES (?, ?), (?, ?)',
                 -9223372036854775807 - 1, 'min', 9223372036854775807, 'max');
    is($res && $res->{affected}, 2, 'BIGINT min and max as JSON integers');
    is($db->sql("SELECT n FROM rt WHERE tag IN ('min', 'max') ORDER BY n"),
       join('', map { "$_\n" } @big), '... stored exactly');
    is_deeply(rows("SELECT n FROM rt WHERE tag IN ('min', 'max') ORDER BY n"),
              [[$big[0]], [$big[1]]], '... read back exactly');
    is_deeply(rows('SELECT CAST(? AS SIGNED), CAST(? AS SIGNED)', @big),
              [[@big]],
              'BIGINT min and max as string parameters');
    is_deeply(rows('SELECT CAST(? AS SIGNED)', 0), [['0']], 'integer zero');
}

{
    my $res = q1('INSERT INTO rt (txt, n, tag) VALUES (?, ?, ?)',
                 undef, undef, 'nulls');
    is($res && $res->{affected}, 1, 'INSERT of NULL parameters');
    is($db->sql("SELECT txt IS NULL, n IS NULL FROM rt WHERE tag = 'nulls'"),
       "1\t1\n", '... stored as SQL NULL, not the string NULL');
    is_deeply(rows("SELECT txt, n, tag FROM rt WHERE tag = 'nulls'"),
              [[undef, undef, 'nulls']], '... read back as JSON null');
}

{
    is_deeply(rows("SELECT 'what?' AS q, ? AS p", 'x'), [['what?', 'x']],
              'a ? inside a quoted SQL literal is not a placeholder');
    my $r = mysql_req($ngx, [{sql => 'SELECT ?, ?', params => ['only one']}]);
    ok($r->{status} == 400 || ($r->{json} && !$r->{json}{ok}),
       'fewer params than placeholders: refused')
        or diag("$r->{status} $r->{body}");
    $r = mysql_req($ngx, [{sql => 'SELECT 1; SELECT 2', params => []}]);
    ok($r->{status} == 400 || ($r->{json} && !$r->{json}{ok}),
       'two statements in one sql string are refused (no multi-statements)')
        or diag("$r->{status} $r->{body}");
}

{
    # sql_mode can change how quotes are escaped; the escaping must follow
    # the connection's mode
    my $tricky = q{a\'b\\'' OR 1=1 -- };
    my $r = mysql_req($ngx, [
        {sql => "SET SESSION sql_mode = "
                . "CONCAT(@\@sql_mode, ',NO_BACKSLASH_ESCAPES')", params => []},
        {sql => 'SELECT ?', params => [$tricky]},
    ]);
    is_deeply($r->{json} && $r->{json}{results}[1]{rows}, [[$tricky]],
              'NO_BACKSLASH_ESCAPES: quotes and backslashes still exact')
        or diag($r->{body});
}

{
    my $long = join '', map { bytes("\x{1F4B3}") . sprintf('%06d', $_) }
                        1 .. 20000;                  # 200,000 bytes
    my $res = q1('INSERT INTO rt (txt, tag) VALUES (?, ?)', $long, 'long');
    is($res && $res->{affected}, 1, '200 kB parameter inserted');
    is_deeply(rows("SELECT txt FROM rt WHERE tag = 'long'"), [[$long]],
              '... and read back identical');

    my $rows = rows('SELECT seq, CONCAT(\'row-\', seq) FROM seq_1_to_20000');
    is(scalar @{$rows || []}, 20000, 'a 20,000-row result set arrives whole');
    is_deeply($rows && [$rows->[0], $rows->[-1]],
              [['1', 'row-1'], ['20000', 'row-20000']], '... first and last');
    $res = q1('SELECT * FROM rt WHERE 1 = 0');
    is_deeply($res && [$res->{fields}, $res->{rows}],
              [['id', 'txt', 'n', 'tag'], []],
              'empty result: field names and no rows');
}

{
    my $r = mysql_req($ngx, [{sql => 'SELECT * FROM no_such_table',
                              params => []}]);
    is($r->{status}, 200, 'SQL error: still 200');
    is($r->{json} && $r->{json}{ok}, JSON::PP::false(), '... ok false');
    is($r->{json} && $r->{json}{errno}, 1146, '... errno 1146');
    like($r->{json} && $r->{json}{error}, qr/no_such_table/,
         '... with MariaDB\'s message');
    is_deeply(rows('SELECT 2'), [['2']], 'next request works');
}

# ---- transactions ------------------------------------------------------------

{
    my $r = mysql_req($ngx, [
        {sql => 'INSERT INTO acct (name, bal) VALUES (?, ?)',
         params => ['bob', 5]},
        {sql => 'INSERT INTO acct (name, bal) VALUES (?, ?)',
         params => ['alice', 7]},
    ], transaction => JSON::PP::true());
    is($r->{status}, 200, 'transaction with a duplicate key: 200');
    is_deeply($r->{json} && [@{$r->{json}}{qw(ok errno failed conflict)}],
              [JSON::PP::false(), 1062, 1, JSON::PP::false()],
              '... ok false, errno 1062, failed at statement 1');
    is($db->sql('SELECT name FROM acct ORDER BY id'), "alice\n",
       '... the first INSERT was rolled back');

    $r = mysql_req($ngx, [
        {sql => 'INSERT INTO acct (name, bal) VALUES (?, ?)',
         params => ['carol', 5]},
        {sql => 'INSERT INTO acct (name, bal) VALUES (?, ?)',
         params => ['alice', 7]},
    ]);
    is_deeply($r->{json} && [@{$r->{json}}{qw(ok errno failed)}],
              [JSON::PP::false(), 1062, 1],
              'same without transaction: fails at statement 1');
    is($db->sql('SELECT name FROM acct ORDER BY id'), "alice\ncarol\n",
       '... and the first INSERT stays (autocommit)');

    $r = mysql_req($ngx, [
        {sql => 'UPDATE acct SET bal = bal - 10 WHERE name = ?',
         params => ['alice'], expect_affected => 1},
        {sql => 'UPDATE acct SET bal = bal + 10 WHERE name = ?',
         params => ['nobody'], expect_affected => 1},
    ], transaction => JSON::PP::true());
    is_deeply($r->{json} && [@{$r->{json}}{qw(ok conflict failed)}],
              [JSON::PP::false(), JSON::PP::true(), 1],
              'expect_affected not met: ok false, conflict true, failed 1');
    is($db->sql("SELECT bal FROM acct WHERE name = 'alice'"), "100\n",
       '... the first UPDATE was rolled back');

    $r = mysql_req($ngx, [
        {sql => 'UPDATE acct SET bal = bal - 10 WHERE name = ?',
         params => ['alice'], expect_affected => 1},
        {sql => 'UPDATE acct SET bal = bal + 10 WHERE name = ?',
         params => ['carol'], expect_affected => 1},
        {sql => 'SELECT SUM(bal) FROM acct', params => []},
    ], transaction => JSON::PP::true());
    is_deeply($r->{json} && [$r->{json}{ok}, $r->{json}{results}[2]{rows}],
              [JSON::PP::true(), [['105']]],
              'transaction that meets expect_affected commits');
    is($db->sql('SELECT bal FROM acct ORDER BY id'), "90\n15\n",
       '... both UPDATEs visible to another client');

    # the statements of a transaction go as one batch; a write that
    # matches its row without changing it still counts (found rows)
    $r = mysql_req($ngx, [
        {sql => 'UPDATE acct SET bal = ? WHERE name = ?',
         params => [90, 'alice'], expect_affected => 1},
        {sql => 'UPDATE acct SET bal = bal + 1 WHERE name = ?',
         params => ['carol'], expect_affected => 1},
    ], transaction => JSON::PP::true());
    is_deeply($r->{json} && [@{$r->{json}}{qw(ok conflict)}],
              [JSON::PP::true(), JSON::PP::false()],
              'an UPDATE that finds its row but changes nothing meets '
              . 'expect_affected');
    is($db->sql('SELECT bal FROM acct ORDER BY id'), "90\n16\n",
       '... and what follows it is committed');

    # a conflict in the middle stops the rest: nothing after it runs
    $r = mysql_req($ngx, [
        {sql => 'UPDATE acct SET bal = bal + 1 WHERE name = ?',
         params => ['alice'], expect_affected => 1},
        {sql => 'UPDATE acct SET bal = bal + 1 WHERE name = ?',
         params => ['nobody'], expect_affected => 1},
        {sql => 'UPDATE acct SET bal = bal + 1 WHERE name = ?',
         params => ['carol'], expect_affected => 1},
    ]);
    is_deeply($r->{json} && [@{$r->{json}}{qw(ok conflict failed)}],
              [JSON::PP::false(), JSON::PP::true(), 1],
              'without a transaction, a lost write stops the statements '
              . 'after it');
    is($db->sql('SELECT bal FROM acct ORDER BY id'), "91\n16\n",
       '... the one before it stays, the one after it never ran');

    $r = mysql_req($ngx, [{sql => 'SELECT COUNT(*) FROM acct', params => []}],
                   transaction => JSON::PP::true(),
                   read_only => JSON::PP::true());
    is_deeply($r->{json} && $r->{json}{results}[0]{rows}, [['2']],
              'read_only transaction reads');

    # A connection that just rolled back goes back to the pool clean:
    # autocommit statements after it are visible to others at once.
    my $seen = 0;
    for my $i (1 .. 8) {
        q1('INSERT INTO rt (tag) VALUES (?)', "after-rollback-$i");
        $seen++ if $db->sql('SELECT COUNT(*) FROM rt WHERE tag = '
                            . "'after-rollback-$i'") eq "1\n";
    }
    is($seen, 8, 'after failed transactions every INSERT is committed '
                 . '(no transaction left open on a pooled connection)');
}

# ---- pool reuse ---------------------------------------------------------------

{
    my $before = status_var('Connections');
    my $ok = 0;
    for my $i (1 .. 300) {
        my $rows = rows('SELECT ?', "r$i");
        $ok++ if $rows && $rows->[0][0] eq "r$i";
    }
    is($ok, 300, '300 sequential requests, each got its own result');
    my $threads = status_var('Threads_connected');
    cmp_ok($threads, '<=', 4 + 2,
           "Threads_connected $threads <= max_conns 4 + harness");
    my $new = status_var('Connections') - $before - 2;    # our 2 mariadb runs
    cmp_ok($new, '<=', 4, "only $new new connections for 300 requests");
}

# ---- nothing blocks the worker --------------------------------------------------

# Runs a request in a child; returns a sub that waits for it and gives
# back the response.
sub in_background {
    my ($code) = @_;
    my $file = PayGW::Test::_mkdir('bg') . '/result';
    my $pid = fork // die "fork: $!\n";
    if (!$pid) {
        my $res = eval { $code->() } // {status => 599, body => $@};
        Storable::nstore($res, $file);
        POSIX::_exit(0);
    }
    return sub {
        local $?;
        waitpid $pid, 0;
        return -e $file ? Storable::retrieve($file) : {status => 599};
    };
}

{
    my $wait = in_background(sub {
        mysql_req($ngx, [{sql => 'SELECT SLEEP(3) AS s', params => []}]);
    });
    ok(wait_until(sub {
        $db->sql("SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                 . "WHERE INFO LIKE 'SELECT SLEEP(3)%'") > 0
    }, timeout => 5), 'SELECT SLEEP(3) is running (one worker)');

    my $h = http(GET => $ngx->url('/healthz'));
    ok($h->{status} == 200 && $h->{elapsed} < 0.5,
       sprintf('meanwhile /healthz answers (%d in %.3fs)', $h->{status},
               $h->{elapsed}));
    my $r = http(POST => $ngx->url('/_test/backend'),
                 json => {redis => [['PING']]});
    ok($r->{status} == 200 && $r->{elapsed} < 0.5,
       sprintf('... a Redis request too (%d in %.3fs)', $r->{status},
               $r->{elapsed}));
    $r = mysql_req($ngx, [{sql => 'SELECT ?', params => ['quick']}]);
    ok($r->{status} == 200 && $r->{elapsed} < 0.5
       && $r->{json} && $r->{json}{results}[0]{rows}[0][0] eq 'quick',
       sprintf('... and another MySQL query on another pooled connection '
               . '(%d in %.3fs)', $r->{status}, $r->{elapsed}));

    my $slow = $wait->();
    is_deeply($slow->{json} && $slow->{json}{results}[0]{rows}, [['0']],
              'the SLEEP(3) request completes normally');
    cmp_ok($slow->{elapsed} // 0, '>', 2.5, '... after about 3 s');
}

# ---- concurrency: no cross-talk between requests --------------------------------

{
    my @res = http_parallel([map {
        [POST => $ngx->url('/_test/backend'), timeout => 15,
         json => {mysql => {statements => [
             {sql => 'SELECT ?, SLEEP(0.05)', params => ["req-$_"]},
             {sql => 'SELECT CONCAT(?, \'-2nd\')', params => ["req-$_"]}]}}]
    } 1 .. 24]);
    my $good = grep {
        my $j = $res[$_ - 1]{json};
        $j && $j->{ok} && $j->{results}[0]{rows}[0][0] eq "req-$_"
           && $j->{results}[1]{rows}[0][0] eq "req-$_-2nd"
    } 1 .. 24;
    is($good, 24, '24 parallel requests over 4 connections: each got its '
                  . 'own results');
}

# ---- the client gives up while its query runs ----------------------------------------

{
    # fast pool: max_conns=1, so the next request needs that very slot
    my $r = mysql_req($fast, [{sql => 'SELECT SLEEP(0.7)', params => []}],
                      timeout => 0.2);
    is($r->{status}, 599, 'client gave up after 0.2 s');
    my $good = 0;
    for my $i (1 .. 3) {
        my $q = mysql_req($fast, [{sql => 'SELECT ?', params => ["own$i"]}]);
        $good++ if $q->{json} && $q->{json}{ok}
                   && $q->{json}{results}[0]{rows}[0][0] eq "own$i";
    }
    is($good, 3, '... the next requests (same single connection slot) get '
                 . 'their own results');
}

# ---- query_timeout --------------------------------------------------------------

# max_conns=1: after a timeout the only slot must be free and its next
# connection healthy, or everything below would hang or misread.
{
    my $r = mysql_req($fast, [{sql => 'SELECT SLEEP(5)', params => []}]);
    is($r->{status}, 504, 'query_timeout=1s: SELECT SLEEP(5) gets 504');
    is($r->{json} && $r->{json}{error}{code}, 'backend_timeout',
       '... code backend_timeout');
    ok($r->{elapsed} > 0.8 && $r->{elapsed} < 3,
       sprintf('... after about 1 s (%.2fs)', $r->{elapsed}));

    my $good = 0;
    for my $i (1 .. 5) {
        my $q = mysql_req($fast, [{sql => 'SELECT ?', params => ["after$i"]}]);
        $good++ if $q->{status} == 200 && $q->{json}{ok}
                   && $q->{json}{results}[0]{rows}[0][0] eq "after$i";
        diag("after timeout: $q->{status} $q->{body}") if $q->{status} != 200;
    }
    is($good, 5, 'the next 5 queries (max_conns=1) each get their own result');
}

{
    # README: query_timeout bounds the whole call, waiting in line included
    my @res = http_parallel([map {
        [POST => $fast->url('/_test/backend'), timeout => 10,
         json => {mysql => {statements => [{sql => 'SELECT SLEEP(0.7), ?',
                                            params => ["q$_"]}]}}]
    } 1 .. 3]);
    my @ok = grep { $_->{status} == 200 } @res;
    my @late = grep { $_->{status} == 504 } @res;
    is_deeply([scalar @ok, scalar @late], [1, 2],
              'max_conns=1, 3 parallel SLEEP(0.7), query_timeout=1s: '
              . 'one answer, two 504')
        or diag(join "\n", map { "$_->{status} $_->{body}" } @res);
    ok(!(grep { $_->{elapsed} > 1.6 } @late),
       sprintf('... the 504s come after about 1 s of waiting in line '
               . '(%s)', join ', ', map { sprintf '%.2fs', $_->{elapsed} }
                                   @late));
}

# ---- pool exhaustion: queued, not failed ------------------------------------------

{
    my $file = PayGW::Test::_mkdir('sampler') . '/max';
    my $sampler = fork // die "fork: $!\n";
    if (!$sampler) {
        my $m = 0;
        my $deadline = time + 20;
        while (time < $deadline && !-e "$file.stop") {
            my $n = eval { user_conns('paygw2') } // 0;
            $m = $n if $n > $m;
            PayGW::Test::_spew($file, $m);
            sleep 0.05;
        }
        POSIX::_exit(0);
    }
    my $t0 = time;
    my @res = http_parallel([map {
        [POST => $small->url('/_test/backend'), timeout => 15,
         json => {mysql => {transaction => JSON::PP::false(),
                            statements => [{sql => 'SELECT SLEEP(1), ?',
                                            params => ["p$_"]}]}}]
    } 1 .. 6]);
    my $took = time - $t0;
    PayGW::Test::_spew("$file.stop", '');
    { local $?; waitpid $sampler, 0; }
    my $max = PayGW::Test::_slurp($file);

    my @good = grep {
        $res[$_]{status} == 200 && $res[$_]{json}{ok}
        && $res[$_]{json}{results}[0]{rows}[0][1] eq 'p' . ($_ + 1)
    } 0 .. 5;
    is(scalar @good, 6, 'max_conns=2, 6 parallel SLEEP(1): all 6 succeed')
        or diag(join "\n", map { "$_->{status} $_->{body}" } @res);
    cmp_ok($max, '<=', 2, "... never more than 2 connections open ($max)");
    cmp_ok($max, '>=', 1, '... (the sampler saw them)');
    ok($took > 2.5 && $took < 8,
       sprintf('... queued: three rounds of 1 s (%.1fs)', $took));
    is(user_conns('paygw2'), 2, '... and both stay pooled (idle_timeout 60s)');

    # a reload must not hang on pooled connections, and must close them
    my @old = $ngx->worker_pids;
    $ngx->reload;
    ok(wait_until(sub { !grep { kill 0, $_ } @old }, timeout => 5),
       'nginx reload: the old worker exits promptly');
    ok(wait_until(sub { user_conns('paygw2') == 0 }, timeout => 5),
       '... and its pooled connections are closed');
    is_deeply(mysql_req($small, [{sql => 'SELECT 3', params => []}])
                  ->{json}{results}[0]{rows}, [['3']],
              '... the new worker connects afresh');

    # a reload while queries run and others wait for a connection: the old
    # worker finishes all of them (graceful), then goes
    @old = $ngx->worker_pids;
    my $master = $ngx->master_pid;
    my $hup = fork // die "fork: $!\n";
    if (!$hup) {
        # HUP once two queries run (max_conns=2): the other two wait in line
        wait_until(sub {
            $db->sql("SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                     . "WHERE USER = 'paygw2' AND INFO LIKE 'SELECT SLEEP(1)%'") >= 2
        }, timeout => 5);
        kill 'HUP', $master;
        POSIX::_exit(0);
    }
    @res = http_parallel([map {
        [POST => $small->url('/_test/backend'), timeout => 15,
         json => {mysql => {statements => [{sql => 'SELECT SLEEP(1), ?',
                                            params => ["g$_"]}]}}]
    } 1 .. 4]);
    { local $?; waitpid $hup, 0; }
    @good = grep {
        $res[$_]{status} == 200 && $res[$_]{json}{ok}
        && $res[$_]{json}{results}[0]{rows}[0][1] eq 'g' . ($_ + 1)
    } 0 .. 3;
    is(scalar @good, 4, 'reload during 2 running and 2 queued queries: '
                        . 'all 4 succeed')
        or diag(join "\n", map { "$_->{status} $_->{body}" } @res);
    ok(wait_until(sub { !grep { kill 0, $_ } @old }, timeout => 5),
       '... and the old worker exits afterwards');
    ok(wait_until(sub { user_conns('paygw2') == 0 }, timeout => 5),
       '... closing its connections');
}

# ---- MariaDB hangs -------------------------------------------------------------------

{
    is_deeply(mysql_req($fast, [{sql => 'SELECT 1', params => []}])
                  ->{json}{results}[0]{rows}, [['1']], 'pool warm');
    $db->freeze;
    my $r = mysql_req($fast, [{sql => 'SELECT 1', params => []}]);
    is($r->{status}, 504, 'MariaDB frozen: 504 (pooled connection)');
    ok($r->{elapsed} > 0.8 && $r->{elapsed} < 3,
       sprintf('... after query_timeout 1 s (%.2fs)', $r->{elapsed}));
    $r = mysql_req($fast, [{sql => 'SELECT 1', params => []}]);
    is($r->{status}, 504, 'MariaDB frozen: 504 (new connection)');
    is($r->{json} && $r->{json}{error}{code}, 'backend_timeout',
       '... code backend_timeout');
    ok($r->{elapsed} > 0.8 && $r->{elapsed} < 3,
       sprintf('... after connect_timeout 1 s (%.2fs)', $r->{elapsed}));

    # Closing a connection must not wait on the frozen server.  A 12 MB
    # statement fills the socket's buffers (the server reads nothing), so
    # a COM_QUIT written by a blocking mysql_close() would wait for room
    # for ever, and the worker with it: no answer, not even to /healthz.
    # (The module shuts the socket down before mysql_close(); Connector/C
    # 3.3 did not wait here even without that, so this guards the
    # behaviour rather than having caught a stall.)
    $db->thaw;
    is_deeply(mysql_req($fast, [{sql => 'SELECT 1', params => []}])
                  ->{json}{results}[0]{rows}, [['1']], 'pool warm again');
    $db->freeze;
    $r = mysql_req($fast, [{sql => 'SELECT LENGTH(?)',
                            params => ['x' x (12 << 20)]}], timeout => 15);
    is($r->{status}, 504, 'frozen: a 12 MB statement times out (504), its '
                          . 'connection closed without waiting');
    is(http(GET => $fast->url('/healthz'), timeout => 5)->{status}, 200,
       '... and the worker goes on (/healthz)');
    $db->thaw;
    $r = mysql_req($fast, [{sql => 'SELECT ?', params => ['thawed']}]);
    is_deeply($r->{json} && $r->{json}{results}[0]{rows}, [['thawed']],
              'thawed: the first request succeeds');
}

# ---- idle_timeout ------------------------------------------------------------------

{
    mysql_req($fast, [{sql => 'SELECT 1', params => []}]);
    is(user_conns('paygw3'), 1, 'fast pool: one pooled connection');
    ok(wait_until(sub { user_conns('paygw3') == 0 }, timeout => 4),
       '... closed by nginx after idle_timeout=1s');
    my $r = mysql_req($fast, [{sql => 'SELECT ?', params => ['fresh']}]);
    is_deeply($r->{json} && $r->{json}{results}[0]{rows}, [['fresh']],
              '... and the next request opens a new one');
}

# ---- MariaDB dies and comes back -------------------------------------------------------

{
    # four pooled connections, idle
    my @warm = http_parallel([map {
        [POST => $ngx->url('/_test/backend'),
         json => {mysql => {statements => [{sql => 'SELECT SLEEP(0.3)',
                                            params => []}]}}]
    } 1 .. 4]);
    is(scalar(grep { $_->{status} == 200 } @warm), 4, 'pool warm');

    $db->kill;
    for my $n (1, 2) {
        my $r = mysql_req($ngx, [{sql => 'SELECT 1', params => []}]);
        is($r->{status}, 503, "MariaDB killed: request $n gets 503");
        is($r->{json} && $r->{json}{error}{code}, 'backend_unavailable',
           '... code backend_unavailable');
        cmp_ok($r->{elapsed}, '<', 2, '... promptly');
    }
    $db->start_again;
    my $r = mysql_req($ngx, [{sql => 'SELECT COUNT(*) FROM acct',
                              params => []}]);
    my ($count) = $db->sql('SELECT COUNT(*) FROM acct') =~ /(\d+)/;
    is_deeply($r->{json} && $r->{json}{results}[0]{rows}, [[$count]],
              'MariaDB restarted: the first request succeeds')
        or diag("$r->{status} $r->{body}");

    # killed and restarted while nginx was idle: the pool must not hand out
    # connections to the dead server
    @warm = http_parallel([map {
        [POST => $ngx->url('/_test/backend'),
         json => {mysql => {statements => [{sql => 'SELECT SLEEP(0.3)',
                                            params => []}]}}]
    } 1 .. 4]);
    is(scalar(grep { $_->{status} == 200 } @warm), 4, 'pool warm again');
    $db->stop;
    $db->start_again;
    my $good = 0;
    for my $i (1 .. 6) {
        my $q = mysql_req($ngx, [{sql => 'SELECT ?', params => ["x$i"]}]);
        $good++ if $q->{status} == 200 && $q->{json}{ok};
        diag("after restart: $q->{status} $q->{body}") if $q->{status} != 200;
    }
    is($good, 6, 'restarted while idle: every request succeeds, '
                 . 'no stale pooled connection is used');
    my $emoji = bytes("\x{1F4B3} caf\x{e9}");
    is_deeply(rows('SELECT ?, HEX(?)', $emoji, $emoji),
              [[$emoji, uc unpack('H*', $emoji)]],
              '... and new connections speak utf8mb4 too');
}

# [alert] is where nginx reports crashed workers; the one expected alert
# is for the deliberately mismatched placeholders above.
{
    my @bad = grep { !/does not match its parameters/ }
              $ngx->error_log =~ /^.*(?:\[(?:alert|emerg)\]|exited on signal).*$/mg;
    is(join("\n", @bad), '', 'no crash, alert or emerg in the error log');
}

done_testing;
