package PayGW::Test;

# Test harness for paygw: every test file starts its own Redis, MariaDB,
# provider simulator and nginx on free loopback ports in a temp dir, and
# everything is torn down at END (also after die, SIGINT and SIGTERM).
# Core Perl modules only.
#
#   use PayGW::Test qw(backend_vars free_port http http_parallel sign_request);
#   my $redis = PayGW::Test::Redis->start;
#   my $db    = PayGW::Test::MySQL->start;
#   my $sim   = PayGW::Test::Sim->start;
#   my $ngx   = PayGW::Test::Nginx->new(vars => backend_vars(redis => $redis),
#                                       http => <<'EOF')->start;
#       upstream redis { server 127.0.0.1:%%REDIS_PORT%%; }
#       server { listen 127.0.0.1:%%PORT%%; location / { return 200 ok; } }
#   EOF
#   my $r = http(GET => $ngx->url('/'));     # {status, headers, body, ...}
#
# The whole gateway (all four, configured by the test file's own http{}
# text) is PayGW::Gateway.  Waiting is for a condition (wait_until), with a
# deadline; sleep_until only where the duration itself is under test.
#
# Environment: PAYGW_NGINX (the nginx binary; default: nginx in PATH),
# PAYGW_MODULE (module .so to load), PAYGW_TEST_MODULE (the
# test-only module, t/module/, for configs that use paygw_test_backend;
# default: beside PAYGW_MODULE's build dir, build/objs-test/ for
# build/objs/), PAYGW_ASAN=1 (preload the ASan runtime into nginx and fail on
# sanitizer reports), PAYGW_KEEP=1 (keep the temp dirs), PAYGW_TEST_HA=1
# (`make test-ha`: PayGW::Gateway runs on a Redis Cluster and a 3-node
# Galera cluster, PayGW::Cluster and PayGW::Galera, instead of single
# servers; ha_backends() says so).

use strict;
use warnings;

use Cwd qw(abs_path);
use Digest::SHA qw(hmac_sha256_hex sha256_hex);
use Exporter qw(import);
use Fcntl qw(:flock);
use IPC::Open3 ();
use File::Basename qw(dirname);
use File::Copy ();
use File::Path qw(make_path remove_tree);
use File::Temp ();
use HTTP::Tiny;
use IO::Socket::IP;
use JSON::PP ();
use POSIX qw(WNOHANG);
use Storable ();
use Test::More ();
use Time::HiRes qw(sleep time);

our @EXPORT_OK = qw(free_port http http_parallel http_raw sign_request
                    signed_http wait_until sleep_until repo_root rsa_sign
                    rsa_verify backend_vars proc_kb);

our $REPO = abs_path(dirname(__FILE__) . '/../../..');
our $START_TIMEOUT = 30;

# nginx and mariadbd live in /usr/sbin, which a non-root PATH may lack.
$ENV{PATH} .= ":$_" for grep { ($ENV{PATH} // '') !~ m{(?:^|:)\Q$_\E(?::|$)} }
                       qw(/usr/sbin /sbin);

my $OWNER = $$;         # only the process that loaded us cleans up
my @LIVE;               # started components, for END
my $BASE;               # this test file's temp dir
my %GIVEN_PORTS;

sub repo_root { $REPO }

# PAYGW_TEST_HA=1: the gateway's backends are clusters (`make test-ha`)
sub ha_backends { ($ENV{PAYGW_TEST_HA} // '') eq '1' }

# ---- temp dirs, cleanup ----------------------------------------------------

# A fresh directory under this test file's temp dir. Mode 0755: nginx
# workers run as nobody when the tests run as root.
sub _mkdir {
    my ($name) = @_;
    if (!$BASE) {
        $BASE = File::Temp::tempdir('paygw-XXXXXX', TMPDIR => 1, CLEANUP => 0);
        chmod 0755, $BASE;
    }
    my $n = 1;
    $n++ while -e "$BASE/$name-$n";
    my $dir = "$BASE/$name-$n";
    make_path($dir, {mode => 0755});
    return $dir;
}

sub _register { push @LIVE, $_[0] unless grep { $_ == $_[0] } @LIVE }

sub _cleanup {
    return unless $$ == $OWNER;
    # nginx first, one by one; then the backends, told all at once
    for my $c (reverse grep { $_->isa('PayGW::Test::Nginx') } @LIVE) {
        eval { $c->_teardown; 1 } or Test::More::diag("teardown: $@");
    }
    my @procs = reverse grep { !$_->isa('PayGW::Test::Nginx') } @LIVE;
    $_->_term for @procs;
    for my $c (@procs) {
        eval { $c->_teardown; 1 } or Test::More::diag("teardown: $@");
    }
    @LIVE = ();
    return unless $BASE && -d $BASE;
    _archive_logs();
    if ($ENV{PAYGW_KEEP}) {
        Test::More::diag("PAYGW_KEEP: kept $BASE");
    } else {
        remove_tree($BASE);
    }
    $BASE = undef;
}

# Every nginx log a test wrote is kept under build/test-logs/ (set
# PAYGW_LOG_ARCHIVE to move it), so that t/post/log-scan.t can search all
# of them for secrets once the whole suite ran.
sub _archive_logs {
    my $to = $ENV{PAYGW_LOG_ARCHIVE} // "$REPO/build/test-logs";
    my $test = $0;
    $test =~ s{.*/}{};
    $test =~ s{[^\w.-]}{_}g;
    for my $log (glob("$BASE/nginx-*/*.log")) {
        my ($n, $name) = $log =~ m{/nginx-(\d+)/([^/]+)$} or next;
        make_path($to);
        File::Copy::copy($log, "$to/$test-$$-nginx$n-$name");
    }
}

END {
    my $status = $?;
    _cleanup();
    $? = $status;
}

for my $sig (qw(INT TERM HUP)) {
    $SIG{$sig} = sub {
        Test::More::diag("caught SIG$sig, stopping test processes");
        exit 1;     # runs END
    };
}

# ---- small helpers ---------------------------------------------------------

# proc_kb(PID, FIELD): a kB figure of /proc/PID/status (VmRSS, RssAnon,
# ...), or undef when the process or the field is gone
sub proc_kb {
    my ($pid, $field) = @_;
    open my $fh, '<', "/proc/$pid/status" or return undef;
    while (<$fh>) {
        return $1 if /^\Q$field\E:\s+(\d+)\s+kB/;
    }
    return undef;
}

sub wait_until {
    my ($cond, %o) = @_;
    my $deadline = time + ($o{timeout} // 10);
    my $interval = $o{interval} // 0.05;
    while (1) {
        my $v = $cond->();
        return $v if $v;
        return 0 if time >= $deadline;
        sleep $interval;
    }
}

# sleep_until(EPOCH): sleeps until that time (Time::HiRes), at once if it
# passed.  Only for waiting out a duration that is itself under test (a
# breaker's ejection time); anything else waits for its condition with
# wait_until.
sub sleep_until {
    my ($t) = @_;
    my $left = $t - time;
    sleep $left if $left > 0;
    return;
}

sub _slurp {
    my ($file) = @_;
    open my $fh, '<:raw', $file or return '';
    local $/;
    my $s = <$fh>;
    return $s // '';
}

sub _spew {
    my ($file, $text, $mode) = @_;
    open my $fh, '>:raw', $file or die "write $file: $!\n";
    print {$fh} $text;
    close $fh or die "write $file: $!\n";
    chmod $mode, $file if defined $mode;
}

sub _tail {
    my ($file, $n) = @_;
    my @l = split /\n/, _slurp($file);
    @l = @l[-$n .. -1] if @l > $n;
    return join("\n", @l) . "\n";
}

# A process is gone once it exited, even while it waits to be reaped: a
# daemonized nginx master is not our child, and this machine's init may
# take a second or two to reap it.
sub _gone {
    my ($pid) = @_;
    return 1 unless kill 0, $pid;
    my $stat = _slurp("/proc/$pid/stat");
    return $stat =~ /^\d+ \(.*\) Z /s ? 1 : 0;
}

sub _port_open {
    my ($port) = @_;
    my $s = IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => $port,
                                Proto => 'tcp', Timeout => 1);
    return 0 unless $s;
    close $s;
    return 1;
}

# Runs a command, stdin from $o{stdin}; returns (exit code, stdout, stderr).
sub _run {
    my ($cmd, %o) = @_;
    local $?;       # waitpid must not leak into the test's exit status
    my $in  = File::Temp->new;
    my $out = File::Temp->new;
    my $err = File::Temp->new;
    print {$in} $o{stdin} // '';
    close $in;
    my $pid = fork // die "fork: $!\n";
    if (!$pid) {
        open STDIN,  '<', $in->filename  or POSIX::_exit(126);
        open STDOUT, '>', $out->filename or POSIX::_exit(126);
        open STDERR, '>', $err->filename or POSIX::_exit(126);
        @ENV{keys %{$o{env}}} = values %{$o{env}} if $o{env};
        exec { $cmd->[0] } @$cmd
            or POSIX::_exit(127);
    }
    waitpid $pid, 0;
    my $rc = $? == -1 ? 127 : ($? & 127 ? 128 + ($? & 127) : $? >> 8);
    return ($rc, _slurp($out->filename), _slurp($err->filename));
}

# An unused loopback TCP port below the kernel's ephemeral range (so outgoing
# connections do not take it meanwhile), never the same twice per file.
sub free_port {
    my $low = 32768;
    if (open my $fh, '<', '/proc/sys/net/ipv4/ip_local_port_range') {
        ($low) = split ' ', scalar <$fh>;
    }
    $low = 32768 if !$low || $low <= 11000;
    for (1 .. 500) {
        my $p = 10000 + int rand($low - 10000);
        next if $GIVEN_PORTS{$p};
        my $s = IO::Socket::IP->new(LocalHost => '127.0.0.1', LocalPort => $p,
                                    Proto => 'tcp', Listen => 1) or next;
        close $s;
        $GIVEN_PORTS{$p} = 1;
        return $p;
    }
    die "free_port: no free port found\n";
}

# backend_vars(redis => R, db => D, sim => S): the nginx.conf placeholders
# those components fill -- %%REDIS_PORT%%, %%MYSQL_PORT%%,
# %%MYSQL_PASSWORD_FILE%%, %%SIM_PORT%% -- for PayGW::Test::Nginx's vars.
sub backend_vars {
    my (%c) = @_;
    my %v;
    $v{REDIS_PORT} = $c{redis}->port if $c{redis};
    @v{qw(MYSQL_PORT MYSQL_PASSWORD_FILE)} = ($c{db}->port, $c{db}->password_file)
        if $c{db};
    $v{SIM_PORT} = $c{sim}->port if $c{sim};
    return \%v;
}

# ---- HTTP ------------------------------------------------------------------

# http(METHOD, URL, body => BYTES | json => DATA, headers => {...},
#      timeout => SECS) -> {status, reason, headers (lowercase keys), body,
#      json (decoded body when it is JSON), elapsed}; status 599 when the
#      connection failed (body says why).
sub http {
    my ($method, $url, %o) = @_;
    my %headers = %{$o{headers} // {}};
    my $body = $o{body};
    if (exists $o{json}) {
        $body = JSON::PP->new->canonical->encode($o{json});
        $headers{'Content-Type'} //= 'application/json';
    }
    my $ua = HTTP::Tiny->new(timeout => $o{timeout} // 10, keep_alive => 0,
                             max_redirect => 0, agent => 'paygw-test/1');
    my %args = (headers => \%headers);
    $args{content} = $body if defined $body;
    my $t0 = time;
    my $r = $ua->request($method, $url, \%args);
    my $res = {status => $r->{status}, reason => $r->{reason},
               headers => $r->{headers} // {}, body => $r->{content} // '',
               elapsed => time - $t0};
    $res->{json} = eval { JSON::PP->new->decode($res->{body}) }
        if $res->{body} =~ /^\s*[\[{]/;
    return $res;
}

# http_parallel([[METHOD, URL, %opt], {method =>, url =>, %opt}, ...]):
# one process per request, all released at once; results in request order.
sub http_parallel {
    my ($reqs) = @_;
    local $?;
    my $dir = File::Temp::tempdir('paygw-par-XXXXXX', TMPDIR => 1, CLEANUP => 1);
    pipe(my $gate_r, my $gate_w) or die "pipe: $!\n";
    my @pids;
    my $max_timeout = 10;
    for my $i (0 .. $#$reqs) {
        my ($m, $u, %o);
        if (ref $reqs->[$i] eq 'HASH') {
            %o = %{$reqs->[$i]};
            ($m, $u) = delete @o{qw(method url)};
        } else {
            ($m, $u, %o) = @{$reqs->[$i]};
        }
        $max_timeout = $o{timeout} if ($o{timeout} // 0) > $max_timeout;
        my $pid = fork // die "fork: $!\n";
        if (!$pid) {
            close $gate_w;
            sysread $gate_r, my $buf, 1;        # EOF when the parent opens the gate
            my $res = eval { http($m, $u, %o) }
                // {status => 599, body => "http_parallel: $@", headers => {}};
            Storable::nstore($res, "$dir/$i");
            POSIX::_exit(0);
        }
        push @pids, $pid;
    }
    close $gate_r;
    close $gate_w;                              # go
    my $deadline = time + $max_timeout + 10;
    my %left = map { $_ => 1 } @pids;
    while (%left && time < $deadline) {
        for my $pid (keys %left) {
            delete $left{$pid} if waitpid($pid, WNOHANG) != 0;
        }
        sleep 0.01 if %left;
    }
    for my $pid (keys %left) { kill 'KILL', $pid; waitpid $pid, 0 }
    my @res = map {
        -e "$dir/$_" ? Storable::retrieve("$dir/$_")
                     : {status => 599, body => 'http_parallel: no result',
                        headers => {}}
    } 0 .. $#$reqs;
    return wantarray ? @res : \@res;
}

# http_raw(PORT, BYTES, timeout => SECS): send bytes as they are, return all
# that comes back until the peer closes or the timeout passes.
sub http_raw {
    my ($port, $bytes, %o) = @_;
    my $s = IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => $port,
                                Proto => 'tcp', Timeout => 5)
        or die "http_raw: connect to $port: $!\n";
    binmode $s;
    print {$s} $bytes;
    my $deadline = time + ($o{timeout} // 5);
    my $buf = '';
    my $rin = '';
    vec($rin, fileno $s, 1) = 1;
    while ((my $left = $deadline - time) > 0) {
        last unless select(my $rout = $rin, undef, undef, $left);
        my $n = sysread $s, $buf, 65536, length $buf;
        last unless $n;
    }
    close $s;
    return $buf;
}

# random_token(N): N random letters and digits.  A forked child reseeds
# first: it would otherwise repeat its parent's sequence, and a nonce the
# parent sends next would be a replay of the child's.
my $RAND_PID = 0;
sub random_token {
    my ($n) = @_;
    if ($RAND_PID != $$) { srand(); $RAND_PID = $$ }
    return join '', map { ('A' .. 'Z', 'a' .. 'z', 0 .. 9)[rand 62] } 1 .. $n;
}

# Merchant auth (SPEC §2): the Authorization header value.
sub sign_request {
    my ($key_id, $secret, $method, $path, $body, %o) = @_;
    my $ts = $o{ts} // time;
    $ts = int $ts;
    my $nonce = $o{nonce}
        // PayGW::Test::random_token(32);
    my $sts = join "\n", $method, $path, $ts, $nonce, sha256_hex($body // '');
    my $sig = hmac_sha256_hex($sts, $secret);
    return "PAYGW-HMAC-SHA256 key=$key_id,ts=$ts,nonce=$nonce,sig=$sig";
}

# signed_http(METHOD, URL, key_id => K, secret => S, %http_opts, ts =>,
# nonce =>): http() with an Authorization header signed over the exact body.
sub signed_http {
    my ($method, $url, %o) = @_;
    my ($key_id, $secret, $ts, $nonce) = delete @o{qw(key_id secret ts nonce)};
    if (exists $o{json}) {
        $o{body} = JSON::PP->new->canonical->encode(delete $o{json});
        $o{headers} = {'Content-Type' => 'application/json', %{$o{headers} // {}}};
    }
    my ($path) = $url =~ m{^https?://[^/]+(/.*)?$};
    $path = '/' unless defined $path && length $path;
    my %sopt;
    $sopt{ts} = $ts if defined $ts;
    $sopt{nonce} = $nonce if defined $nonce;
    $o{headers} = {%{$o{headers} // {}}, Authorization =>
        sign_request($key_id, $secret, $method, $path, $o{body}, %sopt)};
    return http($method, $url, %o);
}

# ---- RSA (SHA256withRSA, PKCS#1 v1.5) with the openssl CLI ----------------

# rsa_sign(PRIVATE_PEM_FILE, BYTES): base64 signature on one line.
sub rsa_sign {
    my ($key_file, $data) = @_;
    my ($rc, $sig, $err) = _run(['openssl', 'dgst', '-sha256', '-sign', $key_file],
                                stdin => $data);
    die "rsa_sign with $key_file: $err" if $rc;
    require MIME::Base64;
    return MIME::Base64::encode_base64($sig, '');
}

# rsa_verify(PUBLIC_PEM_FILE, BYTES, BASE64_SIGNATURE): true when it verifies.
sub rsa_verify {
    my ($pub_file, $data, $sig_b64) = @_;
    return 0 unless defined $sig_b64 && $sig_b64 =~ m{^[A-Za-z0-9+/]+={0,2}\z};
    require MIME::Base64;
    my $sig = File::Temp->new;
    binmode $sig;
    print {$sig} MIME::Base64::decode_base64($sig_b64);
    close $sig;
    my ($rc) = _run(['openssl', 'dgst', '-sha256', '-verify', $pub_file,
                     '-signature', $sig->filename], stdin => $data);
    return $rc == 0;
}

# ---- MariaDB template datadir ----------------------------------------------

sub _mysql_cnf {
    my (%v) = @_;
    my $t = _slurp("$REPO/scripts/mysql.cnf.in")
        or die "missing $REPO/scripts/mysql.cnf.in\n";
    $t =~ s/\@([A-Z]+)\@/exists $v{$1} ? $v{$1} : die "cnf: no value for $1\n"/ge;
    return $t;
}

sub _sql_files { sort glob "$REPO/sql/*.sql" }

# Initialized datadir with database, user and schema, built once per schema
# version under build/mysql-template/<hash>, shared by concurrent test files
# through a lock.
sub _mysql_template {
    my $root = "$REPO/build/mysql-template";
    make_path($root);
    my $key = sha256_hex(join "\0", _slurp("$REPO/scripts/mysql.cnf.in"),
                         map { ($_, _slurp($_)) } _sql_files());
    $key = substr $key, 0, 16;
    my $tpl = "$root/$key";
    return $tpl if -e "$tpl/READY";
    local $?;

    open my $lock, '>>', "$root/.lock" or die "lock $root/.lock: $!\n";
    flock $lock, LOCK_EX or die "flock: $!\n";
    return $tpl if -e "$tpl/READY";

    my $t0 = time;
    my $tmp = "$root/.build-$$";
    remove_tree($tmp);
    make_path("$tmp/data", "$tmp/tmp");
    my $port = free_port();
    my $cnf = "$tmp/my.cnf";
    _spew($cnf, _mysql_cnf(DATADIR => "$tmp/data", PORT => $port,
                           SOCKET => "$tmp/mysql.sock", PIDFILE => "$tmp/mysql.pid",
                           LOGERR => "$tmp/mysql.err", TMPDIR => "$tmp/tmp"));
    my ($rc, $out, $err) = _run(['mariadb-install-db', "--defaults-file=$cnf",
        '--auth-root-authentication-method=normal', '--skip-test-db']);
    die "mariadb-install-db failed:\n$out$err" if $rc;

    my $pid = fork // die "fork: $!\n";
    if (!$pid) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', "$tmp/mysql.out";
        open STDERR, '>&', \*STDOUT;
        exec 'mariadbd', "--defaults-file=$cnf"
            or POSIX::_exit(127);
    }
    my $ok = wait_until(sub {
        waitpid($pid, WNOHANG) == 0
            or die "mariadbd (template) exited:\n" . _tail("$tmp/mysql.err", 30);
        (_run(['mariadb-admin', "--defaults-file=$cnf", 'ping']))[0] == 0;
    }, timeout => $START_TIMEOUT, interval => 0.1);
    if (!$ok) {
        kill 'KILL', $pid;
        waitpid $pid, 0;
        die "mariadbd (template) not ready:\n" . _tail("$tmp/mysql.err", 30);
    }

    my $pw = join '', map { ('A' .. 'Z', 'a' .. 'z', 0 .. 9)[rand 62] } 1 .. 24;
    my @steps = (['paygw user', undef, <<"SQL"]);
CREATE DATABASE paygw CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE USER 'paygw'\@'127.0.0.1' IDENTIFIED BY '$pw';
GRANT ALL PRIVILEGES ON paygw.* TO 'paygw'\@'127.0.0.1';
SQL
    push @steps, map { [$_, 'paygw', _slurp($_)] } _sql_files();
    my $fail;
    for my $s (@steps) {
        my ($name, $db, $sql) = @$s;
        my @cmd = ('mariadb', "--defaults-file=$cnf", '--batch');
        push @cmd, $db if $db;
        my ($rc, $out, $err) = _run(\@cmd, stdin => $sql);
        if ($rc) { $fail = "applying $name failed:\n$err"; last }
    }
    _run(['mariadb-admin', "--defaults-file=$cnf", 'shutdown']);
    wait_until(sub { waitpid($pid, WNOHANG) != 0 }, timeout => 30)
        or do { kill 'KILL', $pid; waitpid $pid, 0 };
    die "mysql template: $fail" if $fail;

    _spew("$tmp/paygw.pass", $pw, 0600);
    unlink map { "$tmp/$_" } qw(mysql.sock mysql.pid my.cnf);
    remove_tree("$tmp/tmp");
    _spew("$tmp/READY", sprintf("built in %.1fs\n", time - $t0));
    # Only the newest schema's template is kept.
    remove_tree($_) for grep { $_ ne $tmp } glob "$root/[0-9a-f]*";
    rename $tmp, $tpl or die "rename $tmp: $!\n";
    close $lock;
    return $tpl;
}

# ---- simulator keys ----------------------------------------------------------

# The Alipay and WeChat Pay test keys of scripts/provider-keys.sh, made
# once per version of that script under build/sim-keys/<hash> (RSA key
# generation costs a second or more per start on a busy machine) and
# copied into each simulator's dir.  Shared by concurrent test files
# through a lock, like the MariaDB template.
sub _sim_keys_template {
    my $root = "$REPO/build/sim-keys";
    make_path($root);
    my $script = "$REPO/scripts/provider-keys.sh";
    my $tpl = "$root/" . substr(sha256_hex(_slurp($script)), 0, 16);
    return $tpl if -e "$tpl.ready";
    local $?;
    open my $lock, '>>', "$root/.lock" or die "lock $root/.lock: $!\n";
    flock $lock, LOCK_EX or die "flock: $!\n";
    return $tpl if -e "$tpl.ready";
    my $tmp = "$root/.build-$$";
    remove_tree($tmp);
    my ($rc, $out, $err) = _run(['bash', $script, $tmp]);
    die "scripts/provider-keys.sh $tmp failed: $err" if $rc;
    remove_tree($_) for glob "$root/[0-9a-f]*";
    rename $tmp, $tpl or die "rename $tmp: $!\n";
    _spew("$tpl.ready", '');
    close $lock;
    return $tpl;
}

# ---- process components (run as our children) -----------------------------

package PayGW::Test::Proc;

use strict;
use warnings;
use POSIX qw(WNOHANG);
use Time::HiRes qw(sleep time);

sub port { $_[0]{port} }
sub pid  { $_[0]{pid} }
sub dir  { $_[0]{dir} }
sub log_file { $_[0]{log} }
sub log_text { PayGW::Test::_slurp($_[0]{log}) }

sub _alive {
    my ($self) = @_;
    local $?;
    return 0 unless $self->{pid};
    return 1 if waitpid($self->{pid}, WNOHANG) == 0;
    $self->{pid} = undef;
    return 0;
}

# Starts the process; unless told no_wait (then ->ready waits), waits
# until it answers.
sub _spawn {
    my ($self, %o) = @_;
    my @cmd = $self->_command;
    my $pid = fork // die "fork: $!\n";
    if (!$pid) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', $self->{log} or POSIX::_exit(126);
        open STDERR, '>&', \*STDOUT;
        exec { $cmd[0] } @cmd
            or POSIX::_exit(127);
    }
    $self->{pid} = $pid;
    $self->{cmd} = \@cmd;
    PayGW::Test::_register($self);
    return $o{no_wait} ? $self : $self->ready;
}

# ready(): waits until a process started with no_wait => 1 answers (dies
# if it exits or does not answer within $PayGW::Test::START_TIMEOUT).
sub ready {
    my ($self) = @_;
    my $name = ref $self;
    my @cmd = @{ $self->{cmd} };
    my $ok = PayGW::Test::wait_until(sub {
        $self->_alive or die "$name exited at start (@cmd):\n"
            . PayGW::Test::_tail($self->{log}, 30);
        $self->_ready;
    }, timeout => $PayGW::Test::START_TIMEOUT, interval => 0.05);
    if (!$ok) {
        my $log = PayGW::Test::_tail($self->{log}, 30);
        $self->kill;
        die "$name not ready on port $self->{port} within "
            . "${PayGW::Test::START_TIMEOUT}s:\n$log";
    }
    return $self;
}

sub start_again {
    my ($self) = @_;
    die ref($self) . " is still running\n" if $self->_alive;
    return $self->_spawn;
}

# TERM (and CONT, in case it is frozen), no wait.
sub _term {
    my ($self) = @_;
    return unless $self->_alive;
    CORE::kill 'TERM', $self->{pid};
    CORE::kill 'CONT', $self->{pid};
}

# TERM (and CONT, in case it is frozen), bounded wait, then KILL.
sub stop {
    my ($self) = @_;
    return unless $self->_alive;
    my $pid = $self->{pid};
    CORE::kill 'TERM', $pid;
    CORE::kill 'CONT', $pid;
    return if PayGW::Test::wait_until(sub { !$self->_alive }, timeout => 30);
    Test::More::diag(ref($self) . " (pid $pid) ignored TERM; killing");
    $self->kill;
}

sub kill {
    my ($self) = @_;
    local $?;
    return unless $self->_alive;
    CORE::kill 'KILL', $self->{pid};
    waitpid $self->{pid}, 0;
    $self->{pid} = undef;
}

# freeze: SIGSTOP, and wait until every thread of the process is stopped
# (the signal reaches each thread on its own); thaw: SIGCONT, and wait
# until none is.
sub freeze {
    my ($self) = @_;
    die ref($self) . " freeze: not running (pid " . ($self->{pid} // 'none') . ")\n"
        unless $self->_alive;
    CORE::kill 'STOP', $self->{pid};
    PayGW::Test::wait_until(sub { $self->_threads_stopped == 1 }, timeout => 5,
                            interval => 0.01)
        or die ref($self) . " freeze: pid $self->{pid} did not stop\n";
}

sub thaw {
    my ($self) = @_;
    return unless $self->_alive;
    CORE::kill 'CONT', $self->{pid};
    PayGW::Test::wait_until(sub { $self->_threads_stopped == 0 }, timeout => 5,
                            interval => 0.01);
}

# 1 when all threads are stopped, 0 when none is, 0.5 in between.
sub _threads_stopped {
    my ($self) = @_;
    my ($stopped, $all) = (0, 0);
    for my $stat (glob "/proc/$self->{pid}/task/*/stat") {
        my ($state) = PayGW::Test::_slurp($stat) =~ /^.*\) (\S)/s or next;
        $all++;
        $stopped++ if $state eq 'T' || $state eq 't';
    }
    return !$all ? 0 : $stopped == $all ? 1 : $stopped ? 0.5 : 0;
}

sub _teardown { $_[0]->stop }

# ---- Redis -----------------------------------------------------------------

package PayGW::Test::Redis;

use strict;
use warnings;
our @ISA = ('PayGW::Test::Proc');

# start(port => P, args => [extra redis-server arguments], no_wait => 1)
# (no_wait, for every component: return at once, ->ready waits)
sub start {
    my ($class, %o) = @_;
    my $dir = PayGW::Test::_mkdir('redis');
    my $self = bless {dir => $dir, log => "$dir/redis.log",
                      port => $o{port} // PayGW::Test::free_port(),
                      args => $o{args} // []}, $class;
    return $self->_spawn(%o);
}

sub _command {
    my ($self) = @_;
    return ('redis-server', '--bind', '127.0.0.1', '--port', $self->{port},
            '--save', '', '--appendonly', 'no', '--daemonize', 'no',
            '--dir', $self->{dir}, @{$self->{args}});
}

sub _ready {
    my ($self) = @_;
    my $s = IO::Socket::IP->new(PeerHost => '127.0.0.1', PeerPort => $self->{port},
                                Proto => 'tcp', Timeout => 1) or return 0;
    print {$s} "PING\r\n";
    my $line = <$s> // '';
    return $line =~ /^\+PONG/;
}

# cli(ARGS...): redis-cli output, chomped.
sub cli {
    my ($self, @args) = @_;
    my ($rc, $out, $err) = PayGW::Test::_run(
        ['redis-cli', '-h', '127.0.0.1', '-p', $self->{port}, @args]);
    die "redis-cli @args: $err" if $rc;
    chomp $out;
    return $out;
}

# port_for(KEY): the port that serves KEY (a Redis Cluster's: its master)
sub port_for { $_[0]{port} }

# ---- MariaDB ---------------------------------------------------------------

package PayGW::Test::MySQL;

use strict;
use warnings;
our @ISA = ('PayGW::Test::Proc');

# start(port => P): a private MariaDB with database paygw, user
# paygw@127.0.0.1 and the schema from sql/*.sql, copied from the template.
sub start {
    my ($class, %o) = @_;
    my $tpl = PayGW::Test::_mysql_template();
    my $dir = PayGW::Test::_mkdir('mysql');
    my ($rc, $out, $err) = PayGW::Test::_run(['cp', '-a', "$tpl/data", "$dir/data"]);
    die "copying the MySQL template failed: $err" if $rc;
    mkdir "$dir/tmp";
    File::Copy::copy("$tpl/paygw.pass", "$dir/mysql.pass")
        or die "copy password file: $!\n";
    chmod 0600, "$dir/mysql.pass";
    my $self = bless {dir => $dir, log => "$dir/mysql.err",
                      port => $o{port} // PayGW::Test::free_port()}, $class;
    PayGW::Test::_spew("$dir/my.cnf", PayGW::Test::_mysql_cnf(
        DATADIR => "$dir/data", PORT => $self->{port},
        SOCKET => "$dir/mysql.sock", PIDFILE => "$dir/mysql.pid",
        LOGERR => "$dir/mysql.err", TMPDIR => "$dir/tmp"));
    return $self->_spawn(%o);
}

sub _command { ('mariadbd', "--defaults-file=$_[0]{dir}/my.cnf") }

sub _ready {
    my ($self) = @_;
    return PayGW::Test::_port_open($self->{port})
        && (PayGW::Test::_run(['mariadb-admin',
                               "--defaults-file=$self->{dir}/my.cnf", 'ping']))[0] == 0;
}

sub password_file { "$_[0]{dir}/mysql.pass" }
sub password      { PayGW::Test::_slurp("$_[0]{dir}/mysql.pass") }
sub socket        { "$_[0]{dir}/mysql.sock" }
sub user          { 'paygw' }
sub database      { 'paygw' }

# sql(TEXT, db => NAME): runs TEXT as root over the unix socket (database
# paygw unless told), tab-separated rows without header; dies on error.
sub sql {
    my ($self, $text, %o) = @_;
    if (!defined $o{db} && $$ == $OWNER) {
        my $out = $self->_client_sql($text);
        return $out if defined $out;
    }
    my ($rc, $out, $err) = PayGW::Test::_run(
        ['mariadb', "--defaults-file=$self->{dir}/my.cnf", '--batch',
         '--skip-column-names', $o{db} // 'paygw'], stdin => $text);
    die "sql failed ($err): $text\n" if $rc;
    return $out;
}

# One mariadb client kept open for sql() in database paygw: a client
# process per query costs ~40 ms on a busy machine, and the tests ask
# hundreds.  Each text is followed by a marker SELECT; the client stops
# at the first error (no --force), so an error shows as output ending
# without the marker.  Returns the output; dies on an SQL error; undef
# when the connection failed (the server was stopped or killed meanwhile)
# so that sql() runs the text once more with a client of its own.
my $MARK = 0;

sub _client_sql {
    my ($self, $text) = @_;
    my $c = $self->{client} //= eval {
        my ($in, $out);
        my $pid = IPC::Open3::open3($in, $out, undef, 'mariadb',
            "--defaults-file=$self->{dir}/my.cnf", '--batch', '--skip-column-names',
            '--unbuffered', 'paygw');
        binmode $in;
        binmode $out;
        $in->autoflush(1);
        {pid => $pid, in => $in, out => $out};
    } or return undef;
    my $mark = "--paygw-sql-done-" . ++$MARK . '--';
    (my $body = $text) =~ s/[\s;]+\z//;
    local $SIG{PIPE} = 'IGNORE';
    my $sent = print {$c->{in}} "$body\n;\nSELECT '$mark';\n";
    my ($all, $done) = ('', 0);
    if ($sent) {
        while (defined(my $line = readline $c->{out})) {
            if ($line eq "$mark\n") { $done = 1; last }
            $all .= $line;
        }
    }
    return $all if $done;
    $self->_client_close;
    # the client printed its error and exited: an SQL error, unless the
    # connection itself failed (then sql() tries a client of its own)
    return undef if !$sent || $all !~ /^ERROR \d+/m
                    || $all =~ /^ERROR (?:2002|2003|2006|2013)\b/m;
    die "sql failed ($all): $text\n";
}

sub _client_close {
    my ($self) = @_;
    my $c = delete $self->{client} or return;
    local $?;
    close $c->{in};
    close $c->{out};
    CORE::kill 'TERM', $c->{pid};
    waitpid $c->{pid}, 0;
}

sub stop  { $_[0]->_client_close; $_[0]->SUPER::stop }
sub kill  { $_[0]->_client_close; $_[0]->SUPER::kill }

# ---- provider simulator ----------------------------------------------------

package PayGW::Test::Sim;

use strict;
use warnings;
our @ISA = ('PayGW::Test::Proc');

# start(port => P, acquirer_secret => S, acquirer_merchant => M,
#       keys => DIR, no_keys => 1, alipay_app_id => ID, wechat_mchid => ID,
#       wechat_appid => ID, args => [...])
# Alipay and WeChat keys: a copy of the keys scripts/provider-keys.sh made
# once for the suite (_sim_keys_template) in the simulator's dir, unless
# keys => DIR (used as it is) is given; with
# no_keys => 1 the simulator gets none and its Alipay and WeChat answer 503.
sub start {
    my ($class, %o) = @_;
    my $dir = PayGW::Test::_mkdir('sim');
    my $keys;
    if (!$o{no_keys}) {
        $keys = $o{keys} // "$dir/keys";
        if (!defined $o{keys}) {
            my ($rc, $out, $err) = PayGW::Test::_run(
                ['cp', '-a', PayGW::Test::_sim_keys_template(), $keys]);
            die "copying the simulator's keys failed: $err" if $rc;
        }
    }
    my %flag = (acquirer_secret => '--acquirer-secret',
                acquirer_merchant => '--acquirer-merchant',
                alipay_app_id => '--alipay-app-id', wechat_mchid => '--wechat-mchid',
                wechat_appid => '--wechat-appid');
    my $self = bless {dir => $dir, log => "$dir/sim.log",
                      port => $o{port} // PayGW::Test::free_port(),
                      acquirer_secret => $o{acquirer_secret} // 'acq-demo-secret',
                      acquirer_merchant => $o{acquirer_merchant} // 'ACQ-M100',
                      keys => $keys,
                      alipay_app_id => $o{alipay_app_id} // '2021000000000001',
                      wechat_mchid => $o{wechat_mchid} // '1900000001',
                      wechat_appid => $o{wechat_appid} // 'wxd678efh567hg6787',
                      args => [@{$o{args} // []},
                               (map { defined $o{$_} ? ($flag{$_}, $o{$_}) : () }
                                sort keys %flag),
                               defined $keys ? ('--keys', $keys) : ()]},
        $class;
    return $self->_spawn(%o);
}

sub _command {
    my ($self) = @_;
    return ('node', "$PayGW::Test::REPO/t/sim/sim.js", '--port', $self->{port},
            @{$self->{args}});
}

sub _ready {
    my ($self) = @_;
    return PayGW::Test::_port_open($self->{port})
        && PayGW::Test::http(GET => $self->url('/health'), timeout => 2)
               ->{status} == 200;
}

sub url { "http://127.0.0.1:$_[0]{port}" . ($_[1] // '') }

# mode(NAME, delay_ms => N, times => N, path_prefix => P): fault mode for
# the next N provider requests under P (see t/sim/sim.js for the modes).
sub mode {
    my ($self, $mode, %o) = @_;
    my $r = PayGW::Test::http(POST => $self->url('/_sim/mode'),
                              json => {mode => $mode, %o});
    die "sim mode $mode: $r->{status} $r->{body}\n" unless $r->{status} == 200;
    return $r->{json};
}

sub requests { PayGW::Test::http(GET => $_[0]->url('/_sim/requests'))->{json} }

# statement(provider => 'acquirer', drop => [KEY], add => [[COLS]],
#           amount => {KEY => DELTA}, status => {KEY => S}, large => N,
#           columns => 'wrong', truncate => 1, bad_utf8 => 1): what the
# provider's next statements look like (t/sim/sim.js, POST /_sim/statement).
sub statement {
    my ($self, %o) = @_;
    my $r = PayGW::Test::http(POST => $self->url('/_sim/statement'), json => \%o);
    die "sim statement: $r->{status} $r->{body}\n" unless $r->{status} == 200;
    return $r->{json};
}
sub reset    { PayGW::Test::http(POST => $_[0]->url('/_sim/reset'))->{status} == 200 }

# {charges => [{out_trade_no, charge_id, amount, currency, status, requests,
# duplicates, queries}], refunds => [... out_refund_no, refund_id ...]}
sub charges  { PayGW::Test::http(GET => $_[0]->url('/_sim/charges'))->{json} }

sub acquirer_secret   { $_[0]{acquirer_secret} }
sub acquirer_merchant { $_[0]{acquirer_merchant} }

# acquirer_sign(TS, METHOD, PATH, BODY, SECRET): X-Acquirer-Signature of a
# request (PATH with its query string).
sub acquirer_sign {
    my ($self, $ts, $method, $path, $body, $secret) = @_;
    return Digest::SHA::hmac_sha256_hex("$ts\n$method\n$path\n" . ($body // ''),
                                        $secret // $self->acquirer_secret);
}

# acquirer_verify(RESPONSE, SECRET): the response's X-Acquirer-Signature is
# HMAC(ts "\n" body).
sub acquirer_verify {
    my ($self, $r, $secret) = @_;
    my ($ts, $sig) = @{$r->{headers}}{qw(x-acquirer-timestamp x-acquirer-signature)};
    return 0 unless defined $ts && defined $sig && $ts =~ /^\d+$/;
    return $sig eq Digest::SHA::hmac_sha256_hex("$ts\n$r->{body}",
                                                $secret // $self->acquirer_secret);
}

# acquirer(METHOD, PATH, json => DATA | body => BYTES, ts => T, merchant => M,
#          secret => S, signature => SIG, timeout => SECS): a request to the
# simulated acquirer, signed unless told otherwise (signature => undef sends
# none); http()'s result plus sig_ok (the response signature verifies).
sub acquirer {
    my ($self, $method, $path, %o) = @_;
    my $body = exists $o{json}
        ? JSON::PP->new->canonical->encode($o{json}) : $o{body} // '';
    my $ts = $o{ts} // int time;
    my %h = ('X-Acquirer-Merchant'  => $o{merchant} // $self->acquirer_merchant,
             'X-Acquirer-Timestamp' => $ts);
    $h{'Content-Type'} = 'application/json' if length $body;
    my $sig = exists $o{signature} ? $o{signature}
        : $self->acquirer_sign($ts, $method, $path, $body, $o{secret});
    $h{'X-Acquirer-Signature'} = $sig if defined $sig;
    my $r = PayGW::Test::http($method, $self->url($path), headers => \%h,
                              (length $body ? (body => $body) : ()),
                              (defined $o{timeout} ? (timeout => $o{timeout}) : ()));
    $r->{sig_ok} = $self->acquirer_verify($r);
    return $r;
}

# notify(url => URL, out_trade_no => P, status => S, amount => N,
#        currency => C, tamper => 'signature'|'amount'|'body'|'merchant',
#        timestamp => T): the simulator POSTs a signed acquirer callback to
# URL; returns {status, body, sent => {headers, body}} (the gateway's answer),
# or {error} when the call failed.
sub notify {
    my ($self, %o) = @_;
    return PayGW::Test::http(POST => $self->url('/_sim/notify'), json => \%o,
                             timeout => 15)->{json};
}

# ---- Alipay and WeChat Pay keys and ids ----

sub keys_dir      { $_[0]{keys} }
sub key_file      { "$_[0]{keys}/$_[1]" }     # key_file('alipay_public.pem')
sub alipay_app_id { $_[0]{alipay_app_id} }
sub wechat_mchid  { $_[0]{wechat_mchid} }
sub wechat_appid  { $_[0]{wechat_appid} }
sub apiv3_key     { PayGW::Test::_slurp($_[0]->key_file('wechat_apiv3.key')) }

sub _first_line {
    my ($file) = @_;
    my ($line) = split /\n/, PayGW::Test::_slurp($file);
    return $line // '';
}

# wechat_serial(1|2): the serial of platform key 1 or 2.
sub wechat_serial {
    my ($self, $n) = @_;
    die "wechat_serial: 1 or 2\n" unless ($n // '') =~ /^[12]\z/;
    return _first_line($self->key_file("wechat_platform${n}_serial"));
}

sub merchant_serial { _first_line($_[0]->key_file('wechat_merchant_serial')) }

# ---- control: trades, callbacks, platform keys ----

# {alipay => [trades], wechat => [orders]} with request counters and refunds.
sub trades { PayGW::Test::http(GET => $_[0]->url('/_sim/trades'))->{json} }

sub _notify {
    my ($self, $path, %o) = @_;
    $o{apply} = $o{apply} ? JSON::PP::true() : JSON::PP::false()
        if exists $o{apply} && !ref $o{apply};
    for my $n (qw(timestamp total)) {
        $o{$n} += 0 if defined $o{$n};      # JSON numbers, not strings
    }
    my $r = PayGW::Test::http(POST => $self->url($path), json => \%o, timeout => 15);
    die "sim $path: $r->{status} $r->{body}\n"
        unless $r->{status} == 200 || $r->{status} == 502;
    return $r->{json};
}

# alipay_notify(out_trade_no => P, trade_status => S, url => U, apply => 0|1,
#               tamper => T, total_amount => '19.99'): the simulator POSTs a
# signed Alipay notify; {status, body, sent => {headers, body}} (the
# receiver's answer), or {error, sent} when the POST failed.
sub alipay_notify { my $self = shift; $self->_notify('/_sim/alipay/notify', @_) }

# wechat_notify(out_trade_no => P, trade_state => S, url => U, apply => 0|1,
#               tamper => T, timestamp => T, serial => S, total => FEN):
# the same for an encrypted WeChat Pay callback.
sub wechat_notify { my $self = shift; $self->_notify('/_sim/wechat/notify', @_) }

# wechat_refund_notify(out_refund_no => R, url => U): a signed, encrypted
# REFUND.SUCCESS callback for that refund.
sub wechat_refund_notify {
    my $self = shift;
    $self->_notify('/_sim/wechat/refund_notify', @_);
}

# wechat_platform(SERIAL): sign with that platform key from now on;
# wechat_platform(): {serial, serials}.
sub wechat_platform {
    my ($self, $serial) = @_;
    my $r = defined $serial
        ? PayGW::Test::http(POST => $self->url('/_sim/wechat/platform'),
                            json => {serial => $serial})
        : PayGW::Test::http(GET => $self->url('/_sim/wechat/platform'));
    die "sim wechat platform: $r->{status} $r->{body}\n" unless $r->{status} == 200;
    return $r->{json};
}

# ---- requests to the simulated Alipay and WeChat Pay (as the gateway) ----

# "yyyy-MM-dd HH:mm:ss" in UTC+8, Alipay's clock.
sub alipay_time { POSIX::strftime('%Y-%m-%d %H:%M:%S', gmtime(($_[1] // time) + 8 * 3600)) }

sub _form_escape {
    my ($s) = @_;
    $s =~ s/([^A-Za-z0-9\-._~ ])/sprintf('%%%02X', ord $1)/ge;
    $s =~ tr/ /+/;
    return $s;
}

# Alipay's string to sign: sorted "k=v&..." without the excluded names and
# empty values.
sub alipay_canonical {
    my ($self, $params, @exclude) = @_;
    my %ex = map { $_ => 1 } @exclude;
    my @names = grep { !$ex{$_} && defined $params->{$_} && length $params->{$_} }
        keys %$params;
    return join '&', map { "$_=$params->{$_}" } sort @names;
}

# alipay(method => M, biz => DATA | biz_content => BYTES, params => {NAME =>
#        VALUE or undef to leave out}, key => PEM_FILE, sign => SIG,
#        notify_url => U, timeout => SECS): a signed request to /gateway.do
# (all parameters in the form body); http()'s result plus name (the answer's
# "<method>_response" key), inner (its exact JSON text), res (inner decoded)
# and sig_ok (sign verifies over inner with alipay_public.pem).
sub alipay {
    my ($self, %o) = @_;
    my %p = (app_id => $self->alipay_app_id, method => $o{method}, format => 'JSON',
             charset => 'utf-8', sign_type => 'RSA2', timestamp => $self->alipay_time,
             version => '1.0',
             biz_content => $o{biz_content}
                 // JSON::PP->new->utf8->canonical->encode($o{biz} // {}));
    $p{notify_url} = $o{notify_url} if defined $o{notify_url};
    my $extra = $o{params} // {};
    @p{keys %$extra} = values %$extra;
    delete @p{grep { !defined $p{$_} } keys %p};
    $p{sign} = exists $o{sign} ? $o{sign}
        : PayGW::Test::rsa_sign($o{key} // $self->key_file('alipay_app_private.pem'),
                                $self->alipay_canonical(\%p, 'sign'));
    delete $p{sign} unless defined $p{sign};
    my $body = join '&', map { _form_escape($_) . '=' . _form_escape($p{$_}) } sort keys %p;
    my $r = PayGW::Test::http(POST => $self->url('/gateway.do'), body => $body,
        headers => {'Content-Type' => 'application/x-www-form-urlencoded;charset=utf-8'},
        (defined $o{timeout} ? (timeout => $o{timeout}) : ()));
    $r->{sent} = \%p;
    $self->alipay_parse($r);
    return $r;
}

# alipay_parse(RESPONSE): sets name, inner, res, sig_ok on an http() result.
sub alipay_parse {
    my ($self, $r) = @_;
    my ($name, $inner, $sign) = $r->{body} =~ /^\{"(\w+)":(.*),"sign":"([^"]*)"\}\z/s;
    @$r{qw(name inner sig_ok)} = ($name, $inner, 0);
    return $r unless defined $inner;
    $r->{res} = eval { JSON::PP->new->decode($inner) };
    $r->{sig_ok} = PayGW::Test::rsa_verify($self->key_file('alipay_public.pem'),
                                           $inner, $sign);
    return $r;
}

# wechat_auth(METHOD, URL_PATH, BODY, ts => T, nonce => N, serial_no => S,
#             mchid => M, key => PEM_FILE): the Authorization header value.
sub wechat_auth {
    my ($self, $method, $path, $body, %o) = @_;
    my $ts = $o{ts} // int time;
    my $nonce = $o{nonce}
        // PayGW::Test::random_token(32);
    my $sig = PayGW::Test::rsa_sign($o{key} // $self->key_file('wechat_merchant_private.pem'),
                                    "$method\n$path\n$ts\n$nonce\n" . ($body // '') . "\n");
    return sprintf('WECHATPAY2-SHA256-RSA2048 mchid="%s",nonce_str="%s",'
                   . 'timestamp="%s",serial_no="%s",signature="%s"',
                   $o{mchid} // $self->wechat_mchid, $nonce, $ts,
                   $o{serial_no} // $self->merchant_serial, $o{signature} // $sig);
}

# wechat_verify(RESPONSE or {headers, body}): the platform key number (1 or
# 2) whose serial is Wechatpay-Serial and whose public key verifies
# Wechatpay-Signature over "ts\nnonce\nbody\n"; 0 otherwise.
sub wechat_verify {
    my ($self, $r) = @_;
    my %h = map { lc($_) => $r->{headers}{$_} } keys %{$r->{headers}};
    my ($ts, $nonce, $serial, $sig) =
        @h{qw(wechatpay-timestamp wechatpay-nonce wechatpay-serial wechatpay-signature)};
    return 0 unless defined $ts && defined $nonce && defined $serial && defined $sig;
    for my $n (1, 2) {
        next unless $serial eq $self->wechat_serial($n);
        return PayGW::Test::rsa_verify($self->key_file("wechat_platform${n}_public.pem"),
                                       "$ts\n$nonce\n$r->{body}\n", $sig) ? $n : 0;
    }
    return 0;
}

# wechat(METHOD, PATH, json => DATA | body => BYTES, authorization => A |
#        undef (none), timeout => SECS, and wechat_auth's options): a
# request to the simulated WeChat Pay API v3 signed as the merchant;
# http()'s result plus sig_ok (the platform key number that verifies the
# answer, 0 if none).
sub wechat {
    my ($self, $method, $path, %o) = @_;
    my $body = exists $o{json}
        ? JSON::PP->new->utf8->canonical->encode($o{json}) : $o{body} // '';
    my %h = (Accept => 'application/json');
    $h{'Content-Type'} = 'application/json' if length $body;
    my $auth = exists $o{authorization} ? $o{authorization}
        : $self->wechat_auth($method, $path, $body,
                             map { exists $o{$_} ? ($_ => $o{$_}) : () }
                             qw(ts nonce serial_no mchid key signature));
    $h{Authorization} = $auth if defined $auth;
    my $r = PayGW::Test::http($method, $self->url($path), headers => \%h,
                              (length $body ? (body => $body) : ()),
                              (defined $o{timeout} ? (timeout => $o{timeout}) : ()));
    $r->{sig_ok} = $self->wechat_verify($r);
    return $r;
}

# ---- nginx -----------------------------------------------------------------

package PayGW::Test::Nginx;

use strict;
use warnings;
use Time::HiRes qw(sleep time);

my $ASAN_LIB;

# new(http => TEXT, main => TEXT, workers => N, error_log_level => LEVEL,
#     no_module => 1, module => PATH, test_module => 1 | PATH, events => TEXT,
#     vars => {NAME => VALUE})
# TEXT may use %%PORT%% (->port), %%TESTDIR%% (->dir), %%MODULE%% and
# %%NAME%% for each NAME in vars (PayGW::Gateway passes %%REDIS_PORT%%,
# %%MYSQL_PORT%%, %%SIM_PORT%% and the like); a placeholder nobody fills
# is an error, not an empty string.
# test_module loads the test-only ngx_http_paygw_test_module (directive
# paygw_test_backend, `make build-test`) after the shipped module; without
# it nginx runs the shipped module alone.
sub new {
    my ($class, %o) = @_;
    my $dir = PayGW::Test::_mkdir('nginx');
    my $module = $o{module} // $ENV{PAYGW_MODULE}
                 // "$PayGW::Test::REPO/build/objs/ngx_http_paygw_module.so";
    my $test_module = $o{test_module};
    if ($test_module && $test_module eq '1') {
        $test_module = $ENV{PAYGW_TEST_MODULE}
                       // File::Basename::dirname($module) . '-test/ngx_http_paygw_test_module.so';
    }
    my $self = bless {
        dir => $dir,
        port => $o{port} // PayGW::Test::free_port(),
        http => $o{http} // '',
        main => $o{main} // '',
        events => $o{events} // '',
        workers => $o{workers} // 1,
        level => $o{error_log_level} // 'info',
        no_module => $o{no_module},
        vars => {%{ $o{vars} // {} }},
        module => $module,
        test_module => $test_module,
    }, $class;
    if ($ENV{PAYGW_ASAN}) {
        mkdir "$dir/san";
        chmod 01777, "$dir/san";        # workers (nobody) write reports too
    }
    return $self;
}

sub port { $_[0]{port} }
sub dir  { $_[0]{dir} }
sub conf_file { "$_[0]{dir}/nginx.conf" }
sub url  { "http://127.0.0.1:$_[0]{port}" . ($_[1] // '') }
sub error_log  { PayGW::Test::_slurp("$_[0]{dir}/error.log") }
sub access_log { PayGW::Test::_slurp("$_[0]{dir}/access.log") }

# vars(NAME => VALUE, ...): more %%NAME%% placeholders; vars(): all of them.
sub vars {
    my ($self, %v) = @_;
    @{ $self->{vars} }{keys %v} = values %v;
    return {%{ $self->{vars} }, PORT => $self->{port}, TESTDIR => $self->{dir},
            MODULE => $self->{module}};
}

sub _subst {
    my ($self, $text) = @_;
    my $v = $self->vars;
    $text =~ s/%%([A-Z][A-Z0-9_]*)%%/
        defined $v->{$1} ? $v->{$1} : die "nginx.conf: nothing fills %%$1%%\n"/ge;
    return $text;
}

sub conf_text {
    my ($self) = @_;
    my $d = $self->{dir};
    my $load = $self->{no_module} ? '' : "load_module $self->{module};\n";
    $load .= "load_module $self->{test_module};\n"
        if !$self->{no_module} && $self->{test_module};
    return $self->_subst(<<"EOF");
${load}daemon on;
master_process on;
worker_processes $self->{workers};
pid $d/nginx.pid;
error_log $d/error.log $self->{level};
$self->{main}
events {
    worker_connections 1024;
$self->{events}
}

http {
    access_log $d/access.log;
    client_body_temp_path $d/client_body_temp;
    proxy_temp_path $d/proxy_temp;
    fastcgi_temp_path $d/fastcgi_temp;
    uwsgi_temp_path $d/uwsgi_temp;
    scgi_temp_path $d/scgi_temp;

$self->{http}
}
EOF
}

sub _write_conf {
    my ($self, %o) = @_;
    for my $k (qw(http main events)) {
        $self->{$k} = $o{$k} if defined $o{$k};
    }
    if (!$self->{no_module} && !-f $self->{module}) {
        die "nginx module $self->{module} not built (make build)\n";
    }
    if (!$self->{no_module} && $self->{test_module} && !-f $self->{test_module}) {
        die "test module $self->{test_module} not built (make build-test)\n";
    }
    PayGW::Test::_spew($self->conf_file, $self->conf_text);
}

sub _env {
    my ($self) = @_;
    return {} unless $ENV{PAYGW_ASAN};
    if (!$ASAN_LIB) {
        chomp($ASAN_LIB = `gcc -print-file-name=libasan.so`);
        die "libasan.so not found (gcc)\n" unless $ASAN_LIB =~ m{^/} && -e $ASAN_LIB;
    }
    my $san = "$self->{dir}/san";
    return {LD_PRELOAD => $ASAN_LIB,
            ASAN_OPTIONS => "detect_leaks=0:log_path=$san/asan:abort_on_error=0"
                            . ":suppressions=$PayGW::Test::REPO/t/lib/asan.supp",
            UBSAN_OPTIONS => "print_stacktrace=1:log_path=$san/ubsan"};
}

sub _nginx {
    my ($self, @args) = @_;
    return PayGW::Test::_run([$ENV{PAYGW_NGINX} || 'nginx', '-p', "$self->{dir}/", '-c', $self->conf_file,
                              '-e', "$self->{dir}/error.log", @args],
                             env => $self->_env);
}

# test_config(%new_text) -> (exit code, output of nginx -t)
sub test_config {
    my ($self, %o) = @_;
    $self->_write_conf(%o);
    my ($rc, $out, $err) = $self->_nginx('-t');
    return ($rc, $out . $err);
}

sub master_pid {
    my ($self) = @_;
    my $pid = PayGW::Test::_slurp("$self->{dir}/nginx.pid");
    ($pid) = $pid =~ /(\d+)/;
    return $pid && !PayGW::Test::_gone($pid) ? $pid : undef;
}
sub pid { $_[0]->master_pid }

# Worker pids; with all => 1 also those still shutting down after a reload.
sub worker_pids {
    my ($self, %o) = @_;
    my $master = $self->master_pid or return ();
    my @pids;
    for (split /\n/, `ps -o pid=,args= --ppid $master`) {
        my ($pid, $args) = /^\s*(\d+)\s+(.*)$/ or next;
        next unless $args =~ /worker process/;
        next if !$o{all} && $args =~ /shutting down/;
        push @pids, $pid;
    }
    return @pids;
}

sub start {
    my ($self, %o) = @_;
    die "nginx already running\n" if $self->master_pid;
    $self->_write_conf(%o);
    my ($rc, $out, $err) = $self->_nginx;
    PayGW::Test::_register($self);
    my $tail = sub { "nginx: $out$err\n--- error.log:\n"
                     . PayGW::Test::_tail("$self->{dir}/error.log", 30) };
    die "nginx failed to start (exit $rc):\n" . $tail->() if $rc;
    my $listens = $self->{http} =~ /%%PORT%%/;
    my $ok = PayGW::Test::wait_until(sub {
        if (my @san = $self->_new_sanitizer_reports) {
            die "nginx: sanitizer report at start ($san[0][0]):\n$san[0][1]\n";
        }
        my @w = $self->worker_pids;
        $self->master_pid
            && @w == $self->{workers}
            && (!$listens || PayGW::Test::_port_open($self->{port}));
    }, timeout => $PayGW::Test::START_TIMEOUT);
    die "nginx not ready within ${PayGW::Test::START_TIMEOUT}s:\n" . $tail->()
        unless $ok;
    $self->{running} = 1;
    return $self;
}

# reload(http => TEXT, ...): optionally rewrite the config, HUP, and wait
# until all workers are new ones. Dies (keeping the old workers) when
# nginx rejects the new config.
sub reload {
    my ($self, %o) = @_;
    my $master = $self->master_pid or die "nginx is not running\n";
    $self->_write_conf(%o);
    my %old = map { $_ => 1 } $self->worker_pids;
    my $log = "$self->{dir}/error.log";
    my $log_pos = -s $log // 0;
    kill 'HUP', $master;
    my $failed;
    my $ok = PayGW::Test::wait_until(sub {
        my $new = substr PayGW::Test::_slurp($log), $log_pos;
        if ($new =~ /^.*\[(?:emerg|alert)\].*$/m) {
            $failed = $&;
            return 1;
        }
        my @now = $self->worker_pids;
        return @now == $self->{workers} && !grep { $old{$_} } @now;
    }, timeout => 15);
    die "nginx reload failed: $failed\n" if $failed;
    die "nginx reload: new workers not up within 15s\n" unless $ok;
    return $self;
}

sub stop {
    my ($self) = @_;
    my $master = $self->master_pid;
    if ($master) {
        my @workers = $self->worker_pids(all => 1);
        kill 'TERM', $master;
        my $gone = PayGW::Test::wait_until(sub { PayGW::Test::_gone($master) },
                                           timeout => 15);
        if (!$gone) {
            Test::More::diag("nginx master $master ignored TERM; killing");
            kill 'KILL', $master, @workers;
        }
        # workers may outlive the master by a moment
        PayGW::Test::wait_until(sub { !grep { !PayGW::Test::_gone($_) } @workers },
                                timeout => 5);
    }
    $self->{running} = 0;
    $self->_check_sanitizers;
    return;
}

# Sanitizer reports not seen before, as [where, text]: the log_path files
# (renamed *.seen once read) and the error log, where nginx sends stderr.
# The error log matters: libubsan is dlopen()ed with the module after
# nginx's setproctitle has overwritten the environment, so UBSAN_OPTIONS
# (log_path) may not reach it.
my $SAN_RE = qr/^.*(?:ERROR: \w+Sanitizer|runtime error:|SUMMARY: \w+Sanitizer).*$/m;

sub _new_sanitizer_reports {
    my ($self) = @_;
    return () unless $ENV{PAYGW_ASAN};
    my @found;
    for my $f (sort grep { !/\.seen$/ } glob "$self->{dir}/san/*") {
        push @found, [$f, PayGW::Test::_slurp($f)];
        rename $f, "$f.seen";
    }
    my $log = PayGW::Test::_slurp("$self->{dir}/error.log");
    my $new = substr $log, $self->{san_pos} // 0;
    $self->{san_pos} = length $log;
    if ($new =~ $SAN_RE) {
        my @l = split /\n/, substr($new, $-[0]);
        $#l = 199 if @l > 200;
        push @found, ["$self->{dir}/error.log", join("\n", @l)];
    }
    return @found;
}

# Each ASan/UBSan report fails the test, once.
sub _check_sanitizers {
    my ($self) = @_;
    for my $r ($self->_new_sanitizer_reports) {
        Test::More::fail("sanitizer report in $r->[0]");
        Test::More::diag($r->[1]);
    }
}

sub _teardown { $_[0]->stop }

1;
