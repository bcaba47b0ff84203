#!/usr/bin/perl
# The test harness itself: real Redis, MariaDB, simulator and nginx processes
# start, answer, die, come back, and are torn down.
use strict;
use warnings;

use Digest::SHA qw(hmac_sha256_hex sha256_hex);
use Test::More;
use Time::HiRes qw(time);

use PayGW::Test qw(free_port http http_parallel http_raw sign_request
                   signed_http wait_until repo_root);

# ---- helpers that need no process -------------------------------------------

{
    my %seen;
    my @p = map { free_port() } 1 .. 20;
    ok(!(grep { $_ < 1024 || $_ > 65535 || $seen{$_}++ } @p),
       'free_port: 20 distinct unprivileged ports');
}

{
    my $body = '{"amount":1}';
    my $h = sign_request('demo', 'demo-secret', 'POST', '/v1/payments?x=1', $body,
                         ts => 1700000000, nonce => 'nonce_0123456789abcdef');
    my $sts = "POST\n/v1/payments?x=1\n1700000000\nnonce_0123456789abcdef\n"
            . sha256_hex($body);
    is($h, 'PAYGW-HMAC-SHA256 key=demo,ts=1700000000,nonce=nonce_0123456789abcdef,'
           . 'sig=' . hmac_sha256_hex($sts, 'demo-secret'),
       'sign_request follows SPEC §2');
    like(sign_request('k', 's', 'GET', '/', undef),
         qr/^PAYGW-HMAC-SHA256 key=k,ts=\d+,nonce=[A-Za-z0-9]{32},sig=[0-9a-f]{64}$/,
         'sign_request: default ts and nonce');
}

is(http(GET => 'http://127.0.0.1:' . free_port() . '/', timeout => 2)->{status},
   599, 'http: connection refused is status 599');

# ---- Redis ------------------------------------------------------------------

{
    my $redis = PayGW::Test::Redis->start;
    is($redis->cli('PING'), 'PONG', 'redis answers');
    $redis->cli(qw(SET k v));
    is($redis->cli(qw(GET k)), 'v', 'redis SET/GET');
    like($redis->cli(qw(CONFIG GET save)), qr/^save\n$/, 'redis: no snapshots');

    $redis->freeze;
    my $t0 = time;
    my $out = eval { $redis->cli('-t', 1, 'PING') } // '';
    isnt($out, 'PONG', 'frozen redis does not answer');
    $redis->thaw;
    is($redis->cli('PING'), 'PONG', 'thawed redis answers');

    my $pid = $redis->pid;
    $redis->kill;
    ok(!kill(0, $pid), 'redis killed');
    ok(!PayGW::Test::_port_open($redis->port), "redis port closed");
    $redis->start_again;
    is($redis->cli('PING'), 'PONG', 'redis back on the same port');
    is($redis->cli(qw(GET k)), '', 'after SIGKILL the data is gone');
    $redis->stop;
    ok(!$redis->pid, 'redis stopped');
}

# ---- MariaDB ------------------------------------------------------------------

{
    my $t0 = time;
    my $db = PayGW::Test::MySQL->start;
    note(sprintf 'mysql start: %.2fs', time - $t0);
    is($db->sql('SELECT 1'), "1\n", 'mysql answers');
    is($db->sql('SELECT DATABASE(), @@character_set_server, @@collation_server'),
       "paygw\tutf8mb4\tutf8mb4_unicode_ci\n", 'database paygw, utf8mb4');

    my $pw = $db->password;
    like($pw, qr/^\S{16,}$/, 'password file holds the password');
    is((stat $db->password_file)[2] & 07777, 0600, 'password file mode 600');
    my ($rc, $out, $err) = PayGW::Test::_run(
        ['mariadb', '--no-defaults', '-h', '127.0.0.1', '-P', $db->port,
         '-u', 'paygw', '--batch', '--skip-column-names', 'paygw',
         '-e', 'SELECT CURRENT_USER()'], env => {MYSQL_PWD => $pw});
    is("$rc $out", "0 paygw\@127.0.0.1\n", 'user paygw logs in over TCP')
        or diag($err);

    my @sql = glob(repo_root() . '/sql/*.sql');
    SKIP: {
        skip 'no sql/*.sql yet', 1 unless @sql;
        ok(length $db->sql('SHOW TABLES'), 'schema applied: ' . @sql . ' file(s)');
    }

    eval { $db->sql('SELECT * FROM no_such_table') };
    like($@, qr/no_such_table/, 'sql dies on error');

    $db->sql('CREATE TABLE harness_probe (v INT) ENGINE=InnoDB;'
             . 'INSERT INTO harness_probe VALUES (42)');
    $db->freeze;
    $db->thaw;
    is($db->sql('SELECT v FROM harness_probe'), "42\n", 'frozen and thawed');
    $db->kill;
    ok(!PayGW::Test::_port_open($db->port), 'mysql killed');
    $t0 = time;
    $db->start_again;
    note(sprintf 'mysql crash recovery: %.2fs', time - $t0);
    is($db->sql('SELECT v FROM harness_probe'), "42\n",
       'committed data survives SIGKILL');
    $db->stop;
    ok(!$db->pid, 'mysql stopped');

    my $db2 = PayGW::Test::MySQL->start;
    is($db2->sql("SHOW TABLES LIKE 'harness_probe'"), '',
       'each start gets a fresh copy of the template');
}

# ---- simulator ------------------------------------------------------------------

my $sim = PayGW::Test::Sim->start;
{
    # The acquirer API itself is covered by t/05-sim-acquirer.t.
    my $r = http(GET => $sim->url('/health'));
    is($r->{status}, 200, 'sim /health');
    is_deeply($r->{json}, {status => 'ok'}, 'sim /health body');

    my $body = {out_trade_no => 'P1', amount => 1999, currency => 'CNY',
                card => {number => '4242424242424242', exp_month => 12,
                         exp_year => 2099, cvc => '123'}};
    my $charge = sub { $sim->acquirer(POST => '/acquirer/v1/charges', json => $body) };
    $r = $charge->();
    is("$r->{status} $r->{json}{status} $r->{json}{amount}", '200 approved 1999',
       'acquirer charge');
    my $ts = $r->{headers}{'x-acquirer-timestamp'} // '';
    is($r->{headers}{'x-acquirer-signature'},
       hmac_sha256_hex("$ts\n$r->{body}", 'acq-demo-secret'), 'response signed');
    ok($r->{sig_ok}, 'acquirer() verifies the response signature');
    is($sim->acquirer(POST => '/acquirer/v1/charges', json => $body,
                      signature => '00')->{status}, 401, 'bad request signature: 401');

    $sim->mode('error500', times => 1);
    is($charge->()->{status}, 500, 'mode error500');
    is($charge->()->{status}, 200, '... for one request only');
    $sim->mode('reset');
    is($charge->()->{status}, 599, 'mode reset: no answer');
    $sim->mode('slow', delay_ms => 3000);
    is($sim->acquirer(POST => '/acquirer/v1/charges', json => $body,
                      timeout => 1)->{status}, 599, 'mode slow: client times out');
    is($sim->charges->{charges}[0]{requests}, 5, 'sim counts charge requests');

    ok($sim->reset, 'sim reset');
    is_deeply($sim->charges, {charges => [], refunds => []}, 'reset forgets charges');
    $charge->();
    my $reqs = $sim->requests;
    is(scalar @$reqs, 1, 'sim records provider requests');
    like($reqs->[0]{body}, qr/"number":"424242\*{6}4242"/, 'recorded body, PAN masked');
    unlike($sim->log_text, qr/4242424242424242/, 'no PAN in the sim log');
}

# ---- nginx ------------------------------------------------------------------

my $module = $ENV{PAYGW_MODULE}
    // repo_root() . '/build/objs/ngx_http_paygw_module.so';
my $no_module = !-f $module;
note($no_module ? 'module not built: nginx without load_module' : "module $module");

{
    my $sim_port = $sim->port;
    my $ngx = PayGW::Test::Nginx->new(no_module => $no_module, workers => 2,
                                      http => <<"EOF");
    server {
        listen 127.0.0.1:%%PORT%%;
        location / { return 200 "ok"; }
        location /dir { return 200 "%%TESTDIR%%"; }
        location /sim/ { proxy_pass http://127.0.0.1:$sim_port/; }
    }
EOF
    $ngx->start;
    my $r = http(GET => $ngx->url('/'));
    is("$r->{status} $r->{body}", '200 ok', 'nginx answers');
    is(http(GET => $ngx->url('/dir'))->{body}, $ngx->dir, '%%TESTDIR%%');
    is(http(GET => $ngx->url('/sim/health'))->{status}, 200,
       'nginx proxies to the simulator');
    # nginx logs a request after answering it
    ok(wait_until(sub { $ngx->access_log =~ m{"GET /sim/health HTTP/1.1" 200} },
                  timeout => 5), 'access log');
    like(http_raw($ngx->port, "GET / HTTP/1.0\r\n\r\n"), qr{^HTTP/1.1 200 .*ok$}s,
         'http_raw');

    my @res = http_parallel([map { [GET => $ngx->url('/')] } 1 .. 8]);
    is(scalar(grep { $_->{status} == 200 && $_->{body} eq 'ok' } @res), 8,
       'http_parallel: 8 concurrent requests');

    my @old = sort $ngx->worker_pids;
    is(scalar @old, 2, 'two workers');
    $ngx->reload(http => <<'EOF');
    server { listen 127.0.0.1:%%PORT%%; location / { return 200 "reloaded"; } }
EOF
    my %old = map { $_ => 1 } @old;
    my @new = $ngx->worker_pids;
    ok(@new == 2 && !grep({ $old{$_} } @new), 'reload: new workers');
    is(http(GET => $ngx->url('/'))->{body}, 'reloaded', 'reload: new config');

    eval { $ngx->reload(http => 'server { no_such_directive; }') };
    like($@, qr/unknown directive "no_such_directive"/, 'bad reload dies');
    is(http(GET => $ngx->url('/'))->{body}, 'reloaded', '... old config serves');

    my ($code, $out) = $ngx->test_config(http => 'server { listen x:y:z; }');
    isnt($code, 0, 'test_config: bad config fails');
    like($out, qr/nginx\.conf:\d+/, 'test_config: output names file:line');
    ($code, $out) = $ngx->test_config(
        http => 'server { listen 127.0.0.1:%%PORT%%; }');
    is($code, 0, 'test_config: good config') or diag($out);
    like($ngx->error_log, qr/\[notice\].*(?:reconfiguring|signal process)/,
         'error log readable');

    my $master = $ngx->master_pid;
    $ngx->stop;
    ok(PayGW::Test::_gone($master), 'nginx stopped (exited; init may not have reaped it yet)');
    is(http(GET => $ngx->url('/'), timeout => 2)->{status}, 599, 'port closed');

    my $bad = PayGW::Test::Nginx->new(no_module => 1,
                                      http => 'server { listen 127.0.0.1:%%PORT%%; bogus; }');
    eval { $bad->start };
    like($@, qr/nginx failed to start.*unknown directive "bogus"/s,
         'start dies with the error');
}

# ---- nginx.conf placeholders ---------------------------------------------------

{
    my $ngx = PayGW::Test::Nginx->new(no_module => 1, vars => {GREETING => 'hello'},
                                      http => <<'EOF');
    server { listen 127.0.0.1:%%PORT%%; location / { return 200 "%%GREETING%%"; } }
EOF
    $ngx->start;
    is(http(GET => $ngx->url('/'))->{body}, 'hello', 'vars fill %%NAME%% placeholders');
    eval { $ngx->reload(http => 'server { location / { return 200 "%%NOBODY%%"; } }') };
    like($@, qr/nothing fills %%NOBODY%%/, 'a placeholder nobody fills is an error');
    $ngx->stop;

    # the documented default and the older option form are one configuration
    require PayGW::Gateway;
    no warnings 'once';
    my @conf = map {
        (my $c = $_) =~ s/\s+/ /g;
        $c =~ s/ ?([{};]) ?/$1/g;
        $c
    } $PayGW::Gateway::DEFAULT_HTTP, PayGW::Gateway->_http_conf;
    is($conf[0], $conf[1],
              'Gateway: $DEFAULT_HTTP is what the option form builds without options');
}

ok(-s $sim->key_file('alipay_app_private.pem')
   && ((stat $sim->key_file('alipay_app_private.pem'))[2] & 0777) == 0600,
   "sim keys: the suite's keys copied, private keys mode 600");

SKIP: {
    skip 'module not built', 1 if $no_module;
    my $ngx = PayGW::Test::Nginx->new(http => <<'EOF');
    server { listen 127.0.0.1:%%PORT%%; location / { return 200 "ok"; } }
EOF
    my ($code, $out) = $ngx->test_config;
    is($code, 0, 'nginx loads the paygw module') or diag($out);
}

done_testing;
