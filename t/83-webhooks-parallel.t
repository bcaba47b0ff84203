#!/usr/bin/perl
# A delivery round sends at most "parallel" webhooks at a time
# (paygw_webhook parallel=, docs/directives.md): a batch bigger than that
# goes out as POSTs end, never more at once.  Events a round has not
# started by half its lease are put back, due at once, without counting
# an attempt, so that a round never sends past its lease; the next round
# delivers them.
use strict;
use warnings;

use Test::More;

use PayGW::Gateway qw(sql_quote);
use PayGW::Receiver;
use PayGW::Test qw(wait_until);
use PayGW::Webhooks qw(webhook_http $WHSEC create_hooked event_rows);

my $rx = PayGW::Receiver->start(secrets => [$WHSEC]);

# one worker, so that one round at a time sends (two further down)
my $gw = PayGW::Gateway->start(workers => 1,
    http => webhook_http(batch => 20, parallel => 2));

# create(N, PATH): N payments whose notify_url is the receiver's PATH,
# created while delivery waits for the backlog (a reload with a long
# interval would change the config under test: the receiver is simply
# slow instead); their payment_nos
sub create { create_hooked($gw, $rx, @_) }

sub rows { event_rows($gw, @_) }

# ---- parallel=2: never more than 2 at once ---------------------------------

$rx->clear;
my @nos = create(8, '/hook/slow/300');
ok(wait_until(sub { rows(@nos) eq join(',', ('delivered 1') x 8) }, timeout => 30),
   '8 slow webhooks delivered, one attempt each') or diag rows(@nos);
my $d = $rx->deliveries;
is(scalar(grep { ($_->{path} // '') eq '/hook/slow/300' } @{ $d->{requests} }), 8,
   '... the receiver saw 8');
cmp_ok($d->{max_inflight}, '<=', 2, "... at most 2 at once ($d->{max_inflight})");
cmp_ok($d->{max_inflight}, '>=', 2, '... and 2 at once when several waited');

# ---- half the lease gone: the rest is put back, not sent late ---------------

# 4 events wait while delivery is off; then two workers deliver with
# lease=2s and parallel=1, and each answer takes 1.2 s.  The round that
# claims them sends one, and after 1 s starts no more: it puts the other
# 3 back.  Without that, the round would still be sending them after its
# lease ran out, when the other worker's round may claim them again.
(my $off = webhook_http()) =~ s/\n\s*paygw_webhook\s[^;]*;//s or die 'no paygw_webhook';
$gw->ngx->{workers} = 2;
$gw->reload($off);
$rx->clear;
@nos = create(4, '/hook/slow/1200');
is(rows(@nos), join(',', ('pending 0') x 4), 'delivery off: 4 events wait');
$gw->reload(webhook_http(batch => 20, parallel => 1, lease => '2s'));
ok(wait_until(sub { rows(@nos) eq join(',', ('delivered 1') x 4) }, timeout => 40),
   'parallel=1, lease=2s, 1.2 s answers: all 4 delivered, one attempt each')
    or diag rows(@nos);
$d = $rx->deliveries;
my @slow = grep { ($_->{path} // '') eq '/hook/slow/1200' } @{ $d->{requests} };
is(scalar @slow, 4, '... each sent once (none sent after its lease ran out)');
is($d->{parallel}, 0, '... never the same webhook twice at once');

# ---- configuration -----------------------------------------------------------

for my $bad ('parallel=0', 'parallel=1001', 'parallel=x') {
    (my $http = webhook_http()) =~ s/parallel=100/$bad/ or die 'no parallel=';
    my ($rc, $out) = $gw->test_config($http);
    isnt($rc, 0, "nginx -t refuses $bad");
    like($out, qr/invalid parameter "\Q$bad\E"/, '... naming it');
}

done_testing;
