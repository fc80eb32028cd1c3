#!/usr/bin/perl
# make valgrind: wa-writer under valgrind's memcheck drains N records
# (100,000 by default: half a mix of inbound messages, statuses and sends,
# which go a record per statement; a quarter inbound messages, and a
# quarter sends, outcomes and receipts, which go by runs; half of them
# creating a lead) into a private PostgreSQL, then stops on SIGTERM. Fails
# on any memory error or any definite, indirect or possible leak.
#
# Usage: perl scripts/valgrind-writer.pl [records=100000]

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../t/lib";

use Time::HiRes qw(time sleep);
use WaTest;

my $n = shift // 100_000;

system('command -v valgrind >/dev/null') == 0
    or die "valgrind is needed: apt-get install valgrind\n";

my $t = WaTest->new;
$t->start_pg;
$t->migrate;

# the ring, filled before the writer starts
my $feed = "$WaTest::BUILD/wa-feed";
open my $fh, '|-', "$feed " . $t->ring . ' 268435456 >/dev/null' or die "$feed: $!";
print $fh "bench @{[ int($n / 2) ]} mixed vg\n";
print $fh "bench @{[ int($n / 4) ]} in vgruns\n";
print $fh "receipts @{[ $n - int($n / 2) - int($n / 4) ]} vgsends\n";
close $fh or die "feeding the ring failed\n";
if ($> == 0) {
    my ($uid, $gid) = (getpwnam('nobody'))[2, 3];
    chown $uid, $gid, $t->ring;
}

my $vlog = $t->dir . '/valgrind.log';
chmod 0777, $t->dir;
my $t0 = time;
$t->start_writer_cmd('valgrind', '--leak-check=full',
    '--show-leak-kinds=definite,indirect,possible',
    '--errors-for-leak-kinds=definite,indirect,possible',
    '--error-exitcode=99', "--log-file=$vlog");

my $drained = $t->wait_drained(1800);
my $secs = time - $t0;
my $rc = $t->stop_writer('TERM') >> 8;

my $v = WaTest::slurp($vlog);
my $rows = $t->sql_value('SELECT count(*) FROM whatsapp_message');
my ($errors) = $v =~ /ERROR SUMMARY: (\d+) errors/;
my %lost = $v =~ /(definitely|indirectly|possibly) lost: ([\d,]+) bytes/g;
my ($heap) = $v =~ /total heap usage: ([^\n]+)/;

printf "records fed:      %d\n", $n;
printf "drained:          %s in %.1f s under valgrind, %d message rows\n",
    $drained ? 'yes' : 'NO', $secs, $rows;
printf "heap:             %s\n", $heap // '?';
printf "lost (bytes):     definitely %s, indirectly %s, possibly %s\n",
    map { $lost{$_} // 0 } qw(definitely indirectly possibly);
printf "memory errors:    %s\n", $errors // '?';
printf "writer exit:      %d (99 means valgrind found something)\n", $rc;

my $ok = $drained && $rc == 0 && defined $errors && $errors == 0
      && !grep { ($lost{$_} // 0) ne '0' } keys %lost;
print $ok ? "valgrind: clean\n" : "valgrind: FAILED, see below\n$v";
exit($ok ? 0 : 1);
