#!/usr/bin/perl
# Migrations: idempotent, recorded, and able to repair the seed's table
# (whatsapp_message without lead_id) without losing its rows.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use WaTest;

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
like($out, qr/applied 001/, 'first run applies the migrations');

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
like($out, qr/0 applied/, 'second run applies nothing');

# each file is safe on its own too: forget they ran and run them again
$t->dbh->do('DELETE FROM wa_schema_migrations');
$out = $t->migrate;
like($out, qr/applied 001/, 'replayed migrations run again');
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

done_testing();
