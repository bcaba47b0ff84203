package PayGW::Gateway;

# The whole gateway for a test: Redis, MariaDB (schema applied), the
# provider simulator and nginx with the module, configured the way
# nginx.conf.example is.  Options tune what tests need to vary.
#
#   my $gw = PayGW::Gateway->start(workers => 1, attempts => 2,
#                                  provider_timeout => '1s',
#                                  unknown_grace => '1s', extra_http => '',
#                                  extra_server => '', redis_timeout => '1s');
#   my $res = $gw->api(POST => '/v1/payments', json => {...},
#                      idempotency_key => 'k1', key => 'demo');
#
# Demo keys (conf/demo/keys.conf): demo/demo-secret M100 merchant,
# viewer/viewer-secret M100 viewer, ops/ops-secret * admin.

use strict;
use warnings;

use JSON::PP ();
use PayGW::Test qw(http sign_request repo_root);

my %SECRET = (demo => 'demo-secret', viewer => 'viewer-secret',
              ops => 'ops-secret');

sub start {
    my ($class, %o) = @_;
    my $self = bless { o => \%o }, $class;

    $self->{redis} = PayGW::Test::Redis->start;
    $self->{db} = PayGW::Test::MySQL->start;
    $self->{sim} = PayGW::Test::Sim->start;
    $self->{ngx} = PayGW::Test::Nginx->new(
        workers => $o{workers} // 1,
        error_log_level => $o{error_log_level} // 'info',
        http => $self->_http_conf(%o),
    );
    $self->{ngx}->start;

    return $self;
}

sub redis { $_[0]{redis} }
sub db    { $_[0]{db} }
sub sim   { $_[0]{sim} }
sub ngx   { $_[0]{ngx} }
sub url   { $_[0]{ngx}->url($_[1] // '') }

sub _http_conf {
    my ($self, %o) = @_;
    my $repo = repo_root();
    my $rp = $self->{redis}->port;
    my $mp = $self->{db}->port;
    my $pw = $self->{db}->password_file;
    my $sp = $self->{sim}->port;
    my $attempts = $o{attempts} // 3;
    my $grace = $o{unknown_grace} // '60s';
    # the circuit breaker is off unless a test asks for it: fault tests
    # study one provider call at a time (t/74 tests the breaker)
    my $breaker = $o{breaker} // 'breaker_failures=0';
    my $pt = $o{provider_timeout} // '10s';
    my $rt = $o{redis_timeout} // '5s';   # generous: CI machines may be loaded
    my $qt = $o{query_timeout} // '10s';
    my $extra_http = $o{extra_http} // '';
    my $extra_server = $o{extra_server} // '';
    my $qr = ($o{qr_channels} // 1) ? $self->_qr_channels(%o) : '';

    return <<"CONF";
    paygw_zone  paygw:1m;
    upstream paygw_redis { server 127.0.0.1:$rp; keepalive 16; }
    paygw_mysql main host=127.0.0.1 port=$mp user=paygw password_file=$pw
                database=paygw max_conns=8 query_timeout=$qt;
    paygw_keys  $repo/conf/demo/keys.conf;
    paygw_channel bank_card location=/_paygw/bank merchant_id=ACQ-M100
                  secret_file=$repo/conf/demo/acquirer.secret
                  attempts=$attempts unknown_grace=$grace $breaker;
    upstream paygw_acquirer { server 127.0.0.1:$sp; keepalive 16; }
$qr
    upstream paygw_alipay { server 127.0.0.1:$sp; keepalive 16; }
    upstream paygw_wechat { server 127.0.0.1:$sp; keepalive 16; }
    log_format paygw '\$remote_addr "\$request" \$status \$request_time';
    $extra_http

    server {
        listen 127.0.0.1:%%PORT%%;
        access_log %%TESTDIR%%/access.log paygw;
        client_body_buffer_size 16k;
        client_header_timeout 10s;
        client_body_timeout 10s;
        error_page 400 405 408 413 414 429 494 501 505 /_paygw/error;
        location = /_paygw/error { internal; paygw_error; }

        location = /_paygw/redis {
            internal;
            paygw_redis_pass paygw_redis;
            paygw_redis_timeout $rt;
        }
        location = /_paygw/mysql { internal; paygw_mysql_pass main; }
        location /_paygw/bank/ {
            internal;
            proxy_pass http://paygw_acquirer/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_connect_timeout 1s;
            proxy_send_timeout $pt;
            proxy_read_timeout $pt;
            subrequest_output_buffer_size 64k;
        }
        location /_paygw/alipay/ {
            internal;
            proxy_pass http://paygw_alipay/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_connect_timeout 1s;
            proxy_send_timeout $pt;
            proxy_read_timeout $pt;
            subrequest_output_buffer_size 64k;
        }
        location /_paygw/wechat/ {
            internal;
            proxy_pass http://paygw_wechat/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_connect_timeout 1s;
            proxy_send_timeout $pt;
            proxy_read_timeout $pt;
            subrequest_output_buffer_size 64k;
        }
        location /v1/ { paygw_api; }
        location = /healthz { paygw_health live; }
        location = /readyz { paygw_health ready; }
        location = /metrics { paygw_metrics; }
        $extra_server
    }
CONF
}

# The alipay and wechat channels, keyed with the simulator's key files.
# Options: qr_channels => 0 (neither is enabled), qr_breaker (breaker parameters of both, default off),
# alipay_extra / wechat_extra (more parameters), wechat_platform (which
# platform keys the gateway trusts: [1, 2] by default).
sub _qr_channels {
    my ($self, %o) = @_;
    my $sim = $self->{sim};
    my $k = sub { $sim->key_file($_[0]) };
    my $attempts = $o{attempts} // 3;
    my $grace = $o{unknown_grace} // '60s';
    my $breaker = $o{qr_breaker} // 'breaker_failures=0';
    my $notify = 'http://127.0.0.1:%%PORT%%/v1/notify';
    my $platform = join ' ', map {
        'platform_key=' . $sim->wechat_serial($_) . ':'
            . $k->("wechat_platform${_}_public.pem")
    } @{ $o{wechat_platform} // [1, 2] };
    my $ae = $o{alipay_extra} // '';
    my $we = $o{wechat_extra} // '';

    return <<"CONF";
    paygw_channel alipay location=/_paygw/alipay
                  app_id=@{[ $sim->alipay_app_id ]}
                  private_key=@{[ $k->('alipay_app_private.pem') ]}
                  alipay_public_key=@{[ $k->('alipay_public.pem') ]}
                  notify_url=$notify/alipay
                  attempts=$attempts unknown_grace=$grace $breaker $ae;
    paygw_channel wechat location=/_paygw/wechat
                  merchant_id=@{[ $sim->wechat_mchid ]}
                  app_id=@{[ $sim->wechat_appid ]}
                  private_key=@{[ $k->('wechat_merchant_private.pem') ]}
                  serial_no=@{[ $sim->merchant_serial ]}
                  apiv3_key_file=@{[ $k->('wechat_apiv3.key') ]}
                  $platform
                  notify_url=$notify/wechat
                  attempts=$attempts unknown_grace=$grace $breaker $we;
CONF
}

# api(METHOD, PATH, json => DATA | body => BYTES, key => 'demo',
#     secret => ..., idempotency_key => K | idempotency_header => RAW,
#     ts => ..., nonce => ..., headers => {...}, timeout => S)
sub api {
    my ($self, $method, $path, %o) = @_;
    my $body = exists $o{json}
        ? JSON::PP->new->canonical->encode($o{json}) : ($o{body} // '');
    my $key = $o{key} // 'demo';
    my $secret = $o{secret} // $SECRET{$key} // 'nope';
    my %h = %{ $o{headers} // {} };
    $h{Authorization} //= sign_request($key, $secret, $method, $path, $body,
        (defined $o{ts} ? (ts => $o{ts}) : ()),
        (defined $o{nonce} ? (nonce => $o{nonce}) : ()));
    $h{'Content-Type'} //= 'application/json' if length $body;
    $h{'Idempotency-Key'} = $o{idempotency_key} if defined $o{idempotency_key};
    $h{'Idempotency-Key'} = $o{idempotency_header}
        if defined $o{idempotency_header};
    return http($method, $self->url($path), body => $body, headers => \%h,
                timeout => $o{timeout} // 30);
}

# A valid create body (bank_card unless channel => ...); %over replaces
# fields.  QR channels get no card.
sub payment_body {
    my ($class, %over) = @_;
    my %b = (business_no => 'ORD-' . int(rand(1e12)), amount => 1999,
             currency => 'CNY', channel => 'bank_card', subject => 'Tea',
             card => { number => '4242424242424242', exp_month => 12,
                       exp_year => 2030, cvc => '123' });
    delete $b{card} if ($over{channel} // 'bank_card') ne 'bank_card';
    @b{keys %over} = values %over;
    delete $b{$_} for grep { !defined $b{$_} } keys %b;
    return \%b;
}

# metric('paygw_circuit_state{channel="alipay"}'): the value of that one
# series in /metrics now; undef when it is not there.
sub metric {
    my ($self, $series) = @_;
    my ($v) = http(GET => $self->url('/metrics'))->{body} =~ /^\Q$series\E (\S+)$/m;
    return $v;
}

# event_count(OBJECT_NO, TYPE): outbox events of that type for the object.
sub event_count {
    my ($self, $no, $type) = @_;
    my $c = $self->db->sql("SELECT COUNT(*) FROM paygw.outbox_events "
                           . "WHERE object_no = '$no' AND type = '$type'");
    chomp $c;
    return $c + 0;
}

sub count_rows {
    my ($self, $table) = @_;
    my $n = $self->db->sql("SELECT COUNT(*) FROM paygw.$table");
    chomp $n;
    return $n + 0;
}

1;
