package PayGW::Webhooks;

# The http{} configuration of the webhook tests: the harness's default
# one ($PayGW::Gateway::DEFAULT_HTTP) with the sender added.  What is
# added is written out here, as a test would show it:
#
#   paygw_webhook 127.0.0.1:%%PORT%% key=ops interval=200ms lease=%%LEASE%%;
#   paygw_webhook_secrets %%REPO%%/conf/demo/webhook_secrets.conf;
#   paygw_webhook_retry %%RETRY%%;
#   paygw_webhook_allow_loopback %%LOOPBACK%%;
#   ...
#   upstream paygw_webhook { paygw_webhook_peer ...; }
#   location = /_paygw/webhook { internal;
#       proxy_pass $paygw_webhook_scheme://paygw_webhook$paygw_webhook_uri; ... }

use strict;
use warnings;

use Exporter qw(import);
use PayGW::Gateway ();

our @EXPORT_OK = qw(webhook_http $WHSEC create_hooked event_rows);

our $WHSEC = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';

our $HTTP_ADD = <<'CONF';
    paygw_webhook 127.0.0.1:%%PORT%% key=ops interval=%%INTERVAL%% lease=%%LEASE%%
                  batch=%%BATCH%% parallel=%%PARALLEL%%%%HANDOFF%%;
    paygw_webhook_secrets %%REPO%%/conf/demo/webhook_secrets.conf;
    paygw_webhook_retry %%RETRY%%;
    paygw_webhook_allow_loopback %%LOOPBACK%%;
    upstream paygw_webhook {
        paygw_webhook_peer keepalive=16 timeout=2s;
    }
    # the receivers speak plain http: creates may name http:// URLs, and
    # delivery's own checks (allow_loopback) decide where they may go
    paygw_notify_http on;
%%RESOLVER%%
CONF

our $LOCATION = <<'CONF';
        location = /_paygw/webhook {
            internal;
            proxy_pass %%PROXY_PASS%%;
            proxy_next_upstream error non_idempotent;
            proxy_next_upstream_tries 2;
            proxy_next_upstream_timeout 2s;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $paygw_webhook_authority;
            proxy_ssl_name $paygw_webhook_host;
            proxy_connect_timeout 2s;
            proxy_send_timeout 3s;
            proxy_read_timeout 3s;
            proxy_ssl_server_name on;
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate /etc/ssl/certs/ca-certificates.crt;
            subrequest_output_buffer_size 4k;
        }

CONF

# webhook_http(retry => '1s 1s 1s', lease => '10s', loopback => 'on',
#              batch => 100, parallel => 100, resolver => '127.0.0.1:PORT',
#              interval => '200ms', handoff => N (the default: none given),
#              peer => 1): the
#              http{} text (peer => 0: proxy_pass $paygw_webhook_url).
sub webhook_http {
    my (%o) = @_;
    my $http = $PayGW::Gateway::DEFAULT_HTTP;
    my $add = $HTTP_ADD;
    $add =~ s/%%RETRY%%/$o{retry} \/\/ '1s 1s 1s'/e;
    $add =~ s/%%LEASE%%/$o{lease} \/\/ '10s'/e;
    $add =~ s/%%INTERVAL%%/$o{interval} \/\/ '200ms'/e;
    $add =~ s/%%HANDOFF%%/defined $o{handoff} ? " handoff=$o{handoff}" : ''/e;
    $add =~ s/%%LOOPBACK%%/$o{loopback} \/\/ 'on'/e;
    $add =~ s/%%BATCH%%/$o{batch} \/\/ 100/e;
    $add =~ s/%%PARALLEL%%/$o{parallel} \/\/ 100/e;
    $add =~ s/%%RESOLVER%%/$o{resolver} ? "    resolver $o{resolver} ipv6=off valid=1s;" : ''/e;
    $http =~ s/(    paygw_keys[^\n]*\n)/$1$add/ or die 'no paygw_keys';
    # peer => 0: the plain variable destination (a connection each)
    my $location = $LOCATION;
    my $pass = ($o{peer} // 1)
        ? '$paygw_webhook_scheme://paygw_webhook$paygw_webhook_uri'
        : '$paygw_webhook_url';
    $location =~ s/%%PROXY_PASS%%/$pass/;
    $http =~ s/(        location \/v1\/ )/$location$1/ or die 'no /v1/';
    return $http;
}

# create_hooked($gw, $rx, N, PATH): N payments whose notify_url is the
# receiver's PATH; their payment_nos ('none' for a create that failed)
sub create_hooked {
    my ($gw, $rx, $n, $path) = @_;
    my @nos;
    for (1 .. $n) {
        my $r = $gw->create(notify_url => $rx->url($path));
        push @nos, $r->{json}{payment_no} // 'none';
    }
    return @nos;
}

# event_rows($gw, PAYMENT_NO...): "status attempts" of each payment's
# payment.succeeded event, comma separated, oldest first
sub event_rows {
    my ($gw, @nos) = @_;
    my $in = join(', ', map { PayGW::Gateway::sql_quote($_) } @nos);
    return $gw->sql1("SELECT GROUP_CONCAT(CONCAT(status, ' ', attempts) ORDER BY id) "
                     . "FROM outbox_events WHERE object_no IN ($in) "
                     . "AND type = 'payment.succeeded'");
}

1;
