#!/usr/bin/perl
# BENCH_HA=1 bash bench/run.sh: the clustered backends, started with the
# test harness's modules (t/lib/PayGW/Cluster.pm, Galera.pm): a Redis
# Cluster of 3 masters and 3 replicas and a 3-node MariaDB Galera cluster
# (scripts/mysql.cnf.in, as the single server; schema and user paygw from
# the harness's template datadir), on free loopback ports.
#
#   perl bench/ha_backends.pl OUT.json
#
# Writes OUT.json (ports, pids, each Galera node's my.cnf, the password
# file) once both clusters are up, then waits; SIGTERM (or its parent
# going away) stops every process it started.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/../t/lib";
use JSON::PP ();

use PayGW::Test;
use PayGW::Cluster;
use PayGW::Galera;

my $out = shift or die "usage: $0 OUT.json\n";
my $parent = getppid;
my $rc = PayGW::Test::RedisCluster->start(no_wait => 1);
# sized like the bench's single server, so that the ratio is the clusters'
my $g = PayGW::Test::Galera->start(no_wait => 1,
    extra_cnf => "$FindBin::Bin/../scripts/mysql-sized.cnf");
$rc->ready;
$g->ready;

my %doc = (
    redis_ports => [map { $_->port + 0 } $rc->nodes],
    redis_pids => [map { $_->pid + 0 } $rc->nodes],
    mysql_ports => [map { $_->port + 0 } $g->nodes],
    mysql_pids => [map { $_->pid + 0 } $g->nodes],
    mysql_defaults => [map { $_->dir . '/my.cnf' } $g->nodes],
    password_file => $g->password_file,
);
open my $fh, '>', "$out.tmp" or die "$out.tmp: $!\n";
print {$fh} JSON::PP->new->canonical->encode(\%doc);
close $fh;
rename "$out.tmp", $out or die "rename $out: $!\n";

# PayGW::Test stops everything at exit (its SIGTERM handler exits)
sleep 1 while getppid == $parent;
exit 0;
