#!/usr/bin/perl
# TLS to providers (docs/operations.md "TLS to providers"): the provider
# location proxies with `proxy_pass https://...`, `proxy_ssl_verify on`,
# a trusted CA, `proxy_ssl_name` and SNI.  The simulator serves HTTPS with
# certificates made here with the openssl CLI.  A verified provider
# charges; a provider whose certificate another CA issued, or that is
# named otherwise, is never talked to: the charge is not sent, the payment
# is unknown (202, as for a provider it could not reach), and once TLS is
# fixed a GET settles it failed (charge_not_received).  Mutual TLS
# (proxy_ssl_certificate) works against a simulator that requires a client
# certificate, and without one (or with one from another CA) the handshake
# fails the same safe way.
use strict;
use warnings;

use Test::More;

use PayGW::Test qw(signed_http repo_root wait_until);

my $repo = repo_root();

# ---- certificates ---------------------------------------------------------

my $pki = PayGW::Test::_mkdir('pki');

sub openssl {
    my ($rc, $out, $err) = PayGW::Test::_run(['openssl', @_]);
    die "openssl @_[0 .. 1]: $err" if $rc;
    return $out;
}

# ca(NAME): a self-signed CA, NAME.pem and NAME.key
sub ca {
    my ($name) = @_;
    openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
            '-nodes', '-keyout', "$pki/$name.key", '-out', "$pki/$name.pem",
            '-days', '2', '-subj', "/CN=paygw test $name",
            '-addext', 'basicConstraints=critical,CA:TRUE',
            '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
}

# leaf(NAME, CA, CN, EXT): NAME.pem and NAME.key issued by CA
sub leaf {
    my ($name, $ca, $cn, $ext) = @_;
    PayGW::Test::_spew("$pki/$name.ext", "basicConstraints=CA:FALSE\n$ext\n");
    openssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
            '-nodes', '-keyout', "$pki/$name.key", '-out', "$pki/$name.csr",
            '-subj', "/CN=$cn");
    openssl('x509', '-req', '-in', "$pki/$name.csr", '-CA', "$pki/$ca.pem",
            '-CAkey', "$pki/$ca.key", '-set_serial', int(rand(1e9)) + 1,
            '-days', '2', '-extfile', "$pki/$name.ext", '-out', "$pki/$name.pem");
}

ca('ca1');
ca('ca2');
my $server_ext = "subjectAltName=DNS:acquirer.test\n"
                 . "extendedKeyUsage=serverAuth";
my $client_ext = "extendedKeyUsage=clientAuth";
leaf('server1', 'ca1', 'acquirer.test', $server_ext);   # the acquirer's
leaf('client1', 'ca1', 'paygw-gateway', $client_ext);   # ours, for mTLS
leaf('client2', 'ca2', 'paygw-intruder', $client_ext);  # another CA's

# ---- the stack ------------------------------------------------------------

my $redis = PayGW::Test::Redis->start;
my $db = PayGW::Test::MySQL->start;

# the acquirer over TLS; the second one requires a client certificate of ca1
my $tls_port = PayGW::Test::free_port();
my $sim = PayGW::Test::Sim->start(no_keys => 1, args => [
    '--tls-port', $tls_port, '--tls-cert', "$pki/server1.pem",
    '--tls-key', "$pki/server1.key"]);
my $mtls_port = PayGW::Test::free_port();
my $msim = PayGW::Test::Sim->start(no_keys => 1, args => [
    '--tls-port', $mtls_port, '--tls-cert', "$pki/server1.pem",
    '--tls-key', "$pki/server1.key", '--tls-client-ca', "$pki/ca1.pem"]);

# conf(port => P, ssl => TEXT): the gateway with one channel, bank_card,
# whose location proxies to https://127.0.0.1:P with the proxy_ssl_* TEXT
sub conf {
    my (%o) = @_;
    my $rp = $redis->port;
    my $mp = $db->port;
    my $pw = $db->password_file;
    return <<"CONF";
    paygw_zone  paygw:1m;
    upstream paygw_redis { server 127.0.0.1:$rp; keepalive 16; }
    paygw_mysql main host=127.0.0.1 port=$mp user=paygw password_file=$pw
                database=paygw max_conns=8 connect_timeout=1s
                query_timeout=2s;
    paygw_keys  $repo/conf/demo/keys.conf;
    paygw_channel bank_card location=/_paygw/bank merchant_id=ACQ-M100
                  secret_file=$repo/conf/demo/acquirer.secret
                  attempts=2 unknown_grace=9s breaker_failures=0;
    upstream paygw_acquirer { server 127.0.0.1:$o{port}; keepalive 16; }

    server {
        listen 127.0.0.1:%%PORT%%;
        location = /_paygw/redis {
            internal;
            paygw_redis_pass paygw_redis;
            paygw_redis_timeout 5s;
        }
        location = /_paygw/mysql { internal; paygw_mysql_pass main; }
        location /_paygw/bank/ {
            internal;
            proxy_pass https://paygw_acquirer/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_connect_timeout 1s;
            proxy_send_timeout 2s;
            proxy_read_timeout 2s;
            subrequest_output_buffer_size 64k;

            proxy_ssl_verify on;
            proxy_ssl_verify_depth 2;
            proxy_ssl_server_name on;
            proxy_ssl_protocols TLSv1.2 TLSv1.3;
            $o{ssl}
        }
        location /v1/ { paygw_api; }
    }
CONF
}

my $ngx = PayGW::Test::Nginx->new(http => conf(port => $tls_port, ssl => <<"SSL"))->start;
            proxy_ssl_trusted_certificate $pki/ca1.pem;
            proxy_ssl_name acquirer.test;
SSL

my $n = 0;
sub create {
    my ($amount) = @_;
    $n++;
    return signed_http(POST => $ngx->url('/v1/payments'),
        key_id => 'demo', secret => 'demo-secret', timeout => 30,
        headers => {'Idempotency-Key' => "tls-$$-$n"},
        json => {business_no => "TLS-$$-$n", amount => $amount,
                 currency => 'CNY', channel => 'bank_card', subject => 'TLS',
                 card => {number => '4242424242424242', exp_month => 12,
                          exp_year => 2030, cvc => '123'}});
}

sub stored {
    my ($no) = @_;
    my $s = $db->sql("SELECT status FROM paygw.payments WHERE payment_no = '$no'");
    chomp $s;
    return $s;
}

sub charges_of {
    my ($s) = @_;
    return scalar @{ $s->charges->{charges} };
}

sub tls_requests {
    my ($s) = @_;
    return grep { $_->{path} =~ m{^/acquirer/} } @{ $s->requests };
}

# ---- verified TLS ---------------------------------------------------------

my $r = create(1001);
is($r->{status}, 201, 'verified TLS: the charge succeeds') or diag($r->{body});
is($r->{json}{status}, 'succeeded', 'verified TLS: status succeeded');
is(stored($r->{json}{payment_no} // ''), 'succeeded', 'verified TLS: stored succeeded');
my @req = tls_requests($sim);
is(scalar @req, 1, 'the acquirer got one request');
ok($req[0]{tls}, 'over TLS');
is(charges_of($sim), 1, 'one charge at the acquirer');

# A certificate nginx cannot verify: the charge never leaves nginx.  What
# the merchant gets is the module's answer for a provider it could not reach
# (the same as for a refused connection): unknown, never succeeded.
sub refused_safely {
    my ($name, $s, $log_re) = @_;
    my $before = charges_of($s);
    my $reqs = () = tls_requests($s);
    my $log_pos = length $ngx->error_log;
    my $r = create(2002);
    my $status = $r->{json} ? $r->{json}{status} // '' : '';
    # as for any provider that did not answer (t/64): 202 unknown
    is($r->{status}, 202, "$name: 202") or diag($r->{body});
    is($status, 'unknown', "$name: status unknown, never succeeded");
    my $no = $r->{json} && $r->{json}{payment_no};
    is($no && stored($no), 'unknown', "$name: stored unknown");
    is(charges_of($s), $before, "$name: no charge at the acquirer");
    is(scalar(() = tls_requests($s)), $reqs, "$name: no request reached it");
    like(substr($ngx->error_log, $log_pos), $log_re, "$name: nginx logs why");
    return $r;
}

$ngx->reload(http => conf(port => $tls_port, ssl => <<"SSL"));
            proxy_ssl_trusted_certificate $pki/ca2.pem;
            proxy_ssl_name acquirer.test;
SSL
my $other_ca = refused_safely('a certificate of another CA', $sim,
                              qr/upstream SSL certificate verify error/);

$ngx->reload(http => conf(port => $tls_port, ssl => <<"SSL"));
            proxy_ssl_trusted_certificate $pki/ca1.pem;
            proxy_ssl_name payments.example;
SSL
my $wrong_name = refused_safely('a certificate for another name', $sim,
    qr/upstream SSL certificate does not match "payments\.example"/);
is($wrong_name->{status}, $other_ca->{status},
   'both answered alike') or diag($wrong_name->{body});

# TLS fixed: a GET asks the acquirer, which never got the charge, so the
# payment is settled failed once unknown_grace has passed (9 s here: no
# less than the create's own budget, 1 + 2 s of MySQL and 2 x (1 + 2) s
# of acquirer tries, which nginx -t checks)
$ngx->reload(http => conf(port => $tls_port, ssl => <<"SSL"));
            proxy_ssl_trusted_certificate $pki/ca1.pem;
            proxy_ssl_name acquirer.test;
SSL
for my $case ([$other_ca, 'another CA'], [$wrong_name, 'another name']) {
    my ($first, $name) = @$case;
    my $no = $first->{json} && $first->{json}{payment_no};
    SKIP: {
        skip "$name: no payment_no to settle", 2 unless $no;
        my $got;
        wait_until(sub {
            $got = signed_http(GET => $ngx->url("/v1/payments/$no"),
                               key_id => 'demo', secret => 'demo-secret');
            return ($got->{json}{status} // '') eq 'failed';
        }, timeout => 30, interval => 0.5);
        is($got->{json}{status}, 'failed', "$name, TLS fixed: settled failed")
            or diag($got->{body});
        is($got->{json}{failure_code}, 'charge_not_received',
           "$name: charge_not_received");
    }
}
is(charges_of($sim), 1, 'still the one charge at the acquirer');

# ---- mutual TLS -----------------------------------------------------------

$ngx->reload(http => conf(port => $mtls_port, ssl => <<"SSL"));
            proxy_ssl_trusted_certificate $pki/ca1.pem;
            proxy_ssl_name acquirer.test;
            proxy_ssl_certificate $pki/client1.pem;
            proxy_ssl_certificate_key $pki/client1.key;
SSL
$r = create(3003);
is($r->{status}, 201, 'mTLS: the charge succeeds') or diag($r->{body});
is($r->{json}{status}, 'succeeded', 'mTLS: status succeeded');
@req = tls_requests($msim);
is(scalar @req, 1, 'mTLS: the acquirer got one request');
is($req[0]{tls} && $req[0]{tls}{client}, 'paygw-gateway',
   'mTLS: it saw our client certificate');

$ngx->reload(http => conf(port => $mtls_port, ssl => <<"SSL"));
            proxy_ssl_trusted_certificate $pki/ca1.pem;
            proxy_ssl_name acquirer.test;
SSL
# (with TLS 1.3 the server checks the client certificate after nginx's side
# of the handshake is done: nginx then sees the connection closed)
my $mtls_log = qr/SSL|upstream prematurely closed/;
refused_safely('mTLS without a client certificate', $msim, $mtls_log);

$ngx->reload(http => conf(port => $mtls_port, ssl => <<"SSL"));
            proxy_ssl_trusted_certificate $pki/ca1.pem;
            proxy_ssl_name acquirer.test;
            proxy_ssl_certificate $pki/client2.pem;
            proxy_ssl_certificate_key $pki/client2.key;
SSL
refused_safely('mTLS with a client certificate of another CA', $msim, $mtls_log);

done_testing;
