#!/usr/bin/perl
# Webhook delivery survives worker death and reloads, and spreads over
# workers and nginx instances without sending an event twice in parallel
# (SPEC §5): a worker killed with SIGKILL mid-delivery and three reloads
# lose no event (the row is sent again once its lease ran out); two nginx
# instances on the same Redis and MariaDB deliver 500 events, each at
# least once, none twice at the same time; XREADGROUP on paygw:events
# sees every event type.
use strict;
use warnings;

use Test::More;
use Time::HiRes qw(time sleep);

use PayGW::Gateway qw(sql_quote);
use PayGW::Receiver;
use PayGW::Test qw(wait_until);
use PayGW::Webhooks qw(webhook_http $WHSEC);

my $rx = PayGW::Receiver->start(secrets => [$WHSEC]);

# leases of 3s: a killed worker's events come back quickly
my $http = webhook_http(retry => '1s 1s 1s 1s 1s', lease => '3s', batch => 20);
my $gw = PayGW::Gateway->start(workers => 2, http => $http);

sub undelivered {
    $gw->sql1("SELECT COUNT(*) FROM outbox_events WHERE status <> 'delivered' "
              . "AND type LIKE 'payment.%'");
}

# ---- SIGKILL a worker mid-delivery, then reload three times -------------------

my @pnos;
for (1 .. 30) {
    my $r = $gw->create(notify_url => $rx->url('/hook/slow/400'));
    push @pnos, $r->{json}{payment_no} if $r->{status} == 201;
}
is(scalar @pnos, 30, '30 payments, notify_url answering after 400 ms');

ok(wait_until(sub { @{ $rx->deliveries->{requests} } > 0 }, timeout => 10),
   'deliveries are in flight');
my @w = $gw->ngx->worker_pids;
ok(kill('KILL', $w[0]), "SIGKILL worker $w[0] while it delivers");
for my $i (1 .. 3) {
    push @pnos, $gw->create(notify_url => $rx->url('/hook/slow/100'))->{json}{payment_no};
    eval { $gw->reload($http); 1 } or diag "reload $i: $@";
    ok(1, "reload $i");
}

ok(wait_until(sub { undelivered() == 0 }, timeout => 60),
   'every event is delivered in the end') or diag undelivered() . ' left';
my $d = $rx->deliveries;
my %ids = map { $_->{event_id} => 1 }
          map { $gw->events($_) } @pnos;
my @missing = grep { !$d->{counts}{$_} } keys %ids;
is(scalar @missing, 0, 'the receiver saw every event (' . scalar(keys %ids) . ')')
    or diag "missing: @missing";
ok(!grep({ !$_->{sig_ok} } @{ $d->{requests} }), 'every request signed');
is($d->{parallel}, 0, 'no event was sent twice at the same time');

# ---- two nginx instances on the same backends: 500 events ---------------------

$rx->clear;
my $gw2 = PayGW::Gateway->start(workers => 2, share => $gw, http => $http);

my %ev;
my $t0 = time;
for my $i (1 .. 500) {
    my $g = $i % 2 ? $gw : $gw2;
    my $r = $g->create(notify_url => $rx->url('/hook/slow/20'));
    $ev{$r->{json}{payment_no}} = 1 if $r->{status} == 201;
}
is(scalar keys %ev, 500, '500 payments created through both instances');
ok(wait_until(sub { undelivered() == 0 }, timeout => 120),
   'both instances deliver them all') or diag undelivered() . ' left';
diag sprintf '500 events created and delivered in %.1fs', time - $t0;
$d = $rx->deliveries;
my @ids = map { $_->{event_id} } map { $gw->events($_) } keys %ev;
is(scalar(grep { $d->{counts}{$_} } @ids), 500, 'the receiver saw all 500');
is($d->{parallel}, 0, 'none was sent twice in parallel');
my $dups = grep { $d->{counts}{$_} > 1 } @ids;
diag "$dups events were sent more than once (after a lost answer)" if $dups;
for ([1, $gw], [2, $gw2]) {
    my ($n, $g) = @$_;
    ok(($g->metric('paygw_webhook_deliveries_total{result="delivered"}') // 0) > 0,
       "instance $n delivered some of them");
}

# ---- XREADGROUP sees every event type ------------------------------------------

my $refund = $gw->api(POST => "/v1/payments/$pnos[0]/refunds",
                      json => {refund_no => "RF82-$$", amount => 10},
                      idempotency_key => "rf82-$$");
my $qr = $gw->create(channel => 'alipay', notify_url => $rx->url('/hook/ok'))->{json};
$gw->api(POST => "/v1/payments/$qr->{payment_no}/close", idempotency_key => "c82-$$");
my $declined = $gw->create(card => PayGW::Gateway->card(number => '4000000000000002'),
                           notify_url => $rx->url('/hook/ok'));
$gw->redis->cli('XGROUP', 'CREATE', 'paygw:events', 'risk', '0');
my %types;
ok(wait_until(sub {
    my $out = $gw->redis->cli('XREADGROUP', 'GROUP', 'risk', 'c1', 'COUNT', '2000',
                              'STREAMS', 'paygw:events', '>');
    $types{$_} = 1 for $out =~ /^((?:payment|refund|risk)\.[a-z_]+)$/mg;
    $types{'payment.succeeded'} && $types{'payment.failed'} && $types{'payment.closed'}
        && $types{'refund.succeeded'};
}, timeout => 20), 'XREADGROUP on paygw:events sees ' . join(' ', sort keys %types));

done_testing;
