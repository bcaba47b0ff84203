#!/usr/bin/perl
# Configuration errors an operator makes: nginx -t must fail with a clear
# reason and the file:line to fix, and must never print a password.  Also
# the password file conventions (trailing newline) and a correct config.
use strict;
use warnings;

use Test::More;

use PayGW::Test qw(backend_vars http);

my $redis = PayGW::Test::Redis->start(no_wait => 1);
my $db    = PayGW::Test::MySQL->start(no_wait => 1);
$_->ready for $redis, $db;
my $vars = backend_vars(redis => $redis, db => $db);
my $real_pw = $db->password;

my $secrets = PayGW::Test::_mkdir('secrets');
my %pw_file;
for (['nl', "$real_pw\n"], ['crlf', "$real_pw\r\n"],
     ['wrong', "Wrong-Pw-LeakCanary-7731\n"]) {
    $pw_file{$_->[0]} = "$secrets/$_->[0].pass";
    PayGW::Test::_spew($pw_file{$_->[0]}, $_->[1], 0600);
}
my @secrets = ($real_pw, 'Wrong-Pw-LeakCanary-7731');

my $mysql_ok = "paygw_mysql db host=127.0.0.1 port=%%MYSQL_PORT%% user=paygw "
             . "password_file=%%MYSQL_PASSWORD_FILE%% database=paygw max_conns=4 "
             . "idle_timeout=60s connect_timeout=3s query_timeout=10s;";

# A complete http{} body; %o replaces parts of it.
sub conf {
    my (%o) = @_;
    my $zone  = $o{zone}  // 'paygw_zone paygw:1m;';
    my $mysql = $o{mysql} // $mysql_ok;
    my $rpass = $o{redis_pass} // 'paygw_redis_pass redis;';
    my $mpass = $o{mysql_pass} // 'paygw_mysql_pass db;';
    my $health = $o{health} // 'paygw_health ready;';
    my $extra = $o{extra} // '';
    my $text = <<"EOF";
    $zone
    upstream redis { server 127.0.0.1:%%REDIS_PORT%%; keepalive 8; }
    $mysql
    server {
        listen 127.0.0.1:%%PORT%%;
        paygw_redis_timeout 1s;
        $extra
        location = /_paygw/redis { internal; $rpass }
        location = /_paygw/mysql { internal; $mpass }
        location = /healthz { paygw_health live; }
        location = /readyz  { $health }
    }
EOF
    $text = "$o{before}\n$text" if $o{before};
    $text .= "\n$o{after}\n" if $o{after};
    return $text;
}

my $ngx = PayGW::Test::Nginx->new(vars => $vars);
my $all_output = '';

# Line number, in the written nginx.conf, of the first line containing $s.
sub line_of {
    my ($s) = @_;
    my @l = split /\n/, PayGW::Test::_slurp($ngx->conf_file);
    for my $i (0 .. $#l) { return $i + 1 if index($l[$i], $s) >= 0 }
    return -1;
}

# nginx -t on conf(%o) must fail with $re and name the line holding $at.
sub bad_config {
    my ($name, $re, $at, %o) = @_;
    my ($rc, $out) = $ngx->test_config(http => conf(%o));
    $all_output .= $out;
    isnt($rc, 0, "$name: nginx -t fails");
    like($out, $re, "... saying why") or diag($out);
    my $line = line_of($at);
    like($out, qr/\Q${\ $ngx->conf_file}\E:$line\b/,
         "... at nginx.conf:$line") or diag($out);
}

# ---- a correct config -------------------------------------------------------

{
    my ($rc, $out) = $ngx->test_config(http => conf());
    $all_output .= $out;
    is($rc, 0, 'the full config passes nginx -t') or diag($out);
    like($out, qr/test is successful/, '... nginx says so');
}

{
    # paygw_mysql declared after the location that uses it, like upstream{}
    my ($rc, $out) = $ngx->test_config(
        http => conf(mysql => '', after => $mysql_ok));
    $all_output .= $out;
    is($rc, 0, 'paygw_mysql may come after the paygw_mysql_pass using it')
        or diag($out);
}

# ---- mistakes ---------------------------------------------------------------

bad_config('paygw_redis_pass to an unknown upstream',
           qr/(?:no port|host not found) in upstream "nosuch"/,
           'paygw_redis_pass nosuch', redis_pass => 'paygw_redis_pass nosuch;');

bad_config('paygw_zone too small', qr/too small/, 'paygw_zone paygw:1k',
           zone => 'paygw_zone paygw:1k;');

bad_config('paygw_zone without a size', qr/invalid zone "paygw".*NAME:SIZE/,
           'paygw_zone paygw;', zone => 'paygw_zone paygw;');

bad_config('paygw_zone with a bad size', qr/invalid zone size/,
           'paygw_zone paygw:lots', zone => 'paygw_zone paygw:lots;');

bad_config('paygw_zone twice', qr/"paygw_zone" directive is duplicate/,
           'paygw_zone other:1m',
           zone => "paygw_zone paygw:1m;\n    paygw_zone other:1m;");

{
    (my $m = $mysql_ok) =~ s/password_file=\S+/password_file=\/nonexistent/;
    bad_config('password_file missing',
               qr/password_file.*"\/nonexistent"|"\/nonexistent".*password_file/,
               'password_file=/nonexistent', mysql => $m);
}

{
    (my $m = $mysql_ok) =~ s/host=\S+/host=localhost/;
    bad_config('paygw_mysql host=localhost',
               qr/"localhost" is not an IP address/, 'host=localhost',
               mysql => $m);
}

bad_config('paygw_mysql_pass to an unknown paygw_mysql',
           qr/unknown paygw_mysql "nosuch"/, 'paygw_mysql_pass nosuch',
           mysql_pass => 'paygw_mysql_pass nosuch;');

bad_config('paygw_health bogus', qr/invalid value "bogus"/,
           'paygw_health bogus', health => 'paygw_health bogus;');

bad_config('paygw_mysql without user, password_file, database',
           qr/needs .*user.*password_file.*database/,
           'paygw_mysql db host=',
           mysql => "paygw_mysql db host=127.0.0.1 port=%%MYSQL_PORT%%;");

{
    (my $m = $mysql_ok) =~ s/max_conns=4/max_con=4/;
    bad_config('paygw_mysql with a misspelt parameter',
               qr/invalid parameter "max_con=4"/, 'max_con=4', mysql => $m);
    ($m = $mysql_ok) =~ s/max_conns=4/max_conns=0/;
    bad_config('paygw_mysql max_conns=0', qr/invalid parameter "max_conns=0"/,
               'max_conns=0', mysql => $m);
    ($m = $mysql_ok) =~ s/query_timeout=10s/query_timeout=soon/;
    bad_config('paygw_mysql query_timeout=soon',
               qr/invalid time in "query_timeout=soon"/,
               'query_timeout=soon', mysql => $m);
    ($m = $mysql_ok) =~ s/port=\S+/port=99999/;
    bad_config('paygw_mysql port=99999', qr/invalid parameter "port=99999"/,
               'port=99999', mysql => $m);
    ($m = $mysql_ok) =~ s/host=127.0.0.1/host=127.0.0.2/;
    bad_config('paygw_mysql defined twice',
               qr/duplicate paygw_mysql "db"/, 'host=127.0.0.2', after => $m);
}

bad_config('paygw_metrics without paygw_zone', qr/requires paygw_zone/,
           'paygw_metrics', zone => '',
           extra => 'location = /metrics { paygw_metrics; }');

bad_config('paygw_redis_timeout soon', qr/invalid timeout "soon"/,
           'paygw_redis_timeout soon;',
           extra => 'location /x { paygw_redis_timeout soon; }');

# ---- unknown_grace against the retry budget (issue 10, item 2) -----------

# A payment the acquirer has no trace of counts as never charged after
# unknown_grace: never while its create may still be running -- its insert
# (MySQL connect 3 s + query 10 s) and attempts x (proxy connect + read).
sub grace_conf {
    my ($grace, $read) = @_;
    my $g = defined $grace ? "unknown_grace=$grace" : '';
    return conf(
        before => "paygw_channel bank_card location=/_paygw/bank "
                  . "merchant_id=ACQ-M100 "
                  . "secret_file=" . PayGW::Test::repo_root() . "/conf/demo/acquirer.secret attempts=2 $g;",
        extra => "location /_paygw/bank/ { internal; proxy_pass http://127.0.0.1:9/; "
                 . "proxy_connect_timeout 1s; proxy_read_timeout $read; }");
}

{
    my ($rc, $out) = $ngx->test_config(http => grace_conf('18s', '2s'));
    $all_output .= $out;
    isnt($rc, 0, 'unknown_grace=18s shorter than 13 s + 2 x (1 s + 2 s): nginx -t fails');
    like($out, qr/unknown_grace=18s is shorter than the time its create may still run \(19000 ms/,
         '... saying why, with the budget') or diag($out);

    ($rc, $out) = $ngx->test_config(http => grace_conf('19s', '2s'));
    $all_output .= $out;
    is($rc, 0, 'unknown_grace=19s, the budget exactly: passes') or diag($out);

    ($rc, $out) = $ngx->test_config(http => grace_conf(undef, '60s'));
    $all_output .= $out;
    is($rc, 0, 'unknown_grace not given, budget 135 s: passes') or diag($out);
    like($out, qr/unknown_grace raised to 135s/, '... the default grows to the budget')
        or diag($out);
}

# ---- card bodies stay in memory ----------------------------------------------

# The module wipes an API body where nginx read it; a body written to a
# temporary file would leave card data on disk.
{
    my $api = 'paygw_keys ' . PayGW::Test::repo_root() . '/conf/demo/keys.conf;';
    my $loc = 'location /v1/ { paygw_api; %s }';
    my ($rc, $out) = $ngx->test_config(http => conf(
        before => $api, extra => sprintf($loc, 'client_body_in_file_only on;')));
    $all_output .= $out;
    isnt($rc, 0, 'paygw_api with client_body_in_file_only: nginx -t fails');
    like($out, qr/client_body_in_file_only would write card data to disk/,
         '... saying why') or diag($out);

    ($rc, $out) = $ngx->test_config(http => conf(
        before => $api, extra => sprintf($loc, 'client_body_buffer_size 8k;')));
    $all_output .= $out;
    is($rc, 0, 'paygw_api with a body buffer under paygw_max_body_size: passes')
        or diag($out);
    like($out, qr/client_body_buffer_size 8192 is smaller than paygw_max_body_size 16384/,
         '... with a warning') or diag($out);
}

# ---- test code never ships ---------------------------------------------------

# paygw_test_backend runs caller-supplied commands and SQL: it lives in the
# test-only module (t/module/), and the shipped module alone refuses it.
my $test_loc = 'location = /_test/backend { paygw_test_backend; }';

bad_config('paygw_test_backend with the shipped module alone',
           qr/unknown directive "paygw_test_backend"/, 'paygw_test_backend',
           extra => $test_loc);

{
    my $with = PayGW::Test::Nginx->new(vars => $vars, test_module => 1);
    my ($rc, $out) = $with->test_config(http => conf(extra => $test_loc));
    $all_output .= $out;
    is($rc, 0, '... accepted once the test module is loaded after it')
        or diag($out);
    like($out, qr/paygw_test_backend runs arbitrary backend commands/,
         '... with a warning');
}

{
    my $so = PayGW::Test::_slurp($ngx->{module});
    my @ops = qw(rsa_sign rsa_verify aes_gcm_decrypt hmac_sha256 webhook_sign
                 alipay_canonical alipay_notify_verify wechat_notify_verify);
    my @found = grep { index($so, $_) >= 0 } 'paygw_test', '_test/';
    push @found, grep { $so =~ /\0\Q$_\E\0/ } @ops;
    ok(length $so > 0 && !@found,
       'the shipped module holds no test API (directive, path, op names)')
        or diag("found: @found");
}

# ---- the password file -------------------------------------------------------

# One running nginx, reloaded with each password file in turn.
sub with_password_file {
    my ($file) = @_;
    return conf(mysql => "paygw_mysql db host=127.0.0.1 port=%%MYSQL_PORT%% "
                         . "user=paygw password_file=$file database=paygw;");
}

my $run = PayGW::Test::Nginx->new(vars => $vars, http => with_password_file($pw_file{nl}))
    ->start;
for my $kind ('nl', 'crlf') {
    $run->reload(http => with_password_file($pw_file{$kind}))
        if $kind ne 'nl';
    my $r = http(GET => $run->url('/readyz'));
    is($r->{status}, 200, 'password file ending in '
                          . ($kind eq 'nl' ? '\n' : '\r\n')
                          . ': MySQL login works (/readyz 200)')
        or diag($r->{body});
    $all_output .= $r->{body};
}

{
    $run->reload(http => with_password_file($pw_file{wrong}));
    my $r = http(GET => $run->url('/readyz'));
    is($r->{status}, 503, 'wrong password: /readyz 503');
    is($r->{json} && $r->{json}{checks}{mysql} // '', 'unavailable',
       '... checks.mysql says unavailable, not the server\'s words');
    unlike($r->{body}, qr/denied|paygw\@/i, '... no backend error text in the body');
    like($run->error_log, qr/denied/i, '... so does the error log');
    $all_output .= $r->{body} . $run->error_log;
}

$all_output .= $ngx->error_log;
my @leaks = grep { index($all_output, $_) >= 0 } @secrets;
is(scalar @leaks, 0, 'no password in any nginx -t output, error log or '
                     . 'response of this file');

done_testing;
