#!/usr/bin/perl
# Migrations: idempotent, recorded with their checksums, able to repair the
# seed's table (whatsapp_message without lead_id) without losing its rows,
# and to upgrade a database today's main migrated (001 to 009, recorded
# without checksums) to sql/schema/ and sql/functions/. An applied schema
# migration whose file changed is refused; a changed function file is
# applied again.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use IO::Uncompress::Gunzip qw(gunzip $GunzipError);
use Digest::MD5 qw(md5_hex);
use File::Basename qw(basename);
use WaTest;

# what this tree carries: the counts the migrate lines give
my $NSCHEMA = () = glob "$FindBin::Bin/../sql/schema/*.sql";
my $NFUNC = () = glob "$FindBin::Bin/../sql/functions/*.sql";

my $t = WaTest->new;
$t->start_pg;

# the seed's schema: messages without lead_id, leads without wa_user_id
$t->dbh->do($_) for (
    'CREATE TABLE leads (id bigserial PRIMARY KEY, business_id bigint NOT NULL,
                         phone text, name text)',
    "INSERT INTO leads (business_id, phone, name) VALUES (1, '972501111111', 'Old')",
    'CREATE TABLE whatsapp_message (id bigserial PRIMARY KEY, business_id bigint NOT NULL,
                                    direction text, phone text, provider_message_id text,
                                    body text, status text, created_at timestamptz DEFAULT now())',
    "INSERT INTO whatsapp_message (business_id, direction, phone, provider_message_id, body, status)
          VALUES (1, 'in', '972501111111', 'wamid.old1', 'old message', 'received'),
                 (1, 'in', '972502222222', 'wamid.old2', 'orphan', 'received')",
);

my $out = $t->migrate;
like($out, qr{applied sql/schema/001_schema\.sql}, 'first run applies the migrations');
like($out, qr{functions: $NFUNC of $NFUNC files applied}, 'and every function file');

my $cols = $t->sql("SELECT column_name, data_type FROM information_schema.columns
                     WHERE table_name = 'whatsapp_message'");
my %col = map { $_->{column_name} => $_->{data_type} } @$cols;
is($col{lead_id}, 'bigint', 'lead_id added to the old table');
ok($col{$_}, "column $_ added") for qw(client_ref local_id payload error_code sent_at updated_at);

my $fk = $t->sql("SELECT confdeltype FROM pg_constraint
                   WHERE conrelid = 'whatsapp_message'::regclass AND contype = 'f'");
is(scalar @$fk, 1, 'one foreign key on lead_id');
is($fk->[0]{confdeltype}, 'n', 'ON DELETE SET NULL');
ok($t->sql_value("SELECT count(*) FROM pg_indexes WHERE tablename = 'whatsapp_message'
                   AND indexdef LIKE '%(lead_id)%'"), 'lead_id is indexed');
is($t->sql_value('SELECT count(*) FROM whatsapp_message'), 2, 'old rows kept');
ok($t->sql_value("SELECT count(*) FROM leads WHERE name = 'Old'"), 'old leads kept');
ok($t->sql_value("SELECT count(*) FROM wa_schema_migrations") >= 2, 'migrations recorded');

$out = $t->migrate;
like($out, qr/\(0 applied, \d+ already there\); functions: 0 of \d+ files applied/,
     'second run applies nothing');
is(scalar @{ $t->sql('SELECT 1 FROM wa_schema_migrations WHERE checksum IS NULL') }, 0,
   'every migration is recorded with its checksum');

# each file is safe on its own too: forget they ran and run them again
$t->dbh->do('DELETE FROM wa_schema_migrations');
$out = $t->migrate;
like($out, qr{applied sql/schema/001_schema\.sql}, 'replayed migrations run again');
is($t->sql_value('SELECT count(*) FROM whatsapp_message'), 2, 'and change nothing');
is(scalar @{ $t->sql("SELECT 1 FROM pg_constraint
                       WHERE conrelid = 'whatsapp_message'::regclass AND contype = 'f'") },
   1, 'no duplicate foreign key');

# the damage the bug did: repaired by backfill-leads
my ($rc, $bf) = $t->run_quiet("$WaTest::BUILD/wa-writer", 'backfill-leads', '--db', $t->dsn);
is($rc, 0, 'backfill-leads runs');
like($bf, qr/linked 2 rows/, 'reports the rows it linked');
is($t->sql_value('SELECT count(*) FROM whatsapp_message WHERE lead_id IS NULL'), 0,
   'no row left without its lead');
is($t->sql_value("SELECT l.phone FROM whatsapp_message m JOIN leads l ON l.id = m.lead_id
                   WHERE m.provider_message_id = 'wamid.old1'"), '972501111111',
   'linked to the existing lead');
($rc, $bf) = $t->run_quiet("$WaTest::BUILD/wa-writer", 'backfill-leads', '--db', $t->dsn);
like($bf, qr/linked 0 rows/, 'safe to re-run');

# deleting a lead leaves its messages, with a NULL lead_id (the one allowed case)
$t->dbh->do("DELETE FROM leads WHERE phone = '972502222222'");
is($t->sql_value("SELECT count(*) FROM whatsapp_message WHERE provider_message_id = 'wamid.old2'
                   AND lead_id IS NULL"), 1, 'ON DELETE SET NULL keeps the message');


# ---- a database today's main migrated ---------------------------------------

my $u = WaTest->new;
$u->start_pg;
my $v1 = "$FindBin::Bin/fixtures/sql-v1";
my $top = "$FindBin::Bin/..";

# what its migrate did: each file in its own transaction, its version
# recorded without a checksum
$u->dbh->do('SET client_min_messages = warning');
$u->dbh->do('CREATE TABLE wa_schema_migrations (version text PRIMARY KEY,
                                                applied_at timestamptz NOT NULL DEFAULT now())');
# (kept gzipped: frozen history, not code to read or to match against)
for my $f (sort glob "$v1/*.sql.gz") {
    gunzip($f => \my $sql) or die "$f: $GunzipError";
    $u->dbh->begin_work;
    $u->dbh->do($sql);
    $u->dbh->do('INSERT INTO wa_schema_migrations (version) VALUES (?)', undef, basename($f, '.sql.gz'));
    $u->dbh->commit;
}
is($u->sql_value('SELECT max(version) FROM wa_schema_migrations'), '009_runs_by_index',
   'v1: at 009');

# its rows, written by its functions: an inbound message, a send the
# provider refused, a receipt parked for a message not there yet
$u->dbh->do(q{SELECT wa_ingest_in_message('1', 'PNID', '972501230001', NULL, 'Ann',
                  'wamid.v1.in', 'text', 'hello', '1764037800', NULL, '1764037800000')});
$u->dbh->do(q{SELECT wa_ingest_out_pending('V1-L1', '1', 'PNID', '972501230002', NULL, 'crm',
                  NULL, 'text', 'hi', NULL, '1764037800000')});
$u->dbh->do(q{SELECT wa_ingest_out_result('V1-L1', '1', 'failed', NULL, '131000', 'Busy',
                  'try later', 'FBV1', 'true', '503', '1764037800500')});
$u->dbh->do(q{SELECT wa_ingest_status('1', 'PNID', 'wamid.v1.later', 'delivered', '1764037900',
                  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)});
my $leads_before = $u->sql_value('SELECT count(*) FROM leads');

$out = $u->migrate;
like($out, qr/adopted 001_schema, applied by an earlier wa-writer/, 'v1: 001 adopted');
like($out, qr/adopted 002_message_lead_id/, 'v1: 002 adopted');
like($out, qr/003_ingest, applied by an earlier wa-writer, is retired/, 'v1: 003 retired');
like($out, qr/009_runs_by_index, applied by an earlier wa-writer, is retired/, 'v1: 009 retired');
unlike($out, qr{applied sql/schema/00[12]}, 'v1: 001 and 002 are not run again');
like($out, qr{applied sql/schema/010_send_attempts\.sql}, 'v1: what is new is applied');
like($out, qr{\(${\ ($NSCHEMA - 2) } applied, 2 already there\); functions: $NFUNC of $NFUNC files applied},
     'v1: and every function file');

is($u->sql_value("SELECT checksum FROM wa_schema_migrations WHERE version = '001_schema'"),
   md5_hex(WaTest::slurp("$top/sql/schema/001_schema.sql")),
   "v1: 001's row has the file's md5");
is($u->sql_value("SELECT count(*) FROM wa_schema_migrations WHERE checksum = 'retired'"), 7,
   'v1: 003 to 009 kept as history');
is($u->sql_value("SELECT count(*) FROM wa_schema_migrations WHERE checksum IS NULL"), 0,
   'v1: no row left without a checksum');

# its rows are all there, and the old layout's functions are gone
is($u->sql_value('SELECT count(*) FROM whatsapp_message'), 2, 'v1: messages kept');
is($u->sql_value('SELECT count(*) FROM leads'), $leads_before, 'v1: leads kept');
is($u->sql_value("SELECT status || ' ' || attempts || ' ' || error_code || ' ' || fbtrace_id
                    FROM whatsapp_message WHERE local_id = 'V1-L1'"),
   'failed 1 131000 FBV1', 'v1: the failed send, at its first attempt');
is($u->sql_value("SELECT count(*) FROM wa_pending_receipt"), 1, 'v1: the parked receipt kept');
is_deeply($u->dbh->selectcol_arrayref(
              "SELECT p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')'
                 FROM pg_proc p
                WHERE p.proname IN ('wa_ingest_in_messages', 'wa_ingest_statuses',
                                    'wa_ingest_sends', 'wa_ingest_sends_one_by_one')
                ORDER BY 1"),
          [ 'wa_ingest_in_messages(p_recs wa_in_rec[])',
            'wa_ingest_sends(p_recs wa_send_rec[])',
            'wa_ingest_sends_one_by_one(p_which text, p_out text[], p_recs wa_send_rec[])',
            'wa_ingest_statuses(p_recs wa_status_rec[])' ],
          'v1: the set functions take their row types, the parallel arrays are gone');
is($u->sql_value("SELECT count(*) FROM pg_proc
                   WHERE proname IN ('wa_ingest_out_pending', 'wa_ingest_out_result')"), 2,
   'v1: one signature per send function');
is($u->sql_value("SELECT count(*) FROM pg_proc WHERE proname = 'wa_run_length'"), 0,
   'v1: obsolete functions dropped');
is($u->sql_value("SELECT count(*) FROM pg_proc
                   WHERE proname IN ('wa_ingest_in_messages', 'wa_ingest_statuses',
                                     'wa_ingest_sends', 'wa_leads_known', 'wa_leads_create')
                     AND 'enable_seqscan=off' = ANY (proconfig)"), 5,
   'v1: the set functions still look rows up by index');

# and the writer ingests into it: a new message of a known lead, the
# refused send attempted again and sent, the parked receipt's message
open my $feed, '|-', "$WaTest::BUILD/wa-feed " . $u->ring . ' 1048576 >/dev/null'
    or die "feed: $!";
print $feed join '',
    "in business=1 phone_number_id=PNID phone=972501230001 wamid=wamid.v1.in2 msg_type=text"
        . " body=again timestamp=1764037801\n",
    "out_pending business=1 local_id=V1-L1 phone=972501230002 source=crm msg_type=text body=hi"
        . " attempt=2 received_ms=1764037810000\n",
    "out_result business=1 local_id=V1-L1 status=sent wamid=wamid.v1.l1 http_status=200"
        . " attempt=2 received_ms=1764037810500\n",
    "in business=1 phone_number_id=PNID phone=972501230003 wamid=wamid.v1.later msg_type=text"
        . " body=late timestamp=1764037802\n";
close $feed or die "the feed failed\n";
chown((getpwnam 'nobody')[2, 3], $u->ring) if $> == 0;
$u->start_writer;
ok($u->wait_drained(30), 'v1: the writer drains into the upgraded database');
is($u->stop_writer, 0, 'v1: and stops cleanly');
is($u->sql_value("SELECT l.name FROM whatsapp_message m JOIN leads l ON l.id = m.lead_id
                   WHERE m.provider_message_id = 'wamid.v1.in2'"), 'Ann',
   "v1: a new message finds the old lead");
is($u->sql_value("SELECT concat_ws(' ', status, attempts, provider_message_id,
                                   coalesce(error_code::text, '-'), coalesce(fbtrace_id, '-'))
                    FROM whatsapp_message WHERE local_id = 'V1-L1'"),
   'sent 2 wamid.v1.l1 - -', 'v1: the refused send, attempted again, is sent');
is($u->sql_value("SELECT status FROM whatsapp_message WHERE provider_message_id = 'wamid.v1.later'"),
   'received', 'v1: the late message is stored');
is($u->sql_value('SELECT count(*) FROM wa_pending_receipt'), 0, 'v1: its parked receipt is applied');
is($u->sql_value('SELECT count(*) FROM wa_dead_letter'), 0, 'v1: no dead letter');

$out = $u->migrate;
like($out, qr/\(0 applied, $NSCHEMA already there\); functions: 0 of $NFUNC files applied/,
     'v1: migrate again is a no-op');
unlike($out, qr/adopted|retired/, 'v1: nothing left to adopt or retire');

# a function file that changed is applied again, alone
$u->dbh->do("UPDATE wa_schema_functions SET checksum = 'older' WHERE file = 'sends'");
$out = $u->migrate;
like($out, qr{applied sql/functions/sends\.sql}, 'a changed function file is applied again');
like($out, qr/functions: 1 of $NFUNC files applied/, 'and only it');

# an applied migration whose file changed: refused, naming the file,
# before anything is changed
$u->dbh->do("UPDATE wa_schema_migrations SET checksum = md5('an edit') WHERE version = '010_send_attempts'");
$u->dbh->do("DELETE FROM wa_schema_functions WHERE file = 'leads'");
($rc, my $refused) = $u->run_quiet("$WaTest::BUILD/wa-writer", 'migrate', '--db', $u->dsn);
isnt($rc, 0, 'an edited migration: migrate fails');
like($refused, qr{ERROR migrate: sql/schema/010_send_attempts\.sql was changed after it was applied},
     'and names the file');
is($u->sql_value("SELECT count(*) FROM wa_schema_functions WHERE file = 'leads'"), 0,
   'and changes nothing');
$u->teardown;


# ---- a running installation of the previous release (012), its ring full ---
#
# The database as the previous release's wa-writer migrated it (schema 001
# to 012 and its function files, frozen in t/fixtures/sql-v2), holding rows
# its functions wrote; its ring holds records of its format (no contact
# field) that its writer has not drained. The upgrade of the README: the
# new wa-writer migrates (014), then drains the old ring: every record is
# stored, with the new columns computed from its payload, nothing is
# dead-lettered. A writer of the previous release still running between
# the two steps is served too: its per-record call (11 arguments) stores.

my $w = WaTest->new;
$w->start_pg;
my $v2 = "$FindBin::Bin/fixtures/sql-v2";
$w->dbh->do('SET client_min_messages = warning');
$w->dbh->do('CREATE TABLE wa_schema_migrations (version text PRIMARY KEY, checksum text,
                                                applied_at timestamptz NOT NULL DEFAULT now())');
$w->dbh->do('CREATE TABLE wa_schema_functions (file text PRIMARY KEY, checksum text NOT NULL,
                                               applied_at timestamptz NOT NULL DEFAULT now())');
for my $f (sort glob "$v2/schema/*.sql.gz") {
    gunzip($f => \my $sql) or die "$f: $GunzipError";
    $w->dbh->begin_work;
    $w->dbh->do($sql);
    $w->dbh->do('INSERT INTO wa_schema_migrations (version, checksum) VALUES (?, ?)', undef,
                basename($f, '.sql.gz'), md5_hex($sql));
    $w->dbh->commit;
}
for my $f (sort glob "$v2/functions/*.sql.gz") {
    gunzip($f => \my $sql) or die "$f: $GunzipError";
    $w->dbh->do($sql);
    $w->dbh->do('INSERT INTO wa_schema_functions (file, checksum) VALUES (?, ?)', undef,
                basename($f, '.sql.gz'), md5_hex($sql));
}
is($w->sql_value('SELECT max(version) FROM wa_schema_migrations'), '012_webhook_fields',
   'v2: at 012');

# rows of the previous release: a lead's message, a send, sent
$w->dbh->do(q{SELECT wa_ingest_in_message('1', 'PNID', '972501240001', NULL, 'Ann',
                  'wamid.v2.in', 'text', 'hello', '1764037800', NULL, '1764037800000')});
$w->dbh->do(q{SELECT wa_ingest_out_pending('V2-L1', '1', 'PNID', '972501240002', NULL, 'crm',
                  NULL, 'text', 'hi', NULL, '1764037800000', NULL)});
$w->dbh->do(q{SELECT wa_ingest_out_result('V2-L1', '1', 'sent', 'wamid.v2.out', NULL, NULL,
                  NULL, NULL, NULL, '200', '1764037800500', NULL)});

# its ring: records as its module wrote them (the fields its parser set)
sub pct { my $s = shift; $s =~ s/([^A-Za-z0-9._\-:\/{}\[\],"])/sprintf '%%%02X', ord $1/ge; $s }
my @old = (
    [ 'wamid.v2.img', 'image', undef,
      '{"from":"972501240001","id":"wamid.v2.img","timestamp":"1764037900","type":"image",'
      . '"image":{"mime_type":"image/jpeg","sha256":"abc=","id":"9001"}}' ],
    [ 'wamid.v2.loc', 'location', 'Office',
      '{"from":"972501240001","id":"wamid.v2.loc","timestamp":"1764037901","type":"location",'
      . '"location":{"latitude":32.0853,"longitude":34.7818,"name":"Office"}}' ],
    [ 'wamid.v2.reply', 'text', 'yes',
      '{"from":"972501240001","id":"wamid.v2.reply","timestamp":"1764037902","type":"text",'
      . '"context":{"from":"15550783881","id":"wamid.v2.out"},"text":{"body":"yes"}}' ],
    [ 'wamid.v2.sys', 'system', 'User Ann changed from 972501240001 to 972501240009',
      '{"from":"972501240001","id":"wamid.v2.sys","timestamp":"1764037903","type":"system",'
      . '"system":{"body":"User Ann changed from 972501240001 to 972501240009",'
      . '"wa_id":"972501240009","type":"user_changed_number"}}' ],
);
open my $wfeed, '|-', "$WaTest::BUILD/wa-feed " . $w->ring . ' 1048576 >/dev/null'
    or die "feed: $!";
for my $o (@old) {
    my ($id, $type, $body, $payload) = @$o;
    print $wfeed "in business=1 phone_number_id=PNID phone=972501240001 name=Ann wamid=$id"
        . " msg_type=$type" . (defined $body ? ' body=' . pct($body) : '')
        . " timestamp=1764037900 payload=" . pct($payload) . " received_ms=1764037900000\n";
}
print $wfeed "status business=1 phone_number_id=PNID wamid=wamid.v2.out status=delivered"
    . " timestamp=1764037910 phone=972501240002 payload="
    . pct('{"id":"wamid.v2.out","status":"delivered","timestamp":"1764037910",'
          . '"recipient_id":"972501240002","conversation":{"id":"CONV-V2",'
          . '"origin":{"type":"utility"}},"pricing":{"billable":true,'
          . '"pricing_model":"PMP","category":"utility","type":"regular"}}')
    . " received_ms=1764037910000\n";
print $wfeed "in business=1 phone_number_id=PNID phone=972501240009 name=Ann wamid=wamid.v2.new"
    . " msg_type=text body=again timestamp=1764037920 received_ms=1764037920000\n";
close $wfeed or die "the feed failed\n";
chown((getpwnam 'nobody')[2, 3], $w->ring) if $> == 0;

# step 1 of the upgrade: migrate, with the ring still full
$out = $w->migrate;
like($out, qr{applied sql/schema/014_message_fields\.sql}, 'v2: 014 applied');
like($out, qr/\(${\ ($NSCHEMA - 5) } applied, 5 already there\)/, 'v2: and what came after it');

# a writer of the previous release, still running, calls the per-record
# function as it knew it
is($w->sql_value(q{SELECT wa_ingest_in_message('1', 'PNID', '972501240003', NULL, 'Bo',
                      'wamid.v2.oldwriter', 'text', 'hi', '1764037930', NULL, '1764037930000')}),
   'inserted', 'v2: the previous writer still stores after the migration');

# step 2: the new writer drains the old ring
$w->start_writer;
ok($w->wait_drained(30), 'v2: the new writer drains the ring of the previous format');
is($w->stop_writer, 0, 'v2: and stops cleanly');
is($w->sql_value('SELECT count(*) FROM wa_dead_letter'), 0, 'v2: no dead letter');
is($w->sql_value("SELECT count(*) FROM whatsapp_message WHERE provider_message_id LIKE 'wamid.v2.%'"),
   8, 'v2: every record of the old ring stored, beside the rows already there');
is_deeply($w->dbh->selectall_arrayref(
              "SELECT provider_message_id, body, media_id, latitude, context_message_id
                 FROM whatsapp_message WHERE provider_message_id IN
                      ('wamid.v2.img', 'wamid.v2.loc', 'wamid.v2.reply') ORDER BY 1"),
          [ [ 'wamid.v2.img', '[image]', '9001', undef, undef ],
            [ 'wamid.v2.loc', 'Office', undef, '32.0853', undef ],
            [ 'wamid.v2.reply', 'yes', undef, undef, 'wamid.v2.out' ] ],
          "v2: old records get the new columns from their payload");
is($w->sql_value("SELECT concat_ws(' ', status, pricing_model, pricing_category, conversation_id)
                    FROM whatsapp_message WHERE provider_message_id = 'wamid.v2.out'"),
   'delivered PMP utility CONV-V2', 'v2: an old receipt keeps its pricing and conversation');
is($w->sql_value("SELECT count(DISTINCT lead_id) FROM whatsapp_message
                   WHERE provider_message_id IN ('wamid.v2.in', 'wamid.v2.img', 'wamid.v2.new')"),
   1, 'v2: the number change in the old ring moved the lead: its new number finds it');
is($w->sql_value("SELECT contact FROM whatsapp_message WHERE provider_message_id = 'wamid.v2.img'"),
   undef, 'v2: a record without a contact field: contact NULL');
$w->teardown;

done_testing();
