#!/usr/bin/perl
# Card data is wiped from the worker's memory (issue 10 item 5; SPEC §6,
# docs/operations.md "Logs and card data").  Bank-card creates that are
# approved, declined, refused by validation, sent to a provider that is
# down, and one whose body is not even valid JSON; then a core of the live
# worker (gdb's gcore) must not hold any of their card numbers, nor a CVC
# next to its key, anywhere -- and neither may the error and access logs.
# The card numbers are made up for this file (Luhn-valid, unlike any other
# in the suite), so that a match can only be one of these requests' bytes.
use strict;
use warnings;

use Test::More;

use PayGW::Gateway;
use PayGW::Test qw(http);

plan skip_all => 'gcore (gdb) is not installed (scripts/deps.sh)'
    unless grep { -x "$_/gcore" } split /:/, $ENV{PATH};
plan skip_all => 'ASan builds map terabytes of shadow memory: no core'
    if $ENV{PAYGW_ASAN};

# a 16-digit number from its first 15 digits, Luhn-valid
sub luhn {
    my ($body) = @_;
    my ($sum, $odd) = (0, 1);
    for my $d (reverse split //, $body) {
        $d *= 2 if $odd;
        $d -= 9 if $d > 9;
        $sum += $d;
        $odd = !$odd;
    }
    return $body . ((10 - $sum % 10) % 10);
}

my @CASES = (approved   => '491761357924680',
             declined   => '491762468013579',
             invalid    => '491763579135791',
             down       => '491764680246802',
             reset      => '491765791357913',
             not_json   => '491766802468024');
my (@names, %pan);
while (my ($name, $body) = splice @CASES, 0, 2) {
    push @names, $name;
    $pan{$name} = luhn($body);
}
my $CVC = '8352';

my $gw = PayGW::Gateway->start(workers => 1);
my $sim = $gw->sim;

sub create {
    my ($name, %o) = @_;
    return $gw->create(card => PayGW::Gateway->card(number => $pan{$name},
                                                    cvc => $o{cvc} // $CVC));
}

my $r = create('approved');
is_deeply([$r->{status}, $r->{json}{status}], [201, 'succeeded'], 'approved');

$sim->mode('decline');
$r = create('declined');
is_deeply([$r->{status}, $r->{json}{status}], [201, 'failed'], 'declined');
$sim->mode('normal');

$r = create('invalid', cvc => '83x2');
is($r->{status}, 400, 'validation error (CVC not digits) next to the PAN');

$sim->mode('error500');
$r = create('down');
ok($r->{status} == 502 || $r->{status} == 202,
   "provider answering 500: $r->{status}");

$sim->mode('reset');
$r = create('reset');
ok($r->{status} == 502 || $r->{status} == 202,
   "provider dropping the connection: $r->{status}");
$sim->mode('normal');

$r = $gw->api(POST => '/v1/payments', idempotency_key => $gw->fresh_key('nj'),
              body => qq|{"channel":"bank_card","card":{"number":"$pan{not_json}",|
                      . qq|"cvc":"$CVC"}|);
is($r->{status}, 400, 'a body that is not JSON, with a card in it');

# the worker that served them all, still running, with its connections
# to the backends open
my ($worker) = $gw->ngx->worker_pids;
ok($worker, "worker $worker");
my $core = $ENV{KEEP_CORE} // $gw->ngx->dir . "/worker.core";
system("gcore -o $core $worker >/dev/null 2>&1");
$core .= ".$worker" if !-e $core && -e "$core.$worker";
ok(-s $core, 'gcore wrote a core of the worker (' . (-s $core // 0) . ' bytes)');

my $mem = do { local $/; open my $fh, '<:raw', $core or die "$core: $!"; <$fh> };
unlink $core unless $ENV{KEEP_CORE};
my $sane = $mem =~ /paygw/;
ok($sane, 'the core is the worker (it has the module\'s strings)');
for my $name (@names) {
    my $n = () = $mem =~ /\Q$pan{$name}\E/g;
    is($n, 0, "$name: the card number is nowhere in the worker's memory");
}
my $cvcs = () = $mem =~ /cvc\W{1,4}\Q$CVC\E/g;
is($cvcs, 0, 'no CVC next to its key in the worker\'s memory');

my $logs = $gw->ngx->error_log . $gw->ngx->access_log;
for my $name (@names) {
    unlike($logs, qr/\Q$pan{$name}\E/, "$name: the card number is in no log");
}

done_testing;
