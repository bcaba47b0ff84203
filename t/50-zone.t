#!/usr/bin/perl
# paygw_zone: counters in shared memory are one number for all workers and
# survive "nginx -s reload", as /metrics (Prometheus text) shows.
use strict;
use warnings;

use Test::More;

use PayGW::Test qw(backend_vars http http_parallel wait_until);

my $redis = PayGW::Test::Redis->start(no_wait => 1);
my $db    = PayGW::Test::MySQL->start(no_wait => 1);
$_->ready for $redis, $db;

sub conf {
    my (%o) = @_;
    my $extra = $o{extra} // '';
    return <<"EOF";
    paygw_zone paygw:1m;
    upstream redis { server 127.0.0.1:%%REDIS_PORT%%; keepalive 8; }
    paygw_mysql db host=127.0.0.1 port=%%MYSQL_PORT%% user=paygw
                password_file=%%MYSQL_PASSWORD_FILE%%
                database=paygw;
    log_format pid '\$pid \$status \$uri';
    server {
        listen 127.0.0.1:%%PORT%% reuseport;
        access_log %%TESTDIR%%/pid.log pid;
        location = /_paygw/redis { internal; paygw_redis_pass redis; }
        location = /_paygw/mysql { internal; paygw_mysql_pass db; }
        location = /healthz { paygw_health live; }
        location = /readyz  { paygw_health ready; }
        location = /metrics { paygw_metrics; }
        $extra
    }
EOF
}

# /metrics parsed: {'name{labels}' => value}; undef (and a diagnostic)
# when it is not valid Prometheus text.
sub metrics {
    my ($ngx) = @_;
    my $r = http(GET => $ngx->url('/metrics'));
    if ($r->{status} != 200) {
        diag("GET /metrics: $r->{status} $r->{body}");
        return undef;
    }
    my (%m, %typed, @bad);
    for my $line (split /\n/, $r->{body}) {
        if ($line =~ /^# TYPE (\w+) (counter|gauge|histogram|summary|untyped)$/) {
            $typed{$1} = 1;
        } elsif ($line =~ /^# HELP \w+ \S/ || $line eq '') {
        } elsif ($line =~ /^(\w+)(\{(?:\w+="[^"\\\n]*",?)*\})? (-?[0-9.e+]+|NaN|[+-]Inf)$/) {
            my ($name, $labels, $value) = ($1, $2 // '', $3);
            push @bad, "untyped: $line"
                unless $typed{$name} || $typed{$name =~ s/_(?:bucket|sum|count)$//r};
            $m{$name . $labels} = $value;
        } else {
            push @bad, $line;
        }
    }
    if (@bad) {
        diag("not Prometheus text:\n" . join "\n", @bad);
        return undef;
    }
    $m{_content_type} = $r->{headers}{'content-type'};
    return \%m;
}

my $LIVE = 'paygw_health_requests_total{check="live"}';
my $READY = 'paygw_health_requests_total{check="ready"}';

sub hit {
    my ($ngx, $path, $n) = @_;
    my $ok = 0;
    $ok += http(GET => $ngx->url($path))->{status} == 200 for 1 .. $n;
    return $ok;
}

# Two workers throughout, with reuseport so the kernel spreads connections
# over both: every number below is the sum over the workers, whichever
# worker answers /metrics.
my $ngx = PayGW::Test::Nginx->new(workers => 2, http => conf(),
    vars => backend_vars(redis => $redis, db => $db))->start;

# /metrics asked 4 times (several workers answer): the value of $key if
# all agree, else a diagnostic and -1.
sub agreed {
    my ($key, $want) = @_;
    # nginx counts a request in its log phase, just after the answer went
    # out: the last request may not be counted yet.  With $want, ask until
    # it is (5 s at most).
    my $v;
    wait_until(sub {
        my %v = map { my $m = metrics($ngx); (($m ? $m->{$key} : undef) // 'none') => 1 }
                1 .. 4;
        $v = keys %v == 1 ? (keys %v)[0] : -1;
        return 1 if !defined $want || $v eq $want;
        return 0;
    }, timeout => defined $want ? 5 : 0);
    diag("/metrics disagree on $key") if $v eq '-1';
    return $v;
}

{
    my $m = metrics($ngx);
    is($m && $m->{$LIVE}, 0, 'fresh zone: live counter 0');
    is($m && $m->{paygw_zone_reloads_total}, 0, 'fresh zone: 0 reloads');
    like($m && $m->{_content_type}, qr{^text/plain; version=0\.0\.4},
         'Content-Type of the Prometheus text format');

    is(hit($ngx, '/healthz', 7), 7, '7 x /healthz');
    is(hit($ngx, '/readyz', 3), 3, '3 x /readyz (200)');
    http(POST => $ngx->url('/healthz'));
    http(GET => $ngx->url('/nothing-here'));
    is(agreed($LIVE, 7), 7, '/metrics: live counter 7 (only /healthz hits; '
                         . 'reading /metrics counts nothing)');
    is(agreed($READY, 3), 3, '/metrics: ready counter 3');
    my $created = agreed('paygw_zone_created_seconds');
    ok($created > 0 && abs($created - time) < 60, 'zone creation time is now');

    my @res = http_parallel([map { [GET => $ngx->url('/healthz')] } 1 .. 40]);
    is(scalar(grep { $_->{status} == 200 } @res), 40, '40 parallel /healthz');
    is(agreed($LIVE, 47), 47, '/metrics: 47, no increment lost');
    my %pids;
    for (split /\n/, PayGW::Test::_slurp($ngx->dir . '/pid.log')) {
        $pids{$1}++ if m{^(\d+) 200 /healthz$};
    }
    is(scalar keys %pids, 2, '... both workers answered /healthz')
        or diag(explain \%pids);

    $ngx->reload;
    $m = metrics($ngx);
    is_deeply($m && [@$m{$LIVE, $READY, 'paygw_zone_reloads_total'}],
              [47, 3, 1], 'after nginx -s reload: counters kept, 1 reload');
    is(hit($ngx, '/healthz', 5), 5, '5 more x /healthz');
    is(agreed($LIVE, 52), 52, '/metrics: 47 + 5 = 52');
    is(agreed('paygw_zone_created_seconds'), $created,
       'same zone (creation time unchanged)');

    # a reload with a changed config keeps the zone too
    $ngx->reload(http => conf(extra => 'location = /x { return 204; }'));
    is(http(GET => $ngx->url('/x'))->{status}, 204, 'changed config is live');
    is(hit($ngx, '/healthz', 1), 1, '1 more x /healthz');
    agreed($LIVE, 53);
    $m = metrics($ngx);
    is_deeply($m && [@$m{$LIVE, $READY, 'paygw_zone_reloads_total'}],
              [53, 3, 2], 'second reload (new config): 53, 3, 2 reloads');
}

done_testing;
