#!/usr/bin/perl
# /metrics, parsed by the Prometheus reference parser (Debian's
# python3-prometheus-client), after a known sequence of requests spread
# over 2 workers: every SPEC §6 metric present with HELP/TYPE, exact
# counter values, consistent histograms, kept across reload, and a fixed
# number of series whatever URIs clients send.
use strict;
use warnings;

use IPC::Open2;
use JSON::PP;
use Test::More;

use PayGW::Test qw(http repo_root wait_until);
use PayGW::Gateway;

plan skip_all => 'python3-prometheus-client is not installed'
    unless system('/usr/bin/python3 -c "import prometheus_client" 2>/dev/null') == 0;

# Two workers, each counting into paygw_zone; otherwise the harness's
# default http{} configuration, $PayGW::Gateway::DEFAULT_HTTP
# (t/lib/PayGW/Gateway.pm), whose /metrics location is paygw_metrics.
my $gw = PayGW::Gateway->start(workers => 2);

sub scrape {
    my $r = http(GET => $gw->url('/metrics'));
    die "metrics: $r->{status}\n" unless $r->{status} == 200;
    my $pid = open2(my $out, my $in, '/usr/bin/python3',
                    repo_root() . '/t/lib/prom_parse.py');
    print {$in} $r->{body};
    close $in;
    my $json = do { local $/; <$out> };
    waitpid $pid, 0;
    die "the Prometheus parser rejected /metrics\n" if $?;
    return (decode_json($json), $r);
}

sub value {
    my ($samples, $name, %labels) = @_;
    my $sum = 0;
    for my $s (@$samples) {
        next unless $s->{name} eq $name;
        next if grep { ($s->{labels}{$_} // '') ne $labels{$_} } keys %labels;
        $sum += $s->{value};
    }
    return $sum;
}

# a known sequence
my @ok = map {
    $gw->api(POST => '/v1/payments', idempotency_key => "m-$_",
             json => PayGW::Gateway->payment_body(business_no => "M-$_"))
} 1 .. 2;
is($_->{status}, 201, 'created') for @ok;

my $declined = $gw->api(POST => '/v1/payments', idempotency_key => 'm-3',
    json => PayGW::Gateway->payment_body(business_no => 'M-3',
        card => { number => '4000000000000002', exp_month => 12,
                  exp_year => 2030, cvc => '123' }));
is($declined->{json}{status}, 'failed', 'declined');

my $replay = $gw->api(POST => '/v1/payments', idempotency_key => 'm-1',
    json => PayGW::Gateway->payment_body(business_no => 'M-1'));
# payment_body randomizes nothing we set, but amounts etc. are equal: replay
is($replay->{status}, 201, 'replayed or ...');
my $reused = $gw->api(POST => '/v1/payments', idempotency_key => 'm-1',
    json => PayGW::Gateway->payment_body(business_no => 'M-1', amount => 5));
is($reused->{status}, 422, 'reused key');

is($gw->api(GET => "/v1/payments/$ok[0]{json}{payment_no}")->{status}, 200,
   'get');
is($gw->api(GET => '/v1/payments/PNOPE')->{status}, 404, 'get 404');
is(http(GET => $gw->url('/healthz'))->{status}, 200, 'healthz') for 1 .. 3;

# nginx counts a request in its log phase, just after the answer went
# out, and either worker may still be at it: read the numbers once all 10
# requests above are counted (5 s at most).
my ($m, $raw);
wait_until(sub {
    ($m, $raw) = scrape();
    my $n = 0;
    $n += $_->{value} for grep { $_->{name} eq 'paygw_requests_total'
                                 && $_->{labels}{api} ne 'metrics' } @$m;
    return $n >= 10;
}, timeout => 5);

# every metric of SPEC §6, with HELP and TYPE
for my $name (qw(paygw_requests_total paygw_request_duration_seconds
                 paygw_payments_total paygw_channel_requests_total
                 paygw_channel_duration_seconds paygw_circuit_state
                 paygw_idempotency_total paygw_callbacks_total
                 paygw_backend_errors_total paygw_reconciliation_differences
                 paygw_risk_decisions_total paygw_webhook_deliveries_total)) {
    like($raw->{body}, qr/^# HELP \Q$name\E \S/m, "$name has HELP");
    like($raw->{body}, qr/^# TYPE \Q$name\E (counter|gauge|histogram)$/m,
         "$name has TYPE");
}

is(value($m, 'paygw_requests_total', api => 'create_payment', code => '201'),
   4, 'creates answered 201 (3 new + 1 replay), summed over both workers');
is(value($m, 'paygw_requests_total', api => 'create_payment', code => '422'),
   1, 'one 422');
is(value($m, 'paygw_requests_total', api => 'get_payment', code => '200'),
   1, 'one get 200');
is(value($m, 'paygw_requests_total', api => 'get_payment', code => '404'),
   1, 'one get 404');
is(value($m, 'paygw_requests_total', api => 'healthz', code => '200'),
   3, 'three healthz');
is(value($m, 'paygw_payments_total', channel => 'bank_card',
         status => 'succeeded'), 2, 'two payments succeeded');
is(value($m, 'paygw_payments_total', channel => 'bank_card',
         status => 'failed'), 1, 'one failed');
is(value($m, 'paygw_channel_requests_total', channel => 'bank_card',
         result => 'ok'), 3, 'three acquirer calls answered');
is(value($m, 'paygw_idempotency_total', result => 'new'), 3, 'three new keys');
is(value($m, 'paygw_idempotency_total', result => 'replayed'), 1, 'one replay');
is(value($m, 'paygw_idempotency_total', result => 'reused'), 1, 'one reuse');
is(value($m, 'paygw_backend_errors_total'), 0, 'no backend errors');

# histograms: cumulative buckets, +Inf equals count
{
    my @b = sort { $a->{value} <=> $b->{value} }
            grep { $_->{name} eq 'paygw_request_duration_seconds_bucket'
                   && $_->{labels}{api} eq 'create_payment' } @$m;
    my $inf = (grep { $_->{labels}{le} eq '+Inf' } @b)[0]{value};
    is($inf, value($m, 'paygw_request_duration_seconds_count',
                   api => 'create_payment'), '+Inf bucket equals the count');
    my $monotonic = 1;
    my %by_le = map { $_->{labels}{le} => $_->{value} } @b;
    my @le = sort { ($a eq '+Inf' ? 1e9 : $a) <=> ($b eq '+Inf' ? 1e9 : $b) }
             keys %by_le;
    for my $i (1 .. $#le) {
        $monotonic = 0 if $by_le{$le[$i]} < $by_le{$le[$i - 1]};
    }
    ok($monotonic, 'buckets are cumulative');
    is(value($m, 'paygw_request_duration_seconds_count', api => 'create_payment'),
       5, 'five create requests observed');
}

# a backend failure is counted
{
    $gw->redis->stop;
    is($gw->api(GET => '/v1/payments/PX')->{status}, 503, 'redis down: 503');
    $gw->redis->start_again;
    my ($m2) = scrape();
    ok(value($m2, 'paygw_backend_errors_total', backend => 'redis') >= 1,
       'redis error counted');
}

# clients cannot grow the series: garbage URIs fold into fixed labels
{
    my ($before) = scrape();
    http(GET => $gw->url('/v1/' . join('', map { chr(97 + rand 26) } 1 .. 12)))
        for 1 .. 50;
    my $after;
    wait_until(sub {        # until the last of them is counted
        ($after) = scrape();
        value($after, 'paygw_requests_total', api => 'other', code => '404')
            - value($before, 'paygw_requests_total', api => 'other', code => '404') >= 50;
    }, timeout => 5);
    my %series = map { $_->{name} . JSON::PP->new->canonical->encode($_->{labels}) => 1 }
                 @$after;
    my %before = map { $_->{name} . JSON::PP->new->canonical->encode($_->{labels}) => 1 }
                 @$before;
    ok(keys(%series) - keys(%before) <= 40,
       'random URIs add at most a fixed handful of series')
        or diag(keys(%series) - keys(%before));
    is(value($after, 'paygw_requests_total', api => 'other', code => '404')
       - value($before, 'paygw_requests_total', api => 'other', code => '404'),
       50, '... counted as api="other"');
}

# kept across reload
{
    my ($m1) = scrape();
    my $c = value($m1, 'paygw_requests_total', api => 'healthz');
    $gw->ngx->reload;
    my ($m2) = scrape();
    is(value($m2, 'paygw_requests_total', api => 'healthz'), $c,
       'counters survive nginx -s reload');
    is(value($m2, 'paygw_zone_reloads_total'), 1, 'one reload seen');
}

done_testing;
