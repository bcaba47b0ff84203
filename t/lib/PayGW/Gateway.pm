package PayGW::Gateway;

# The whole gateway for a test: Redis, MariaDB (schema applied), the
# provider simulator and nginx with the module.  Like nginx's own tests,
# a test file shows the http{} configuration it runs:
#
#   my $gw = PayGW::Gateway->start(workers => 2, http => <<'EOF');
#       paygw_zone paygw:1m;
#       upstream paygw_redis { server 127.0.0.1:%%REDIS_PORT%%; keepalive 16; }
#       ...
#   EOF
#   my $res = $gw->api(POST => '/v1/payments', json => {...},
#                      idempotency_key => 'k1', key => 'demo');
#
# The harness fills these placeholders (and PayGW::Test::Nginx's own
# %%PORT%%, %%TESTDIR%%, %%MODULE%%):
#
#   %%REDIS_PORT%%  %%MYSQL_PORT%%  %%MYSQL_PASSWORD_FILE%%  %%SIM_PORT%%
#   %%REPO%%        the repository (conf/demo/keys.conf, acquirer.secret)
#   %%SIM_KEYS%%    the simulator's Alipay and WeChat Pay key files
#   %%ALIPAY_APP_ID%%  %%WECHAT_MCHID%%  %%WECHAT_APPID%%
#   %%WECHAT_MERCHANT_SERIAL%%  %%WECHAT_SERIAL_1%%  %%WECHAT_SERIAL_2%%
#
# A file that tests no directive of its own may leave http out and runs
# $DEFAULT_HTTP below, the shape of nginx.conf.example.  The older option
# form, start(attempts => 2, provider_timeout => '1s', unknown_grace =>
# '1s', extra_http => '', extra_server => '', ...), still works: it builds
# the same configuration with those values (_http_conf).
#
# Other options: workers => N, error_log_level => LEVEL, vars => {NAME =>
# VALUE} (more placeholders, for the file's own paths), test_module => 1
# (load t/module/, for a location with paygw_test_backend), and
# share => $other_gateway (use its Redis, MariaDB and simulator: a second
# nginx on the same backends).
#
# Demo keys (conf/demo/keys.conf): demo/demo-secret M100 merchant,
# viewer/viewer-secret M100 viewer, ops/ops-secret * admin.

use strict;
use warnings;

use Exporter qw(import);
use JSON::PP ();
use Test::More ();
use PayGW::Test qw(http sign_request repo_root wait_until);
use PayGW::Cluster;
use PayGW::Galera;

our @EXPORT_OK = qw(err_code sql_quote);

my %SECRET = (demo => 'demo-secret', viewer => 'viewer-secret',
              ops => 'ops-secret');

# The default http{} configuration: every backend and channel the gateway
# has, with generous timeouts (test machines may be loaded), retries on
# (attempts=3), payments left unknown for a minute before a provider that
# never saw them counts as "not charged" (unknown_grace=60s), and the
# circuit breakers off (breaker_failures=0; t/74 and t/77 test them).
our $DEFAULT_HTTP = <<'CONF';
    paygw_zone  paygw:1m;
    upstream paygw_redis { server 127.0.0.1:%%REDIS_PORT%%; keepalive 16; }
    paygw_mysql main host=127.0.0.1 port=%%MYSQL_PORT%% user=paygw
                password_file=%%MYSQL_PASSWORD_FILE%%
                database=paygw max_conns=8 query_timeout=10s;
    paygw_keys  %%REPO%%/conf/demo/keys.conf;
    paygw_fees  %%REPO%%/conf/demo/fees.conf;

    paygw_channel bank_card location=/_paygw/bank merchant_id=ACQ-M100
                  secret_file=%%REPO%%/conf/demo/acquirer.secret
                  attempts=3 unknown_grace=60s breaker_failures=0;
    paygw_channel alipay location=/_paygw/alipay app_id=%%ALIPAY_APP_ID%%
                  private_key=%%SIM_KEYS%%/alipay_app_private.pem
                  alipay_public_key=%%SIM_KEYS%%/alipay_public.pem
                  notify_url=http://127.0.0.1:%%PORT%%/v1/notify/alipay
                  attempts=3 unknown_grace=60s breaker_failures=0;
    paygw_channel wechat location=/_paygw/wechat
                  merchant_id=%%WECHAT_MCHID%% app_id=%%WECHAT_APPID%%
                  private_key=%%SIM_KEYS%%/wechat_merchant_private.pem
                  serial_no=%%WECHAT_MERCHANT_SERIAL%%
                  apiv3_key_file=%%SIM_KEYS%%/wechat_apiv3.key
                  platform_key=%%WECHAT_SERIAL_1%%:%%SIM_KEYS%%/wechat_platform1_public.pem
                  platform_key=%%WECHAT_SERIAL_2%%:%%SIM_KEYS%%/wechat_platform2_public.pem
                  notify_url=http://127.0.0.1:%%PORT%%/v1/notify/wechat
                  attempts=3 unknown_grace=60s breaker_failures=0;

    upstream paygw_acquirer { server 127.0.0.1:%%SIM_PORT%%; keepalive 16; }
    upstream paygw_alipay   { server 127.0.0.1:%%SIM_PORT%%; keepalive 16; }
    upstream paygw_wechat   { server 127.0.0.1:%%SIM_PORT%%; keepalive 16; }

    # statement downloads: the hosts the providers may point at
    paygw_statement_hosts wechat 127.0.0.1:%%SIM_PORT%%;
    paygw_statement_hosts alipay 127.0.0.1:%%SIM_PORT%%;

    log_format paygw '$remote_addr "$request" $status $request_time';

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
        location /_paygw/alipay/ {
            internal;
            proxy_pass http://paygw_alipay/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_connect_timeout 1s;
            proxy_send_timeout 10s;
            proxy_read_timeout 10s;
            subrequest_output_buffer_size 64k;
        }
        location /_paygw/wechat/ {
            internal;
            proxy_pass http://paygw_wechat/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_connect_timeout 1s;
            proxy_send_timeout 10s;
            proxy_read_timeout 10s;
            subrequest_output_buffer_size 64k;
        }

        location /v1/ { paygw_api; }
        location = /healthz { paygw_health live; }
        location = /readyz { paygw_health ready; }
        location = /metrics { paygw_metrics; }
    }
CONF

# the options of the older form, which build the http{} text
my @CONF_OPTIONS = qw(attempts unknown_grace breaker provider_timeout
                      redis_timeout query_timeout extra_http extra_server
                      qr_channels qr_breaker alipay_extra wechat_extra
                      wechat_platform);

sub start {
    my ($class, %o) = @_;
    my $self = bless { o => \%o }, $class;

    if (my $other = $o{share}) {
        @$self{qw(redis db sim)} = @$other{qw(redis db sim)};
    } else {
        # all three at once, then wait for each: MariaDB and node take
        # their time to come up
        $self->{redis} = $o{redis_cluster} // PayGW::Test::ha_backends()
            ? PayGW::Test::RedisCluster->start(no_wait => 1)
            : PayGW::Test::Redis->start(no_wait => 1);
        $self->{db} = $o{galera} // PayGW::Test::ha_backends()
            ? PayGW::Test::Galera->start(no_wait => 1)
            : PayGW::Test::MySQL->start(no_wait => 1);
        $self->{sim} = PayGW::Test::Sim->start(no_wait => 1);
        $self->{$_}->ready for qw(redis db sim);
    }
    my $http = $o{http};
    if (!defined $http) {
        $http = (grep { exists $o{$_} } @CONF_OPTIONS) ? $self->_http_conf(%o)
                                                       : $DEFAULT_HTTP;
    }
    $http = $self->cluster_conf($http);
    $self->{ngx} = PayGW::Test::Nginx->new(
        test_module => $o{test_module},
        workers => $o{workers} // 1,
        error_log_level => $o{error_log_level} // 'info',
        vars => {%{ $self->conf_vars }, %{ $o{vars} // {} }},
        http => $http,
    );
    $self->{ngx}->start;

    return $self;
}

# cluster_conf(TEXT): the http{} text for clustered backends: with a
# Redis Cluster, paygw_redis_cluster on in every location that passes to
# Redis; with Galera, the other nodes as failover= of paygw_mysql.
sub cluster_conf {
    my ($self, $http) = @_;
    $http =~ s/(paygw_redis_pass\s+[^;]+;)(?!\s*paygw_redis_cluster)/$1 paygw_redis_cluster on;/g
        if $self->{redis}->isa('PayGW::Test::RedisCluster');
    if ($self->{db}->isa('PayGW::Test::Galera')) {
        my $f = $self->{db}->failover_params;
        $http =~ s/(paygw_mysql\s+\S+\s+host=\S+\s+port=%%MYSQL_PORT%%)(?!\s+failover=)/$1 $f/g;
    }
    return $http;
}

sub redis { $_[0]{redis} }
sub db    { $_[0]{db} }
sub sim   { $_[0]{sim} }
sub ngx   { $_[0]{ngx} }
sub url   { $_[0]{ngx}->url($_[1] // '') }

# The placeholders this gateway's backends fill in its nginx.conf.
sub conf_vars {
    my ($self) = @_;
    my ($db, $sim) = @$self{qw(db sim)};
    my %v = (REDIS_PORT => $self->{redis}->port, MYSQL_PORT => $db->port,
             MYSQL_PASSWORD_FILE => $db->password_file, SIM_PORT => $sim->port,
             REPO => repo_root(), ALIPAY_APP_ID => $sim->alipay_app_id,
             WECHAT_MCHID => $sim->wechat_mchid, WECHAT_APPID => $sim->wechat_appid);
    if (defined $sim->keys_dir) {
        %v = (%v, SIM_KEYS => $sim->keys_dir,
              WECHAT_MERCHANT_SERIAL => $sim->merchant_serial,
              WECHAT_SERIAL_1 => $sim->wechat_serial(1),
              WECHAT_SERIAL_2 => $sim->wechat_serial(2));
    }
    return \%v;
}

# The http{} text nginx runs now (placeholders not yet filled).
sub http_conf { $_[0]{ngx}{http} }

# reload(TEXT): nginx -s reload with this http{} text (placeholders
# filled); dies when nginx refuses it.
sub reload {
    my ($self, $http) = @_;
    $http = $self->cluster_conf($http) if defined $http;
    $self->{ngx}->reload(defined $http ? (http => $http) : ());
    return $self;
}

# test_config(TEXT) -> (exit code, output of nginx -t) for this http{} text.
sub test_config {
    my ($self, $http) = @_;
    $http = $self->cluster_conf($http) if defined $http;
    return $self->{ngx}->test_config(http => $http);
}

# The older form: $DEFAULT_HTTP's configuration, built with option values.
sub _http_conf {
    my ($self, %o) = @_;
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
    upstream paygw_redis { server 127.0.0.1:%%REDIS_PORT%%; keepalive 16; }
    paygw_mysql main host=127.0.0.1 port=%%MYSQL_PORT%% user=paygw
                password_file=%%MYSQL_PASSWORD_FILE%%
                database=paygw max_conns=8 query_timeout=$qt;
    paygw_keys  %%REPO%%/conf/demo/keys.conf;
    paygw_fees  %%REPO%%/conf/demo/fees.conf;
    paygw_channel bank_card location=/_paygw/bank merchant_id=ACQ-M100
                  secret_file=%%REPO%%/conf/demo/acquirer.secret
                  attempts=$attempts unknown_grace=$grace $breaker;
$qr
    upstream paygw_acquirer { server 127.0.0.1:%%SIM_PORT%%; keepalive 16; }
    upstream paygw_alipay { server 127.0.0.1:%%SIM_PORT%%; keepalive 16; }
    upstream paygw_wechat { server 127.0.0.1:%%SIM_PORT%%; keepalive 16; }

    # statement downloads: the hosts the providers may point at
    paygw_statement_hosts wechat 127.0.0.1:%%SIM_PORT%%;
    paygw_statement_hosts alipay 127.0.0.1:%%SIM_PORT%%;
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
    my $attempts = $o{attempts} // 3;
    my $grace = $o{unknown_grace} // '60s';
    my $breaker = $o{qr_breaker} // 'breaker_failures=0';
    my $notify = 'http://127.0.0.1:%%PORT%%/v1/notify';
    my $platform = join ' ', map {
        "platform_key=%%WECHAT_SERIAL_$_%%:%%SIM_KEYS%%/wechat_platform${_}_public.pem"
    } @{ $o{wechat_platform} // [1, 2] };
    my $ae = $o{alipay_extra} // '';
    my $we = $o{wechat_extra} // '';

    return <<"CONF";
    paygw_channel alipay location=/_paygw/alipay
                  app_id=%%ALIPAY_APP_ID%%
                  private_key=%%SIM_KEYS%%/alipay_app_private.pem
                  alipay_public_key=%%SIM_KEYS%%/alipay_public.pem
                  notify_url=$notify/alipay
                  attempts=$attempts unknown_grace=$grace $breaker $ae;
    paygw_channel wechat location=/_paygw/wechat
                  merchant_id=%%WECHAT_MCHID%%
                  app_id=%%WECHAT_APPID%%
                  private_key=%%SIM_KEYS%%/wechat_merchant_private.pem
                  serial_no=%%WECHAT_MERCHANT_SERIAL%%
                  apiv3_key_file=%%SIM_KEYS%%/wechat_apiv3.key
                  $platform
                  notify_url=$notify/wechat
                  attempts=$attempts unknown_grace=$grace $breaker $we;
CONF
}

# ---- requests -----------------------------------------------------------

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
    my %b = (business_no => 'ORD-' . PayGW::Test::random_token(12), amount => 1999,
             currency => 'CNY', channel => 'bank_card', subject => 'Tea',
             card => { number => '4242424242424242', exp_month => 12,
                       exp_year => 2030, cvc => '123' });
    delete $b{card} if ($over{channel} // 'bank_card') ne 'bank_card';
    @b{keys %over} = values %over;
    delete $b{$_} for grep { !defined $b{$_} } keys %b;
    return \%b;
}

# card(number => ..., cvc => ...): a test card (4242... 12/2030 cvc 123)
# with those fields replaced.
sub card {
    my ($class, %over) = @_;
    return {number => '4242424242424242', exp_month => 12, exp_year => 2030,
            cvc => '123', %over};
}

# fresh_key(PREFIX): an Idempotency-Key (or any name) used once per run.
my $SEQ = 0;
sub fresh_key {
    my ($self, $prefix) = @_;
    return sprintf '%s-%d-%d', $prefix // 'k', $$, ++$SEQ;
}

# create(FIELD => VALUE, ...) or create({FIELD => VALUE}, API_OPTIONS):
# POST /v1/payments with payment_body(FIELDS) under a fresh
# Idempotency-Key (unless API_OPTIONS name one); the response.
sub create {
    my ($self, @args) = @_;
    my ($fields, %o) = ref $args[0] eq 'HASH' ? @args : ({@args});
    return $self->api(POST => '/v1/payments', json => $self->payment_body(%$fields),
                      idempotency_key => $self->fresh_key('create'), %o);
}

# get_payment(NO): the GET response; payment(NO): its JSON ({} if none).
sub get_payment { $_[0]->api(GET => "/v1/payments/$_[1]") }
sub payment     { $_[0]->get_payment($_[1])->{json} // {} }

# err_code(RESPONSE): the error code of a JSON error answer, else undef.
sub err_code {
    my ($r) = @_;
    return ($r->{json} && ref $r->{json} eq 'HASH' && ref $r->{json}{error} eq 'HASH')
        ? $r->{json}{error}{code} : undef;
}

# ---- what the gateway stored and sent ----------------------------------

# sql_quote(TEXT): a quoted SQL string literal.
sub sql_quote { my $s = $_[0] // ''; $s =~ s/'/''/g; "'$s'" }

# sql1(SQL): the result of one query (database paygw), chomped.
sub sql1 { my $v = $_[0]->db->sql($_[1]); chomp $v; $v }

# sent_statements(QR, ACTION, timeout => S): the statements the module
# sent to MariaDB while ACTION ran (its general log; each statement of a
# batch apart, newlines as spaces) that match QR, in order; with a
# timeout, waits up to S seconds after ACTION for the first of them (a
# timer's statement).  For EXPLAIN: what runs is the module's own text.
sub sent_statements {
    my ($self, $re, $action, %o) = @_;
    my @found;
    my $look = sub {
        my $all = $self->db->sql(
            "SELECT REPLACE(argument, CHAR(10), ' ') FROM mysql.general_log "
            . "WHERE command_type = 'Query' AND thread_id <> CONNECTION_ID()");
        @found = grep { /$re/ } map { split /;/ } split /\n/, $all;
        return scalar @found;
    };
    $self->sql1("SET GLOBAL log_output = 'TABLE'; TRUNCATE mysql.general_log; "
                . "SET GLOBAL general_log = 1");
    $action->();
    $o{timeout} ? wait_until($look, timeout => $o{timeout}) : $look->();
    $self->sql1("SET GLOBAL general_log = 0");
    return @found;
}

# plan(SQL): MariaDB's EXPLAIN FORMAT=JSON of SQL ('' for none).
sub plan { defined $_[1] ? $_[0]->sql1("EXPLAIN FORMAT=JSON $_[1]") : '' }

# metric('paygw_circuit_state{channel="alipay"}'): the value of that one
# series in /metrics now; undef when it is not there.
sub metric {
    my ($self, $series) = @_;
    my ($v) = http(GET => $self->url('/metrics'))->{body} =~ /^\Q$series\E (\S+)$/m;
    return $v;
}

# circuit_state(CHANNEL): paygw_circuit_state (0 closed, 1 open, 2 half-open).
sub circuit_state {
    my ($self, $channel) = @_;
    return $self->metric(qq{paygw_circuit_state{channel="$channel"}});
}

# callbacks(CHANNEL, RESULT): paygw_callbacks_total of that series, -1
# when it is not there.
sub callbacks {
    my ($self, $channel, $result) = @_;
    return $self->metric(
        qq{paygw_callbacks_total{channel="$channel",result="$result"}}) // -1;
}

# event_count(OBJECT_NO, TYPE): outbox events of that type for the object.
sub event_count {
    my ($self, $no, $type) = @_;
    my $c = $self->db->sql("SELECT COUNT(*) FROM paygw.outbox_events "
                           . "WHERE object_no = '$no' AND type = '$type'");
    chomp $c;
    return $c + 0;
}

# events(OBJECT_NO): its outbox rows in order, as {event_id, type,
# merchant_id, status, payload (decoded), raw (the payload's bytes)}.
sub events {
    my ($self, $object_no) = @_;
    my @rows;
    for (split /\n/, $self->db->sql(
            "SELECT event_id, type, merchant_id, status, HEX(payload) "
            . "FROM paygw.outbox_events WHERE object_no = " . sql_quote($object_no)
            . " ORDER BY id")) {
        my ($id, $type, $m, $st, $hex) = split /\t/;
        my $raw = pack 'H*', $hex // '';
        push @rows, {event_id => $id, type => $type, merchant_id => $m,
                     status => $st, payload => eval { JSON::PP->new->decode($raw) },
                     raw => $raw};
    }
    return @rows;
}

sub count_rows {
    my ($self, $table) = @_;
    my $n = $self->db->sql("SELECT COUNT(*) FROM paygw.$table");
    chomp $n;
    return $n + 0;
}

# charges_for(PAYMENT_NO): the acquirer's charges under that out_trade_no.
sub charges_for {
    my ($self, $no) = @_;
    return grep { $_->{out_trade_no} eq ($no // '') } @{ $self->sim->charges->{charges} };
}

# charges_seen(): "N charges, M requests" at the acquirer (duplicates
# included); snapshot(): that and the number of payment rows;
# nothing_written(SNAPSHOT, NAME): two tests that neither changed since.
sub charges_seen {
    my ($self) = @_;
    my $c = $self->sim->charges->{charges};
    my $req = 0;
    $req += $_->{requests} + ($_->{duplicates} // 0) for @$c;
    return scalar(@$c) . " charges, $req requests";
}

sub snapshot {
    my ($self) = @_;
    return {rows => $self->count_rows('payments'), charges => $self->charges_seen};
}

sub nothing_written {
    my ($self, $before, $name) = @_;
    Test::More::is($self->count_rows('payments'), $before->{rows},
                   "$name: no new payment row");
    Test::More::is($self->charges_seen, $before->{charges},
                   "$name: no new charge at the acquirer");
}

# wait_unknown_grace(PAYMENT_NO, SECONDS): waits until the payment was
# last changed SECONDS ago by the database's clock -- the age the module
# compares with unknown_grace -- and returns true, or false after 30 s.
sub wait_unknown_grace {
    my ($self, $no, $seconds) = @_;
    return wait_until(sub {
        $self->sql1("SELECT TIMESTAMPDIFF(SECOND, updated_at, UTC_TIMESTAMP(3)) "
                    . ">= $seconds FROM paygw.payments WHERE payment_no = "
                    . sql_quote($no)) eq '1';
    }, timeout => 30, interval => 0.1);
}

1;
