#!/usr/bin/perl
# Webhook deliveries reuse connections (paygw_webhook_peer, docs/
# directives.md): a worker keeps the connection to a receiver once the
# answer was read whole, and the next delivery to the same address,
# scheme and host name goes over it.  A TLS connection verified for one
# name is never reused for another name at the same address.  A receiver
# that drops a kept connection it was asked to reuse costs no attempt:
# nginx sends the delivery again on a new connection.  With the plain
# variable destination (proxy_pass $paygw_webhook_url) every delivery
# makes a connection of its own, as before.
use strict;
use warnings;

use Test::More;

use PayGW::Gateway qw(sql_quote);
use PayGW::Receiver;
use PayGW::Test qw(wait_until);
use PayGW::Webhooks qw(webhook_http $WHSEC);

my $rx = PayGW::Receiver->start(secrets => [$WHSEC]);

# one worker: every delivery goes through the same set of connections
my $gw = PayGW::Gateway->start(workers => 1, http => webhook_http());

# waves(URL_FOR_I, WAVES, PER_WAVE): creates PER_WAVE payments, waits for
# their payment.succeeded to be delivered, WAVES times; the payment_nos
sub waves {
    my ($url_for, $waves, $per) = @_;
    my @nos;
    for my $w (1 .. $waves) {
        my @wave;
        for my $i (1 .. $per) {
            my $r = $gw->create(notify_url => $url_for->($i));
            push @wave, $r->{json}{payment_no} // 'none';
        }
        my $in = join(', ', map { sql_quote($_) } @wave);
        wait_until(sub {
            $gw->sql1("SELECT COUNT(*) FROM outbox_events WHERE object_no IN ($in) "
                      . "AND type = 'payment.succeeded' AND status = 'delivered'")
                == $per;
        }, timeout => 20) or diag "wave $w not delivered";
        push @nos, @wave;
    }
    return @nos;
}

sub hooks { grep { ($_->{path} // '') =~ m{^/hook/} } @{ $rx->deliveries->{requests} } }
sub distinct { my %s = map { ($_ // 'none') => 1 } @_; scalar keys %s }

# ---- kept connections -----------------------------------------------------

$rx->clear;
my @nos = waves(sub { $rx->url('/hook/ok') }, 4, 5);
my @hooks = hooks();
is(scalar @hooks, 20, '20 payments: 20 deliveries');
is(scalar(grep { $_->{sig_ok} && $_->{status} == 200 } @hooks), 20,
   '... each signed and answered 200 (with a body)');
my $conns = distinct(map { $_->{conn} } @hooks);
cmp_ok($conns, '<=', 10, "... over $conns connections (kept between waves)");

# ---- the plain variable destination: a connection per delivery -------------

$gw->reload(webhook_http(peer => 0));
$rx->clear;
waves(sub { $rx->url('/hook/ok') }, 4, 5);
@hooks = hooks();
is(scalar @hooks, 20, 'proxy_pass $paygw_webhook_url: 20 deliveries');
is(distinct(map { $_->{conn} } @hooks), 20, '... over 20 connections');

# ---- a receiver that drops a kept connection -------------------------------

$gw->reload(webhook_http());
$rx->clear;
@nos = waves(sub { $rx->url('/hook/one-per-conn') }, 3, 1);
@hooks = hooks();
my @dropped = grep { $_->{status} == 0 } @hooks;
cmp_ok(scalar @dropped, '>=', 1,
       'a kept connection was reused and the receiver dropped it')
    or diag explain \@hooks;
my $in = join(', ', map { sql_quote($_) } @nos);
is($gw->sql1("SELECT GROUP_CONCAT(CONCAT(status, ' ', attempts, ' ', last_status) "
             . "ORDER BY id) FROM outbox_events WHERE object_no IN ($in)"),
   join(',', ('delivered 1 200') x 3),
   '... every event still delivered at its first attempt (sent again on a new connection)');
is(scalar(grep { $_->{status} == 200 } @hooks), 3, '... 3 answered 200');

# ---- a notify_url cannot smuggle a request onto a kept connection ---------

my $r = $gw->create(notify_url => $rx->url("/hook/ok HTTP/1.1\r\nHost: x\r\n\r\nPOST /hook/ok"));
is($r->{status}, 400, 'a notify_url with CR LF: 400 at create');
like($r->{body}, qr/without spaces or control characters/, '... saying why');
$r = $gw->create(notify_url => $rx->url('/hook/ok?a=1 2'));
is($r->{status}, 400, 'a notify_url with a space: 400');

# a row written before the check: refused at delivery, nothing sent
$gw->reload(webhook_http(retry => '1s'));
$rx->clear;
my $no = $gw->create(notify_url => $rx->url('/hook/status/500'))->{json}{payment_no} // 'none';
$gw->db->sql("UPDATE outbox_events SET notify_url = CONCAT(notify_url, "
             . "'\r\nX: y'), status = 'pending', next_attempt_at = NOW(3) "
             . "WHERE object_no = " . sql_quote($no));
my $st;
wait_until(sub {
    $st = $gw->sql1("SELECT CONCAT(status, ': ', COALESCE(last_error, '')) FROM "
                    . "outbox_events WHERE object_no = " . sql_quote($no));
    $st =~ /^failed: spaces/;
}, timeout => 15);
like($st, qr/^failed: spaces and control characters are not allowed/,
     '... a stored notify_url with CR LF is refused at delivery');

# ---- TLS: a kept connection serves only the name it was verified for -------

my $pki = PayGW::Test::_mkdir('pki');
sub openssl {
    my ($rc, $out, $err) = PayGW::Test::_run(['openssl', @_]);
    die "openssl @_[0 .. 1]: $err" if $rc;
}
openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
        '-nodes', '-keyout', "$pki/ca.key", '-out', "$pki/ca.pem", '-days', '2',
        '-subj', '/CN=paygw test webhook ca',
        '-addext', 'basicConstraints=critical,CA:TRUE',
        '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
PayGW::Test::_spew("$pki/leaf.ext", "basicConstraints=CA:FALSE\n"
    . "subjectAltName=DNS:a.test,DNS:b.test\nextendedKeyUsage=serverAuth\n");
openssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
        '-nodes', '-keyout', "$pki/leaf.key", '-out', "$pki/leaf.csr",
        '-subj', '/CN=a.test');
openssl('x509', '-req', '-in', "$pki/leaf.csr", '-CA', "$pki/ca.pem",
        '-CAkey', "$pki/ca.key", '-set_serial', int(rand(1e9)) + 1, '-days', '2',
        '-extfile', "$pki/leaf.ext", '-out', "$pki/leaf.pem");

my $trx = PayGW::Receiver->start(secrets => [$WHSEC],
                                 tls => ["$pki/leaf.pem", "$pki/leaf.key"]);
my $dns = PayGW::Receiver::DNS->start(map => {'a.test' => '127.0.0.1',
                                              'b.test' => '127.0.0.1'});
(my $http = webhook_http(resolver => "127.0.0.1:$dns->{port}"))
    =~ s{/etc/ssl/certs/ca-certificates\.crt}{$pki/ca.pem} or die 'no CA line';
$gw->reload($http);

my $tport = $trx->{port};
waves(sub { ($_[0] % 2 ? 'https://a.test' : 'https://b.test') . ":$tport/hook/ok" }, 3, 2);
@hooks = grep { ($_->{path} // '') =~ m{^/hook/} } @{ $trx->deliveries->{requests} };
is(scalar @hooks, 6, 'https to a.test and b.test (one address): 6 deliveries');
is(scalar(grep { $_->{status} == 200 && $_->{sig_ok} } @hooks), 6, '... all verified and answered');
is(scalar(grep { ($_->{sni} // '') eq ($_->{host} =~ s/:\d+$//r) } @hooks), 6,
   '... each over TLS for the name it was sent to (SNI = Host)');
my %names_of;
$names_of{ $_->{conn} }{ $_->{host} } = 1 for @hooks;
is(scalar(grep { keys %{ $names_of{$_} } > 1 } keys %names_of), 0,
   '... no connection carried both names');
cmp_ok(scalar(keys %names_of), '<', 6, '... and connections were reused ('
       . scalar(keys %names_of) . ' for 6)');

done_testing;
