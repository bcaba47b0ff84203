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

# One try per call; the periodic resolver asks this server's own API,
# with the admin key ops, every second.  conf(keys => FILE, resolver_key
# => KEY) changes the key file or the resolver's key (nginx -t below).
sub conf {
    my (%o) = @_;
    my $keys = $o{keys} // '%%REPO%%/conf/demo/keys.conf';
    my $resolver_key = $o{resolver_key} // 'ops';
    return <<"EOF";
    paygw_zone  paygw:1m;
    upstream paygw_redis { server 127.0.0.1:%%REDIS_PORT%%; keepalive 16; }
    paygw_mysql main host=127.0.0.1 port=%%MYSQL_PORT%% user=paygw
                password_file=%%MYSQL_PASSWORD_FILE%%
                database=paygw max_conns=8 query_timeout=10s;
    paygw_keys  $keys;

    paygw_channel bank_card location=/_paygw/bank merchant_id=ACQ-M100
                  secret_file=%%REPO%%/conf/demo/acquirer.secret
                  attempts=1 unknown_grace=60s breaker_failures=0;
    upstream paygw_acquirer { server 127.0.0.1:%%SIM_PORT%%; keepalive 16; }

    paygw_resolver 127.0.0.1:%%PORT%% key=$resolver_key interval=1s;

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
            proxy_pass http://paygw_acquirer/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_connect_timeout 1s;
            proxy_send_timeout 10s;
            proxy_read_timeout 10s;
            subrequest_output_buffer_size 64k;
        }
        location /v1/ { paygw_api; }
    }
EOF
}

my $gw = PayGW::Gateway->start(http => conf());

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
    my ($rc, $out) = $gw->test_config(conf(resolver_key => 'demo'));
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

    my $conf = conf(keys => $keys);

    my ($rc, $out) = $gw->test_config($conf);
    isnt($rc, 0, 'a key line with three words: nginx -t fails');
    like($out, qr/\Q$keys\E:3/, '... naming the file and line 3');

    open $fh, '>', $keys or die $!;
    print $fh "ok1 secret-one M1 superuser\n";
    close $fh;
    ($rc, $out) = $gw->test_config($conf);
    like($out, qr/invalid role "superuser" in \Q$keys\E:1/,
         'an unknown role is named with file:line');

    open $fh, '>', $keys or die $!;
    print $fh "dup secret-one M1 merchant\ndup secret-two M1 viewer\n";
    close $fh;
    ($rc, $out) = $gw->test_config($conf);
    like($out, qr/duplicate key id "dup"/, 'a duplicate key id is refused');
    unlike($out, qr/secret-one|secret-two/, 'secrets never appear in errors');

    $conf = conf(keys => "$dir/nonexistent.conf");
    ($rc, $out) = $gw->test_config($conf);
    like($out, qr/cannot open paygw_keys file/, 'a missing key file is named');
}

done_testing;
