#!/usr/bin/perl
# wa-writer dead-letters: list and show what PostgreSQL refused for good,
# replay it once the cause is fixed, through the ring's own ingest
# functions: a replay stores the row (with its lead), is marked and kept; a
# record refused again keeps waiting with its new reason; a replay is
# idempotent. The count waiting reaches wa_status (JSON and Prometheus) and
# wa-writer status.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use JSON::PP;
use Test::More;
use WaTest;
use WaPayload qw(body value message status);

my $t = WaTest->new;
$t->start_pg;
$t->migrate;
$t->start_nginx;

my $writer = "$WaTest::BUILD/wa-writer";
my $tag = time . $$;

sub dl {
    my (@args) = @_;
    return $t->run_quiet($writer, 'dead-letters', @args, '--db', $t->dsn);
}

sub status_json { decode_json($t->http('GET', '/wa_status')->{content}) }

# no writer has counted yet (as with a writer older than the count): said so
my $st = status_json();
ok(exists $st->{writer}{dead_letters_waiting} && !defined $st->{writer}{dead_letters_waiting},
   'before any writer counted: dead_letters_waiting is null');
unlike($t->http('GET', '/wa_status?format=prometheus')->{content},
       qr/^wa_writer_dead_letters_waiting/m, 'and absent from Prometheus, not 0');
$t->start_writer;

# ---- a cause the operator can fix: a constraint the rows must meet ----------

$t->sql(q{ALTER TABLE whatsapp_message ADD CONSTRAINT t61_no_forbidden
          CHECK (body IS NULL OR body NOT LIKE 'forbidden%') NOT VALID});

my $bad = message('text', from => '972506100001', text => "forbidden one $tag");
my $bad2 = message('text', from => '972506100002', text => "forbidden two $tag");
my $good = message('text', from => '972506100003', text => "fine $tag");
is($t->post_webhook(body(value(messages => [ $bad, $good ])))->{status}, 200,
   'a body with a message the database refuses, and a good one');
is($t->post_webhook(body(value(messages => [ $bad2 ])))->{status}, 200,
   'and another refused one');

# a record that can never be stored: invalid UTF-8, put in the ring as an
# older build or another producer could have
open my $feed, '|-', "$WaTest::BUILD/wa-feed", $t->ring or die;
print $feed "in business=1 phone_number_id=$WaTest::PHONE_ID phone=972506100009"
          . " wamid=wamid.t61bad$tag msg_type=text body=bad%ff%fe%20byte\n";
ok(close($feed), 'one record with invalid UTF-8');

ok($t->wait_for(sub { $t->sql_value('SELECT count(*) FROM wa_dead_letter') == 3 }, 15,
                'dead letters'), 'three dead letters');
is($t->sql_value('SELECT count(*) FROM whatsapp_message WHERE provider_message_id = ?', $good->{id}),
   1, 'the good message is stored');
like($t->writer_log, qr/CRITICAL dead letter: .*t61_no_forbidden/, 'each a CRITICAL line naming the constraint');
unlike($t->writer_log, qr/forbidden (one|two)/,
       "which does not repeat the customer's message (PostgreSQL's \"Failing row contains\")");

my %id = map { $_->{body} => $_->{id} } @{ $t->sql(
    q{SELECT id, fields->'fields'->>'body' AS body FROM wa_dead_letter}) };
my $id1 = $id{"forbidden one $tag"};
my $id2 = $id{"forbidden two $tag"};
my ($id3) = grep { $_ != $id1 && $_ != $id2 }
            map { $_->{id} } @{ $t->sql('SELECT id FROM wa_dead_letter') };
ok($id1 && $id2 && $id3, "their ids: $id1, $id2, $id3")
    or diag(explain($t->sql('SELECT id, record_type, fields FROM wa_dead_letter')));

# ---- list, show ------------------------------------------------------------

my ($rc, $out) = dl('list');
is($rc, 0, 'dead-letters list');
like($out, qr/^ID\s+CREATED\s+TYPE\s+RING_POS\s+REPLAYS\s+STATE\s+REASON$/m, 'a header line');
like($out, qr/^$id1\s+\S+ \S+\s+in_message\s+\d+\s+0\s+waiting\s+.*23514/m,
     'a line per dead letter: id, type, ring pos, replays, state, reason') or diag($out);
like($out, qr/^3 dead letters waiting/m, 'and the count waiting');

($rc, $out) = dl('list', '--json');
is($rc, 0, 'list --json');
my $list = eval { decode_json($out) } || [];
is(scalar @$list, 3, 'three in JSON');
is($list->[0]{record_type}, 'in_message', 'with their type');
is($list->[0]{replay_attempts}, 0, 'no replay yet');

($rc, $out) = dl('show', $id1);
is($rc, 0, 'dead-letters show');
like($out, qr/^reason\s+.*t61_no_forbidden/m, 'shows the reason whole');
like($out, qr/^replayed_at\s+-$/m, 'not replayed');
like($out, qr/"body": "forbidden one $tag"/, 'and the record\'s fields');

($rc, $out) = dl('show', $id1, '--json');
my $one = eval { decode_json($out) } || {};
is($one->{id}, $id1, 'show --json');
is($one->{fields}{fields}{wamid}, $bad->{id}, 'with the wamid in its fields');

($rc, $out) = dl('show', 999999);
is($rc, 1, 'show of an unknown id: exit 1');
($rc, $out) = dl('show');
is($rc, 2, 'show without an id: usage, exit 2');
($rc, $out) = dl('replay');
is($rc, 2, 'replay with neither ids nor --all: exit 2');
($rc, $out) = dl('frobnicate');
is($rc, 2, 'an unknown action: exit 2');

# ---- the count waiting, where operators look ----------------------------------

ok($t->wait_for(sub { (status_json()->{writer}{dead_letters_waiting} // -1) == 3 }, 15,
                'census'), 'wa_status shows 3 dead letters waiting');
like($t->http('GET', '/wa_status?format=prometheus')->{content},
     qr/^wa_writer_dead_letters_waiting 3$/m, 'and Prometheus');
(undef, $out) = $t->run_quiet($writer, 'status', '--ring', $t->ring);
like($out, qr/^dead_letters_waiting 3$/m, 'and wa-writer status');

# ---- replay before the cause is fixed: refused again, kept waiting -------------

($rc, $out) = dl('replay', $id1);
is($rc, 1, 'a replay refused again exits 1');
like($out, qr/dead letter $id1: refused again/, 'and says so');
my $row = $t->sql('SELECT * FROM wa_dead_letter WHERE id = ?', $id1)->[0];
is($row->{replay_attempts}, 1, 'one replay attempt counted');
ok(!defined $row->{replayed_at}, 'still waiting');
like($row->{reason}, qr/^SQLSTATE 23514/, "with the new reason: $row->{reason}");
like($row->{first_reason}, qr/t61_no_forbidden/, 'the first reason kept');
ok(defined $row->{last_attempt_at}, 'and when it was tried');
is($t->sql_value('SELECT count(*) FROM whatsapp_message WHERE provider_message_id = ?', $bad->{id}),
   0, 'nothing stored');

# ---- the cause fixed: replayed through the ring's functions ---------------------

$t->sql('ALTER TABLE whatsapp_message DROP CONSTRAINT t61_no_forbidden');

($rc, $out) = dl('replay', $id1);
is($rc, 0, 'replay after the fix');
like($out, qr/dead letter $id1: replayed \(in_message record: inserted\)/, 'says what it did')
    or diag($out);
my $msg = $t->sql('SELECT * FROM whatsapp_message WHERE provider_message_id = ?', $bad->{id})->[0];
ok($msg, 'the message row exists');
is($msg->{body}, "forbidden one $tag", 'with its body');
ok($msg->{lead_id}, 'and its lead');
is($t->sql_value('SELECT phone FROM leads WHERE id = ?', $msg->{lead_id}), '972506100001',
   'the lead of its phone');
$row = $t->sql('SELECT * FROM wa_dead_letter WHERE id = ?', $id1)->[0];
ok(defined $row->{replayed_at}, 'the dead letter is marked replayed');
is($row->{replay_outcome}, 'inserted', 'with the outcome');
is($row->{replay_attempts}, 2, 'two attempts');

# idempotent: again, nothing happens
($rc, $out) = dl('replay', $id1);
is($rc, 0, 'a second replay of it');
like($out, qr/already replayed/, 'is nothing to do');
is($t->sql_value('SELECT count(*) FROM whatsapp_message WHERE provider_message_id = ?', $bad->{id}),
   1, 'still one row');

# the same message arrived again meanwhile: the replay is a duplicate, one row
is($t->post_webhook(body(value(messages => [ $bad2 ])))->{status}, 200, 'Meta delivers the second again');
$t->wait_for(sub {
    $t->sql_value('SELECT count(*) FROM whatsapp_message WHERE provider_message_id = ?', $bad2->{id})
}, 10, 'redelivery');

# ---- replay --all: the fixable ones pass, the others keep waiting --------------

($rc, $out) = dl('replay', '--all');
is($rc, 1, 'replay --all with one that cannot pass: exit 1');
like($out, qr/dead letter $id2: replayed \(in_message record: duplicate\)/,
     'the redelivered one: replayed as a duplicate') or diag($out);
like($out, qr/dead letter $id3: refused again/, 'the invalid UTF-8 one: refused again');
like($out, qr/^1 replayed, 1 refused again$/m, 'a summary');
is($t->sql_value('SELECT count(*) FROM whatsapp_message WHERE provider_message_id = ?', $bad2->{id}),
   1, 'one row for the duplicate');
$row = $t->sql('SELECT * FROM wa_dead_letter WHERE id = ?', $id3)->[0];
like($row->{reason}, qr/SQLSTATE 22021/, 'the invalid one has its new reason');
is($row->{replay_attempts}, 1, 'and one attempt');

($rc, $out) = dl('list');
like($out, qr/^$id3\s.*waiting/m, 'list: the one waiting');
unlike($out, qr/^$id1\s+\d{4}-/m, 'not the replayed ones');
like($out, qr/^1 dead letter waiting/m, 'one waiting');
($rc, $out) = dl('list', '--all');
like($out, qr/^$id1\s.*replayed/m, 'list --all: the replayed ones too');

ok($t->wait_for(sub { (status_json()->{writer}{dead_letters_waiting} // -1) == 1 }, 15,
                'census'), 'wa_status follows: 1 waiting');

# a receipt waiting for its message is counted too
is($t->post_webhook(body(value(statuses => [ status('delivered', id => "wamid.t61none$tag") ])))->{status},
   200, 'a receipt for a message never seen');
ok($t->wait_for(sub { (status_json()->{writer}{receipts_waiting} // -1) >= 1 }, 15, 'receipts'),
   'wa_status counts receipts waiting for their message');

# ---- the database down: replay fails, marks nothing -----------------------------

$t->stop_writer;
$t->stop_pg;
($rc, $out) = dl('replay', $id3);
is($rc, 1, 'replay with PostgreSQL down: exit 1');
$t->start_pg;
$row = $t->sql('SELECT * FROM wa_dead_letter WHERE id = ?', $id3)->[0];
is($row->{replay_attempts}, 1, 'and nothing was counted');

done_testing;
