#!/usr/bin/perl
# Events handed off to delivery (paygw_webhook handoff=, docs/directives.md):
# the request that writes a payment's event inserts it already leased to
# this nginx and, once its transaction committed, queues it in paygw_zone;
# the next round of any worker sends it without claiming it, within tens
# of milliseconds rather than at the next interval.  The queue is only a
# shortcut: an event it lost (a full queue, a killed worker) is an
# ordinary leased row, claimed once its lease ends; a reload keeps it.
use strict;
use warnings;

use Test::More;
use Time::HiRes qw(time sleep);

use PayGW::Gateway qw(sql_quote);
use PayGW::Receiver;
use PayGW::Test qw(wait_until);
use PayGW::Webhooks qw(webhook_http $WHSEC create_hooked event_rows);

my $rx = PayGW::Receiver->start(secrets => [$WHSEC]);

# interval=60s: a worker's first claim round comes 30 s or more after
# start, so whatever is delivered sooner was handed off
my $gw = PayGW::Gateway->start(workers => 2,
    http => webhook_http(interval => '60s', lease => '60s'));

sub create { create_hooked($gw, $rx, @_) }

sub rows { event_rows($gw, @_) }

sub delivered { rows(@_) eq join(',', ('delivered 1') x scalar @_) }

sub sent_once {
    my ($d, @nos) = @_;
    my @ids = map { $_->{event_id} } grep { $_->{type} eq 'payment.succeeded' }
              map { $gw->events($_) } @nos;
    return scalar(@ids) == scalar(@nos)
        && !grep { ($d->{counts}{$_} // 0) != 1 } @ids;
}

# ---- handed off: sent at once, one attempt, signed ---------------------------

my $t0 = time;
my @nos = create(5, '/hook/ok');
ok(wait_until(sub { delivered(@nos) }, timeout => 10),
   '5 payments: their webhooks delivered without waiting for the 60 s interval')
    or diag rows(@nos);
my $took = time - $t0;
cmp_ok($took, '<', 15, sprintf('... within %.1f s of the first create', $took));
my $d = $rx->deliveries;
ok(sent_once($d, @nos), '... each sent once');
ok(!grep({ !$_->{sig_ok} } @{ $d->{requests} }), '... every signature valid');
is($gw->sql1("SELECT COUNT(*) FROM outbox_events WHERE object_no IN ("
             . join(', ', map { sql_quote($_) } @nos) . ") AND lease_owner IS NOT NULL"),
   0, '... and no lease left on them');

# the stream gets handed-off events too
my $stream = $gw->redis->cli('XRANGE', 'paygw:events', '-', '+');
like($stream, qr/\Q$nos[0]\E/, '... and paygw:events has them');

# ---- a 410 disables the endpoint for handed-off events as well -------------------

$rx->clear;
my @gone = create(1, '/hook/status/410');
ok(wait_until(sub { rows(@gone) eq 'disabled 1' }, timeout => 10),
   '410: the handed-off event is disabled') or diag rows(@gone);
push @gone, create(1, '/hook/status/410');
ok(wait_until(sub { rows(@gone) eq 'disabled 1,disabled 0' }, timeout => 10),
   '... the next one to that endpoint is not sent') or diag rows(@gone);
is(scalar(@{ $rx->deliveries->{requests} }), 1, '... the receiver saw one request');

# ---- handoff=0: events wait for a claim round ---------------------------------

$gw->reload(webhook_http(interval => '60s', lease => '60s', handoff => 0));
$rx->clear;
@nos = create(3, '/hook/ok');
sleep 4;
is(rows(@nos), 'pending 0,pending 0,pending 0',
   'handoff=0: nothing sent before the next claim round');
# the first claim round of the reloaded workers comes within 30-90 s;
# a round asked for now (the ticker's request, signed) delivers them
$gw->reload(webhook_http(interval => '200ms', lease => '60s', handoff => 0));
ok(wait_until(sub { delivered(@nos) }, timeout => 15),
   '... and a claim round delivers them') or diag rows(@nos);

# ---- a reload keeps the queue ------------------------------------------------------

# one worker sends one slow webhook at a time (batch=1): the rest wait in
# the zone's queue while nginx reloads; the new workers send them long
# before their 60 s lease would have brought them back
my $slow = webhook_http(interval => '60s', lease => '60s', batch => 1,
                        parallel => 1);
$gw->ngx->{workers} = 1;
$gw->reload($slow);
$rx->clear;
@nos = create(6, '/hook/slow/700');
ok(wait_until(sub { @{ $rx->deliveries->{requests} } > 0 }, timeout => 10),
   'slow webhooks: the first is in flight');
$gw->reload($slow);
ok(wait_until(sub { delivered(@nos) }, timeout => 25),
   '... a reload later, all 6 delivered well before their lease ends')
    or diag rows(@nos);
ok(sent_once($rx->deliveries, @nos), '... each sent once');

# ---- SIGKILL with handed-off events in flight: back after the lease ------------

my $short = webhook_http(interval => '200ms', lease => '3s', batch => 2,
                         parallel => 2);
$gw->reload($short);
$rx->clear;
@nos = create(4, '/hook/slow/1500');
ok(wait_until(sub { @{ $rx->deliveries->{requests} } > 0 }, timeout => 10),
   'lease=3s, 1.5 s answers: deliveries in flight');
my @w = $gw->ngx->worker_pids;
ok(kill('KILL', @w), "SIGKILL the worker (@w) while it sends");
ok(wait_until(sub { delivered(@nos) }, timeout => 40),
   '... every event is delivered in the end') or diag rows(@nos);
unlike(rows(@nos), qr/failed|pending/, '... none failed or left') or diag rows(@nos);
$d = $rx->deliveries;
is($d->{parallel}, 0, '... none sent twice at the same time');

# ---- a full queue: events wait for their lease, none is lost ---------------------

# handoff=2: at most one event is leased at insert while another waits;
# the rest are inserted due at once for the claim rounds
$gw->ngx->{workers} = 2;
$gw->reload(webhook_http(interval => '200ms', lease => '3s', handoff => 2,
                         batch => 1, parallel => 1));
$rx->clear;
@nos = create(12, '/hook/slow/100');
ok(wait_until(sub { delivered(@nos) }, timeout => 40),
   'handoff=2: 12 events delivered, one attempt each') or diag rows(@nos);
ok(sent_once($rx->deliveries, @nos), '... each sent once');

# ---- configuration -----------------------------------------------------------------

for my $bad ('handoff=x', 'handoff=-1', 'handoff=100001') {
    my ($rc, $out) = $gw->test_config(webhook_http(handoff => substr($bad, 8)));
    isnt($rc, 0, "nginx -t refuses $bad");
    like($out, qr/invalid parameter "\Q$bad\E"/, '... naming it');
}

done_testing;
