#!/usr/bin/perl
# The gateway on a 3-node MariaDB Galera cluster (issue 14): paygw_mysql
# writes to one node (host=) with the two others as failover=.  Under
# steady creates and GETs the writer is SIGKILLed: the workers move to
# the next node, creates answer again within 10 s, 503s (and 202s, a
# payment whose outcome was not recorded) are allowed meanwhile, wrong
# answers never; afterwards no payment is lost (every 201 has its row on
# the survivors), none is doubled (one row per business_no, one charge
# per payment at the acquirer), every replay gives the same answer or the
# existing payment, and the killed node rejoins with every row.
# The cluster starts in about 5 s (no state transfer: the nodes start
# from one template), so this runs in every `make test`.
use strict;
use warnings;

use Test::More;
use JSON::PP ();
use POSIX ();
use Time::HiRes qw(time sleep);

use PayGW::Gateway qw(err_code sql_quote);
use PayGW::Test qw(wait_until);

my $gw = PayGW::Gateway->start(workers => 2, galera => 1);
my $g = $gw->db;
isa_ok($g, 'PayGW::Test::Galera');
like($gw->http_conf, qr/failover=127\.0\.0\.1:\d+ failover=127\.0\.0\.1:\d+/,
     'paygw_mysql lists the other nodes');
is($g->node(1)->status('wsrep_cluster_size'), 3, 'three nodes');

sub create_ok {
    my ($r, $body) = @_;
    return $r->{status} == 201
        && ($r->{json}{business_no} // '') eq $body->{business_no}
        && ($r->{json}{amount} // -1) == $body->{amount};
}

{
    my $body = PayGW::Gateway->payment_body(amount => 4200);
    my $r = $gw->create($body);
    ok(create_ok($r, $body), 'created on the cluster') or diag($r->{body});
    my $no = $r->{json}{payment_no};
    is($g->node(2)->sql("SELECT amount FROM payments WHERE payment_no = "
                        . sql_quote($no)), "4200\n",
       '... and replicated to the third node');
}

# ---- the writer SIGKILLed under load ----------------------------------------

my $file = PayGW::Test::_mkdir('load') . '/results';
my $stop = "$file.stop";
my $pid = fork // die "fork: $!\n";
if (!$pid) {
    my $json = JSON::PP->new->canonical;
    open my $out, '>>', $file or POSIX::_exit(1);
    $out->autoflush(1);
    my $n = 0;
    until (-e $stop) {
        my $body = PayGW::Gateway->payment_body(amount => 100 + $n++);
        my $key = $gw->fresh_key('g89');
        my $t = time;
        my $r = $gw->create($body, idempotency_key => $key, timeout => 30);
        my %rec = (op => 'create', t => $t, status => $r->{status}, key => $key,
                   body => $body, answer => $r->{body},
                   ok => create_ok($r, $body) ? 1 : 0,
                   no => $r->{json}{payment_no} // '');
        print {$out} $json->encode(\%rec), "\n";
        next unless $r->{status} == 201;
        $r = $gw->get_payment($rec{no});
        print {$out} $json->encode({op => 'get', t => time, status => $r->{status},
            answer => $r->{body},
            ok => ($r->{status} == 200 && ($r->{json}{amount} // -1) == $body->{amount})
                  ? 1 : 0}), "\n";
    }
    POSIX::_exit(0);
}
ok(wait_until(sub { -s $file }, timeout => 20), 'load running');
sleep 1;
my $killed = time;
$g->node(0)->kill;
note('killed the writer, port ' . $g->node(0)->port);
my $back = wait_until(sub { $gw->create(amount => 555)->{status} == 201 },
                      timeout => 10, interval => 0.1);
ok($back, 'creates answer again within 10 s of the kill');
note(sprintf 'failover seen after %.1f s', time - $killed);
sleep 1;
{ open my $fh, '>', $stop or die; }
waitpid $pid, 0;
my @res;
{
    open my $fh, '<', $file or die;
    push @res, JSON::PP->new->decode($_) while <$fh>;
}
my %by;
$by{"$_->{op} $_->{status}"}++ for @res;
note('load: ' . join ', ', map { "$_: $by{$_}" } sort keys %by);
ok(scalar(grep { $_->{op} eq 'create' } @res) >= 5, 'requests ran');
# unavailable is 503, or 504 when a statement timed out on the dying
# node (query_timeout): both say "backend_unavailable, retry"
my @wrong = grep { !$_->{ok} && $_->{status} != 503
                   && !($_->{status} == 504
                        && ($_->{answer} // '') =~ /"code":"backend_unavailable"/)
                   && !($_->{op} eq 'create' && $_->{status} == 202) } @res;
is(scalar @wrong, 0, 'no wrong answer: 503/504 unavailable, 202 or the right one')
    or diag(join "\n", map { "$_->{op} $_->{status} $_->{answer}" }
                           @wrong[0 .. ($#wrong < 4 ? $#wrong : 4)]);

my @made = grep { $_->{op} eq 'create' && $_->{status} == 201 } @res;
my $lost = grep {
    $g->sql("SELECT COUNT(*) FROM payments WHERE payment_no = "
            . sql_quote($_->{no})) ne "1\n"
} @made;
is($lost, 0, 'no payment lost: every 201 has its row on the survivors');

my ($same, $dup, $other) = (0, 0, 0);
for my $c (grep { $_->{op} eq 'create' } @res) {
    my $r = $gw->create($c->{body}, idempotency_key => $c->{key});
    if ($c->{status} =~ /^20[12]$/ && $r->{body} eq $c->{answer}) { $same++ }
    elsif ($r->{status} == 409 && err_code($r) =~ /^(?:duplicate_business_no|idempotency_key_in_use)$/) { $dup++ }
    elsif ($c->{status} == 503 && create_ok($r, $c->{body})) { $same++ }
    else { $other++; diag("replay: was $c->{status}, now $r->{status} $r->{body}") }
}
is($other, 0, "every replay: the same answer or the existing payment ($same, $dup)");
is($g->sql("SELECT COUNT(*) FROM (SELECT 1 FROM payments GROUP BY merchant_id, "
           . "business_no HAVING COUNT(*) > 1) d"), "0\n",
   'no business_no has two payments');
my %charges;
$charges{$_->{out_trade_no}}++ for @{ $gw->sim->charges->{charges} };
is(scalar(grep { $_ > 1 } values %charges), 0,
   'the acquirer never charged a payment twice');

# ---- the killed node comes back ----------------------------------------------

$g->node(0)->start_again;
is($g->node(0)->status('wsrep_cluster_size'), 3, 'the killed node rejoined');
my $rows = $g->node(1)->sql("SELECT COUNT(*) FROM payments");
is($g->node(0)->sql("SELECT COUNT(*) FROM payments"), $rows,
   '... with every row');
my $r = $gw->create(amount => 556);
is($r->{status}, 201, 'and the gateway still works') or diag($r->{body});

done_testing;
