#!/usr/bin/perl
# Webhook destinations are safe by default (SPEC §5): only https:// to
# public addresses; an address literal is checked, and a host name is
# resolved with nginx's resolver and every address it gives is checked
# (the request then goes to that checked address, with the name as Host
# and TLS server name).  paygw_webhook_allow_loopback on (make run, tests)
# also allows http:// and 127.0.0.0/8.  A refused destination is never
# contacted, and the event says why.
use strict;
use warnings;

use Test::More;

use PayGW::Gateway qw(sql_quote);
use PayGW::Receiver;
use PayGW::Test qw(wait_until);
use PayGW::Webhooks qw(webhook_http $WHSEC);

my $rx = PayGW::Receiver->start(secrets => [$WHSEC]);
my $dns = PayGW::Receiver::DNS->start(map => {
    'private.test' => '10.0.0.5',
    'rebind.test'  => '93.184.216.34,127.0.0.1',
    'loop.test'    => '127.0.0.1',
});
my $port = $rx->{port};

# the production configuration: allow_loopback off
my $gw = PayGW::Gateway->start(workers => 1,
    http => webhook_http(loopback => 'off', resolver => "127.0.0.1:$dns->{port}"));

sub outcome {
    my ($url) = @_;
    my $r = $gw->create(notify_url => $url);
    my $no = $r->{json}{payment_no} // return '';
    my $st;
    wait_until(sub {
        $st = $gw->sql1("SELECT CONCAT(status, ': ', COALESCE(last_error, '')) "
                        . "FROM outbox_events WHERE object_no = " . sql_quote($no));
        $st !~ /^pending/;
    }, timeout => 15);
    return $st;
}

my %cases = (
    "http://127.0.0.1:$port/hook/ok"   => qr/^failed: only https/,
    "https://127.0.0.1:$port/hook/ok"  => qr/^failed: a loopback address/,
    'https://10.1.2.3/hook'             => qr/^failed: a private/,
    'https://169.254.169.254/latest'    => qr/^failed: a private/,
    'https://192.168.0.1/'              => qr/^failed: a private/,
    'https://localhost/hook'            => qr/^failed: a local host name/,
    'https://metadata.internal/'        => qr/^failed: a local host name/,
    'https://2130706433/'               => qr/^failed: a local host name/,
    'https://127.1.1/'                  => qr/^failed: (a loopback|not a valid host)/,
    'https://user@example.com/'         => qr/^failed: user info/,
    'https://[::1]/'                    => qr/^failed: .*IPv6 literals/,
    'https://private.test/hook'         => qr/^failed: a private/,
    'https://rebind.test/hook'          => qr/^failed: a loopback address/,
    'https://nx.test/hook'              => qr/^failed: the host name does not resolve/,
);
for my $url (sort keys %cases) {
    like(outcome($url), $cases{$url}, "production: $url refused");
}
is(scalar @{ $rx->deliveries->{requests} }, 0, 'none of them reached the receiver');
ok(($gw->metric('paygw_webhook_deliveries_total{result="refused"}') // 0)
   >= keys %cases, 'paygw_webhook_deliveries_total{result="refused"} counts them');

# allow_loopback on: http://127.0.0.1 and a name resolving to it
$gw->reload(webhook_http(loopback => 'on', resolver => "127.0.0.1:$dns->{port}"));
like(outcome("http://127.0.0.1:$port/hook/ok"), qr/^delivered/,
     'allow_loopback on: http://127.0.0.1 delivered');
like(outcome("http://loop.test:$port/hook/ok"), qr/^delivered/,
     '... a name resolved to 127.0.0.1: delivered');
my ($last) = grep { $_->{path} eq '/hook/ok' } reverse @{ $rx->deliveries->{requests} };
is($last->{host}, "loop.test:$port", '... with the name in Host');
ok($last->{sig_ok}, '... signed');
like(outcome("https://private.test/hook"), qr/^failed: a private/,
     '... private addresses stay refused');

# ---- nginx -t refuses a bad webhook configuration -----------------------------

{
    my $dir = $gw->ngx->dir;
    my $bad = "$dir/bad_secrets.conf";
    open my $fh, '>', $bad or die $!;
    print $fh "# comment\nM100 whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\nM200 whsec_c2hvcnQ=\n";
    close $fh;
    (my $http = webhook_http()) =~ s{\S+/conf/demo/webhook_secrets\.conf}{$bad};
    my ($rc, $out) = $gw->test_config($http);
    isnt($rc, 0, 'nginx -t: a secret under 16 bytes is refused');
    like($out, qr/line 3/, '... naming the line');
    unlike($out, qr/c2hvcnQ|MfKQ9r8G/, '... and no secret');
    ($http = webhook_http()) =~ s/key=ops/key=demo/;
    ($rc, $out) = $gw->test_config($http);
    like($out, qr/not an admin key/, 'nginx -t: paygw_webhook needs an admin key');
    ($rc, $out) = $gw->test_config(webhook_http(retry => '5s soon'));
    like($out, qr/invalid retry delay "soon"/, 'nginx -t: a bad retry delay');
    ($rc, $out) = $gw->test_config(webhook_http(loopback => 'maybe'));
    like($out, qr/invalid value "maybe"/, 'nginx -t: allow_loopback on|off');
}

done_testing;
