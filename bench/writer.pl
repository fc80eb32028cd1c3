#!/usr/bin/perl
# The writer's ways of writing inbound messages, side by side in one run on
# one PostgreSQL (fsync on), each from the same empty tables and the same
# pre-filled ring; prints one markdown row per way. Not a test.
#
#   perl bench/writer.pl [messages = 200000]
#
#   runs 0      wa-writer --runs 0: one wa_ingest_in_message call per
#               record, pipelined, one transaction per batch of 1000
#   runs        wa-writer (default): one wa_ingest_in_messages call per run
#               of 16 or more, one binary array of wa_in_rec, same batches
#   mixed       wa-writer: inbound message, send, send outcome, receipt in
#               turn, so no run forms (a record per statement, pipelined)
#   receipts    wa-writer, --runs 0 and default: N/4 sends, each outcome
#               after the next 8 sends (as sends in flight answer), then
#               delivered and read receipts in runs
#   staging     psql: \copy of the records' fields into a staging table,
#               then wa_ingest_in_messages over it, 1000 per transaction
#   values      psql: the same fields as multi-row VALUES, 1000 rows a
#               statement, aggregated into wa_ingest_in_messages's array
#   ceiling 1   psql: \copy of the finished messages into whatsapp_message,
#               their leads already there (no lead to resolve or create)
#   ceiling 2   psql: \copy of the leads the drain created, then of the
#               messages: every row the drain wrote, with no lookup
#
# Half the messages come from phones seen for the first time: a lead is
# created for them; the other half find their lead.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../t/lib";

use Time::HiRes qw(time sleep);
use WaTest;

my $N = shift // 200_000;
chdir "$FindBin::Bin/.." or die;

my $t = WaTest->new(pg_settings => [ 'fsync=on', 'full_page_writes=on' ]);
$t->start_pg;
$t->migrate;

my $psql = "/usr/lib/postgresql/15/bin/psql -X -q -v ON_ERROR_STOP=1 "
         . "-h 127.0.0.1 -p $t->{pg_port} -U wa postgres";
my $dir = $t->dir;
chmod 0777, $dir;

# the ring, created by the writer as it would be by nginx
$t->start_writer('--ring-size', '512m');
$t->wait_for(sub { -s $t->ring }, 10, 'the ring');
$t->stop_writer;

sub commify { my $n = reverse shift; $n =~ s/(\d{3})(?=\d)/$1,/g; return scalar reverse $n }

sub fresh_tables {
    my ($keep_leads) = @_;
    # wa_media (019) refers to whatsapp_message: emptied with it
    $t->dbh->do($keep_leads ? 'TRUNCATE whatsapp_message, wa_media'
                            : 'TRUNCATE whatsapp_message, wa_media, leads, wa_lead_former_id, wa_pending_receipt');
    # no ANALYZE: statistics of empty tables would plan every lookup as a
    # scan, which no installation lives with for long (autovacuum)
    $t->dbh->do('CHECKPOINT');
}

sub check_rows {
    my ($what, $tag) = @_;
    my ($rows, $orphans) = $t->dbh->selectrow_array(
        "SELECT count(*), count(*) FILTER (WHERE lead_id IS NULL)
           FROM whatsapp_message WHERE provider_message_id LIKE 'wamid.$tag.%'");
    die "$what: $rows rows of $N, $orphans without a lead\n"
        if $rows != $N || $orphans;
    return $rows;
}

# empty tables, the ring fed with one feed command, then a writer drains
# it: the seconds it took, and the writer's private memory at the end
sub feed_and_drain {
    my ($command, @writer_args) = @_;
    fresh_tables();
    open my $feed, '|-', "$WaTest::BUILD/wa-feed " . $t->ring . ' >/dev/null'
        or die "feed: $!";
    print $feed "$command\n";
    close $feed or die "the feed failed\n";
    my $t0 = time;
    $t->start_writer(@writer_args);
    $t->wait_drained(900);
    my $secs = time - $t0;
    my $rss = WaTest::slurp("/proc/$t->{writer}/status") =~ /RssAnon:\s+(\d+)/ ? $1 : 0;
    $t->stop_writer;
    return ($secs, $rss);
}

sub drain {
    my ($runs) = @_;
    my $tag = "w$runs" . int(time);
    my ($secs, $rss) = feed_and_drain("bench $N in $tag", '--runs', $runs eq 'on' ? 16 : 0);
    return (check_rows("runs $runs", $tag), $secs, $tag, $rss);
}

my (@rows, @mixed);
sub row { push @rows, [@_]; printf STDERR "  %-55s %.0f rows/s\n", $_[0], $_[1] }
my ($n_off, $s_off) = drain('off');
row('wa-writer --runs 0 (a call per record, pipelined)', $n_off / $s_off, $s_off);
my ($n_on, $s_on, $tag, $rss) = drain('on');
row('wa-writer (default: a call per run of 16 or more, an array of records)', $n_on / $s_on, $s_on);


# what the records carried, to replay it by COPY
my $fields = "$dir/fields.csv";
my $rowscsv = "$dir/rows.csv";
$t->dbh->do("COPY (SELECT m.business_id::text, m.phone_number_id, m.phone, m.wa_user_id,
                      l.name, m.provider_message_id, m.type, m.body,
                      extract(epoch FROM m.provider_ts)::bigint::text,
                      m.payload::text,
                      (extract(epoch FROM m.created_at) * 1000)::bigint::text
                 FROM whatsapp_message m JOIN leads l ON l.id = m.lead_id
                WHERE m.provider_message_id LIKE 'wamid.$tag.%' ORDER BY m.id)
         TO '$fields' CSV");
my $cols = 'business_id, lead_id, direction, phone, wa_user_id, phone_number_id, '
         . 'provider_message_id, type, body, payload, status, provider_ts, created_at, updated_at';

# staging: COPY, then the set function, a transaction per 1000 records
fresh_tables();
$t->dbh->do('CREATE UNLOGGED TABLE IF NOT EXISTS bench_stage (o bigserial PRIMARY KEY, b text,
         pnid text, ph text, u text, nm text, w text, ty text, body text,
         ts text, pl text, rms text)');
$t->dbh->do('TRUNCATE bench_stage RESTART IDENTITY');
# the set function's array of records, aggregated from rows in record order
my @aggs = ('array_agg(ROW(b, pnid, ph, u, nm, w, ty, body, ts, pl, rms, NULL)::wa_in_rec ORDER BY o)');
my $script = "$dir/staging.sql";
open my $sql, '>', $script or die;
print $sql "\\copy bench_stage (b, pnid, ph, u, nm, w, ty, body, ts, pl, rms) FROM '$fields' CSV\n";
for (my $i = 0; $i < $N; $i += 1000) {
    print $sql 'SELECT wa_ingest_in_messages(' . join(', ', @aggs) . ')'
        . " FROM bench_stage WHERE o > $i AND o <= @{[ $i + 1000 ]};\n";
}
close $sql;
my $t0 = time;
system("$psql -f $script >/dev/null") == 0 or die "staging failed\n";
my $s_stage = time - $t0;
row('psql \\copy to staging + wa_ingest_in_messages', check_rows('staging', $tag) / $s_stage, $s_stage);

# multi-row VALUES: the same records as SQL text, 1000 rows a statement,
# handed to the set function (the rows still need their leads)
fresh_tables();
my $vscript = "$dir/values.sql";
open my $vsql, '>', $vscript or die;
my $staged = $t->dbh->selectall_arrayref('SELECT o, b, pnid, ph, u, nm, w, ty, body, ts, pl, rms
                                            FROM bench_stage ORDER BY o');
for (my $i = 0; $i < @$staged; $i += 1000) {
    my $last = $i + 999 < $#$staged ? $i + 999 : $#$staged;
    print $vsql 'SELECT wa_ingest_in_messages(' . join(', ', @aggs) . ') FROM (VALUES '
        . join(",\n", map { '(' . join(', ', $_->[0], map { $t->dbh->quote($_) } @$_[1 .. 11]) . ')' }
                          @$staged[$i .. $last])
        . ") AS v(o, b, pnid, ph, u, nm, w, ty, body, ts, pl, rms);\n";
}
close $vsql;
$t0 = time;
system("$psql -f $vscript >/dev/null") == 0 or die "multi-row VALUES failed\n";
my $s_values = time - $t0;
row('psql multi-row VALUES (1000 a statement) + wa_ingest_in_messages', check_rows('values', $tag) / $s_values, $s_values);

# the ceilings: the rows staging left, COPYed back; the leads they point to
# either stay (messages alone) or are COPYed first (all the rows a drain
# writes)
my $leadscsv = "$dir/leads.csv";
$t->dbh->do("COPY (SELECT $cols FROM whatsapp_message
                WHERE provider_message_id LIKE 'wamid.$tag.%' ORDER BY id)
         TO '$rowscsv' CSV");
$t->dbh->do("COPY (SELECT id, business_id, phone, wa_user_id, name, created_at
                FROM leads ORDER BY id) TO '$leadscsv' CSV");
my $n_leads = $t->sql_value('SELECT count(*) FROM leads');

sub copy_rows {
    my $t0 = time;
    system("$psql -c \"\\copy $_\"") == 0 or die "copy failed: $_\n" for @_;
    my $secs = time - $t0;
    check_rows('copy', $tag);
    return $secs;
}

fresh_tables(1);
my $s_copy = copy_rows("whatsapp_message ($cols) FROM '$rowscsv' CSV");
row('psql \\copy of the messages, leads in place (ceiling 1)', $N / $s_copy, $s_copy);

fresh_tables();
my $s_all = copy_rows("leads (id, business_id, phone, wa_user_id, name, created_at) FROM '$leadscsv' CSV",
                      "whatsapp_message ($cols) FROM '$rowscsv' CSV");
row("psql \\copy of the $n_leads leads, then the messages (ceiling 2)", $N / $s_all, $s_all);

# receipts in runs, as from a busy outbound campaign: the sends with their
# outcomes among them, then runs of delivered and of read receipts
for my $runs ('off', 'on') {
    my $rt = "rc$runs" . int(time);
    my ($secs) = feed_and_drain("receipts $N $rt", '--runs', $runs eq 'on' ? 16 : 0);
    my $read = $t->sql_value("SELECT count(*) FROM whatsapp_message
                               WHERE local_id LIKE '$rt-%' AND status = 'read'
                                 AND delivered_at IS NOT NULL AND lead_id IS NOT NULL");
    die "receipts, runs $runs: $read of @{[ $N / 4 ]} sends read\n" if $read != $N / 4;
    push @mixed, [ 'wa-writer' . ($runs eq 'on' ? '' : ' --runs 0')
                   . ', sends with their outcomes, then receipts in runs (records)', $N / $secs, $secs,
                   $runs eq 'on' ? 'by runs' : 'a statement per record' ];
}

# a mix with no run to gather: inbound, send, send outcome, receipt, in turn
{
    my $mt = 'mx' . int(time);
    my ($secs) = feed_and_drain("bench $N mixed $mt");
    my ($in, $out) = $t->dbh->selectrow_array(
        "SELECT count(*) FILTER (WHERE direction = 'in' AND provider_message_id LIKE 'wamid.$mt.%'),
                count(*) FILTER (WHERE direction = 'out' AND local_id LIKE '$mt-%'
                                   AND status = 'delivered' AND lead_id IS NOT NULL)
           FROM whatsapp_message");
    die "mixed: $in inbound and $out delivered sends of @{[ $N / 4 ]} each\n"
        if $in != $N / 4 || $out != $N / 4;
    push @mixed, [ 'wa-writer, a mix: inbound, send, outcome, receipt in turn (records)', $N / $secs, $secs,
                   'no run to gather' ];
}

printf "| %s | %s msg/s | %.1f s | x%.2f of ceiling 1 | x%.2f of ceiling 2 |\n",
    $_->[0], commify(sprintf '%.0f', $_->[1]), $_->[2], $s_copy / $_->[2],
    $s_all / $_->[2] for @rows;
printf "| %s | %s records/s | %.1f s | %s | |\n", $_->[0],
    commify(sprintf '%.0f', $_->[1]), $_->[2], $_->[3] for @mixed;
printf "| wa-writer private memory (RssAnon) after its drain | %.1f MB | | | |\n", $rss / 1024;

$t->teardown;
