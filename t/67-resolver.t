#!/usr/bin/perl
# The periodic resolver (paygw_resolver) settles payments whose provider
# answer was lost, with no client asking; and configuration errors of the
# payments layer fail `nginx -t` with the file and line.
use strict;
use warnings;

use File::Temp qw(tempdir);
use Test::More;

use PayGW::Test qw(wait_until);
use PayGW::Gateway;

my $gw = PayGW::Gateway->start(
    attempts => 1,
    provider_timeout => '10s',
    unknown_grace => '60s',
    extra_http => 'paygw_resolver 127.0.0.1:%%PORT%% key=ops interval=1s;',
);

# The acquirer charges, then the connection breaks before the answer.
$gw->sim->mode('reset_after', times => 1);

my $r = $gw->api(POST => '/v1/payments', idempotency_key => 'res-1',
                 json => PayGW::Gateway->payment_body(business_no => 'RES-1'));
is($r->{status}, 202, 'lost answer: 202') or diag($r->{body});
is($r->{json}{status}, 'unknown', '... status unknown, not guessed');

my $pno = $r->{json}{payment_no};

# Nobody asks: the resolver's own timer settles it.
ok(wait_until(sub {
       my $s = $gw->db->sql("SELECT status FROM paygw.payments "
                            . "WHERE payment_no = '$pno'");
       $s =~ /succeeded/;
   }, timeout => 15), 'the resolver settled the payment without a request');

is($gw->db->sql("SELECT COUNT(*) FROM paygw.outbox_events "
                . "WHERE object_no = '$pno' AND type = 'payment.succeeded'"),
   "1\n", 'with exactly one payment.succeeded event');

# nginx logs a request after answering it: wait for the line
ok(wait_until(sub { $gw->ngx->access_log =~ m{"POST /v1/admin/resolve HTTP/1.0" 200} },
              timeout => 5),
   'the resolver went through the authenticated API');

my ($charge) = grep { $_->{out_trade_no} eq $pno }
               @{ $gw->sim->charges->{charges} };
is($charge->{requests}, 1, 'charged once: the resolver only queried');

# A resolver naming a key that is not an admin key is a config error.
{
    my ($rc, $out) = $gw->ngx->test_config(http =>
        $gw->_http_conf(extra_http =>
            'paygw_resolver 127.0.0.1:%%PORT%% key=demo interval=1s;'));
    isnt($rc, 0, 'resolver with a merchant key: nginx -t fails');
    like($out, qr/paygw_resolver key "demo" is not an admin key/,
         '... saying why');
}

# A broken key file fails `nginx -t` with its file:line.
{
    my $dir = tempdir(CLEANUP => 1);
    my $keys = "$dir/keys.conf";
    open my $fh, '>', $keys or die $!;
    print $fh "# comment\nok1   secret-one   M1   merchant\n",
              "bad2  secret-two   M1\n";
    close $fh;

    my $conf = $gw->_http_conf;
    $conf =~ s{paygw_keys\s+\S+;}{paygw_keys $keys;};

    my ($rc, $out) = $gw->ngx->test_config(http => $conf);
    isnt($rc, 0, 'a key line with three words: nginx -t fails');
    like($out, qr/\Q$keys\E:3/, '... naming the file and line 3');

    open $fh, '>', $keys or die $!;
    print $fh "ok1 secret-one M1 superuser\n";
    close $fh;
    ($rc, $out) = $gw->ngx->test_config(http => $conf);
    like($out, qr/invalid role "superuser" in \Q$keys\E:1/,
         'an unknown role is named with file:line');

    open $fh, '>', $keys or die $!;
    print $fh "dup secret-one M1 merchant\ndup secret-two M1 viewer\n";
    close $fh;
    ($rc, $out) = $gw->ngx->test_config(http => $conf);
    like($out, qr/duplicate key id "dup"/, 'a duplicate key id is refused');
    unlike($out, qr/secret-one|secret-two/, 'secrets never appear in errors');

    $conf = $gw->_http_conf;
    $conf =~ s{paygw_keys\s+\S+;}{paygw_keys $dir/nonexistent.conf;};
    ($rc, $out) = $gw->ngx->test_config(http => $conf);
    like($out, qr/cannot open paygw_keys file/, 'a missing key file is named');
}

done_testing;
