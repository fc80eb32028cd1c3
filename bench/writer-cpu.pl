#!/usr/bin/perl
# The CPU time PostgreSQL spends storing plain text messages, per 1000,
# through the set function (runs of 1000) and one call per message: a
# figure a loaded machine does not move as much as wall time (the backend's
# own user + system time, from /proc). Not a test.
#
#   perl bench/writer-cpu.pl [current|v2] [rounds = 3]
#
#   current   the schema and functions of this tree (wa-writer migrate)
#   v2        those of the release before 014 (t/fixtures/sql-v2), for
#             comparison on the same machine at the same time
#
# Both are run in turn, rounds times, when no kind is given.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../t/lib";

use IO::Uncompress::Gunzip qw(gunzip $GunzipError);
use POSIX ();
use WaTest;

my @kinds = @ARGV && $ARGV[0] =~ /^(current|v2)$/ ? (shift) : qw(v2 current);
my $rounds = shift // 3;
my $tick = POSIX::sysconf(POSIX::_SC_CLK_TCK());

my $payload = '{"from":"972500000000","id":"wamid.x","timestamp":"1764037800",'
            . '"type":"text","text":{"body":"Hello, this is a benchmark message '
            . 'of a typical length, about one line of chat text."}}';

sub measure {
    my ($kind) = @_;
    my $t = WaTest->new;
    $t->start_pg;
    my $d = $t->dbh;
    $d->do('SET client_min_messages = warning');

    if ($kind eq 'v2') {
        for my $f ((sort glob "$FindBin::Bin/../t/fixtures/sql-v2/schema/*.gz"),
                   (sort glob "$FindBin::Bin/../t/fixtures/sql-v2/functions/*.gz")) {
            gunzip($f => \my $sql) or die "$f: $GunzipError";
            $d->do($sql);
        }
    } else {
        $t->migrate;
    }

    my $contact = $kind eq 'v2' ? '' : ', NULL';
    my $pid = $d->selectrow_array('SELECT pg_backend_pid()');
    my $cpu = sub {
        my @f = split ' ', (WaTest::slurp("/proc/$pid/stat") =~ s/^.*\) //sr);
        return ($f[11] + $f[12]) / $tick;
    };

    # half the phones new, as bench/writer.pl
    my $recs = sub {
        my ($k) = @_;
        return 'ARRAY[' . join(',', map {
            my $ph = sprintf '97250%07d', ($k * 1000 + $_) % 20000;
            "ROW('1','106540352242922','$ph',NULL,'Bench','wamid.$k.$_','text',"
            . "'Hello','1764037800','$payload','1764037800000'$contact)::wa_in_rec"
        } 1 .. 1000) . ']';
    };

    my @runs = map { $recs->($_) } 1 .. 42;
    $d->do("SELECT wa_ingest_in_messages($runs[$_])") for 0 .. 1;
    my $c0 = $cpu->();
    $d->do("SELECT wa_ingest_in_messages($runs[$_])") for 2 .. 41;
    my $set = ($cpu->() - $c0) / 40 * 1000;

    my $one = $d->prepare("SELECT wa_ingest_in_message('1', '106540352242922', ?, NULL,
                               'Bench', ?, 'text', 'Hello', '1764037800', '$payload',
                               '1764037800000'$contact)");
    $one->execute(sprintf('97250%07d', $_ % 20000), "wamid.w.$_") for 1 .. 500;
    $c0 = $cpu->();
    $one->execute(sprintf('97250%07d', $_ % 20000), "wamid.one.$_") for 1 .. 15000;
    my $single = ($cpu->() - $c0) * 1000 / 15;

    undef $one;
    $t->teardown;
    return ($set, $single);
}

printf "%-8s %-7s %28s %28s\n", 'round', 'schema', 'set path, ms CPU / 1000', 'one call each, ms CPU / 1000';
for my $r (1 .. $rounds) {
    for my $k (@kinds) {
        my ($set, $single) = measure($k);
        printf "%-8d %-7s %28.0f %28.0f\n", $r, $k, $set, $single;
    }
}
