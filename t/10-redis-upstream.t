#!/usr/bin/perl
# t/10-redis.t with paygw_redis_multiplex off: each round trip goes
# through a subrequest and an nginx upstream connection from the
# keepalive pool (what a cluster or a multi-server upstream always uses).
use strict;
use warnings;

$ENV{PAYGW_TEST_MULTIPLEX} = 'off';
my $file = __FILE__ =~ s{[^/]*$}{10-redis.t}r;
do "./$file" or die $@ || "cannot run $file: $!";
