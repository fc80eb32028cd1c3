#!/usr/bin/perl
# Parked receipts with several writers on one database: a receipt parked
# while another transaction inserts its message (neither sees the other)
# is applied by a writer's sweep; one whose message never comes is reported
# once, counted, and kept. A deadlock between a writer and another
# transaction is retried with a WARN, not a CRITICAL.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Time::HiRes qw(time sleep);
use JSON::PP;
use WaTest;
use WaPayload qw(body value status);

my $t = WaTest->new;

# the settings, refused with a message that names them
for (['--pending-warn-after', '0'], ['--pending-warn-after', '10x'], ['--pending-warn-after', '366d'],
     ['--hold-until-replicated', 'yes']) {
    my ($rc, $out) = $t->run_quiet("$WaTest::BUILD/wa-writer", '--ring', $t->ring, @$_);
    is($rc, 2, "@$_ is refused");
    like($out, qr/\Q$_->[0]\E/, 'naming the option');
}
my ($rc, $help) = $t->run_quiet("$WaTest::BUILD/wa-writer", '--help');
like($help, qr/--pending-warn-after T.*\(10m\)/s, '--help gives the default');

$t->start_pg;
$t->migrate;
$t->start_mock;
$t->start_nginx;

my $tag = $$ . int(time * 1000);
my $pnid = $WaTest::PHONE_ID;

sub row { $t->sql('SELECT * FROM whatsapp_message WHERE provider_message_id = ?', $_[0])->[0] }
sub parked { $t->sql_value('SELECT count(*) FROM wa_pending_receipt WHERE provider_message_id = ? OR local_id = ?',
                           $_[0], $_[1] // $_[0]) }
sub status_of { my $r = row($_[0]); $r ? $r->{status} : '' }
sub other_session {
    DBI->connect("dbi:Pg:host=127.0.0.1;port=$t->{pg_port};dbname=postgres", 'wa', '',
                 { RaiseError => 1, AutoCommit => 1, PrintError => 0 });
}

# ---- the race: a receipt parked while its message is being inserted -------
#
# Session A is "writer A": it stores a send and its outcome (wamid W) in a
# transaction left open. Session B is "writer B": it gets W's delivered
# receipt, does not see A's row, parks it and commits. A commits. Nothing
# in either transaction could see the other: the receipt is stranded until
# a sweep applies it.

my $a = other_session();
my $b = other_session();
my ($w1, $l1) = ("wamid.race1.$tag", "wa-race1-$tag");
my ($w2, $l2) = ("wamid.race2.$tag", "wa-race2-$tag");

$a->begin_work;
for ([$l1, $w1], [$l2, $w2]) {
    my ($l, $w) = @$_;
    $a->selectrow_array('SELECT wa_ingest_out_pending(?, ?, ?, ?, NULL, ?, NULL, ?, ?, NULL, ?, NULL)',
                        undef, $l, '1', $pnid, '972507000001', 'api', 'text', "race $l", '1764000000000');
}
# the first send gets its wamid now; the second's outcome goes to B
$a->selectrow_array("SELECT wa_ingest_out_result(?, '1', 'sent', ?, NULL, NULL, NULL, NULL, NULL, '200', ?, NULL)",
                    undef, $l1, $w1, '1764000000100');
is($b->selectrow_array("SELECT wa_ingest_status('1', ?, ?, 'delivered', '1764000100', '972507000001',
                                                NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
                       undef, $pnid, $w1), 'pending', 'B parks the receipt of a message A has not committed');
is($b->selectrow_array("SELECT wa_ingest_out_result(?, '1', 'sent', ?, NULL, NULL, NULL, NULL, NULL, '200', ?, NULL)",
                       undef, $l2, $w2, '1764000000200'), 'pending',
   'B parks the outcome of a send A has not committed');
# and an edit B stores while A inserts the message it edits: B parks a
# 'change' for it
my ($wo, $we) = ("wamid.orig.$tag", "wamid.edit.$tag");
my $json = JSON::PP->new->canonical;
my $orig = { from => '972507000002', id => $wo, timestamp => '1764000000', type => 'text',
             text => { body => 'See you at 5' } };
my $edit = { from => '972507000003', id => $we, timestamp => '1764000010', type => 'edit',
             edit => { original_message_id => $wo,
                       message => { type => 'text', text => { body => 'See you at 6' } } } };
$a->selectrow_array("SELECT wa_ingest_in_message('1', ?, '972507000002', NULL, NULL, ?, 'text',
                                                 'See you at 5', '1764000000', ?, '1764000000000')",
                    undef, $pnid, $wo, $json->encode($orig));
# (B's lead is another phone's: the same phone would wait for A's
# uncommitted lead)
$b->selectrow_array("SELECT wa_ingest_in_message('1', ?, '972507000003', NULL, NULL, ?, 'edit',
                                                 NULL, '1764000010', ?, '1764000010000')",
                    undef, $pnid, $we, $json->encode($edit));
is($b->selectrow_array("SELECT kind FROM wa_pending_receipt WHERE provider_message_id = ?", undef, $wo),
   'change', 'B parks the edit of a message A has not committed');
$a->commit;

is(status_of($w1), 'sent', 'after both commit, the message has not got its receipt');
is(row($wo)->{body}, 'See you at 5', 'nor the edited message its edit');
is(parked($w1), 1, 'which is stranded in wa_pending_receipt');
is($t->sql_value('SELECT status FROM whatsapp_message WHERE local_id = ?', $l2), 'pending',
   'and the other send has not got its outcome');
sleep 1.5;
is(status_of($w1), 'sent', 'nothing applies it without a writer');

$t->start_writer('--pending-warn-after', '3s');
ok($t->wait_for(sub { status_of($w1) eq 'delivered' }, 10, 'the sweep'),
   "a writer's sweep applies the stranded receipt");
ok($t->wait_for(sub { my $r = row($w2); $r && $r->{status} eq 'sent' }, 10, 'the outcome'),
   'and the stranded outcome, by local id: the send has its wamid');
is(parked($w1) + parked($w2, $l2), 0, 'neither is parked any more');
ok($t->wait_for(sub { (row($wo)->{body} // '') eq 'See you at 6' }, 10, 'the edit'),
   'the sweep applies the stranded edit too');
is(parked($wo), 0, 'which is no longer parked');
my $r1 = row($w1);
ok($r1->{delivered_at} && $r1->{sent_at}, 'delivered_at and sent_at set');
like($t->writer_log, qr/INFO \d+ parked receipts applied by the sweep/, 'the sweep says what it did');

# idempotent and monotonic: a receipt parked again, late, for a message
# that is further along changes nothing
$t->dbh->do("INSERT INTO wa_pending_receipt (business_id, kind, provider_message_id, status, provider_ts)
             VALUES (1, 'status', ?, 'sent', now())", undef, $w1);
$t->post_webhook(body(value(statuses => [ status('read', id => $w1, timestamp => '1764000200') ])));
ok($t->wait_for(sub { status_of($w1) eq 'read' && !parked($w1) }, 10, 'read'),
   'a stale parked receipt is swept away');
is(status_of($w1), 'read', 'and never moves a message back');

my $swept = sub {
    my (undef, $out) = $t->run_quiet("$WaTest::BUILD/wa-writer", 'status', '--ring', $t->ring);
    $out =~ /^$_[0] (\d+)$/m ? $1 : -1;
};
ok($swept->('receipts_swept') >= 2, 'wa-writer status counts the receipts swept: '
   . $swept->('receipts_swept'));

# ---- a receipt whose message never comes: reported once, kept -------------

my $orphan = "wamid.orphan.$tag";
is($t->post_webhook(body(value(statuses => [ status('delivered', id => $orphan) ])))->{status},
   200, 'a receipt for a message nobody stored');
ok($t->wait_for(sub { $t->writer_log =~ /WARN parked receipt overdue: status delivered for wamid \Q$orphan\E/ },
                15, 'the WARN'), 'after --pending-warn-after it is reported');
my ($line) = $t->writer_log =~ /^(.*parked receipt overdue.*\Q$orphan\E.*)$/m;
like($line, qr/business 1, parked \d+ s ago/, 'with its business and age');
sleep 3;
my $n = () = $t->writer_log =~ /parked receipt overdue.*\Q$orphan\E/g;
is($n, 1, 'once');
is(parked($orphan), 1, 'and kept');
ok($t->sql_value('SELECT warned_at IS NOT NULL FROM wa_pending_receipt WHERE provider_message_id = ?', $orphan),
   'marked as reported');
is($swept->('receipts_overdue'), 1, 'wa-writer status counts it');
like($t->http('GET', '/wa_status')->{content}, qr/"receipts_overdue":1\b/, 'and so does wa_status');
like($t->http('GET', '/wa_status?format=prometheus')->{content},
     qr/^wa_writer_receipts_overdue_total 1$/m, 'in Prometheus text too');

# its message comes after all: the receipt still applies
my $r = $t->send_message({ to => '972507000009', text => "WAMID_orphan.$tag" });
is($r->{status}, 200, 'the message, late');
ok($t->wait_for(sub { status_of($orphan) eq 'delivered' }, 10, 'late apply'),
   'gets its reported receipt');
is(parked($orphan), 0, 'which is no longer parked');

# ---- a deadlock with another transaction: WARN, retried, nothing lost -----

# two messages, x after y in id order; a session holds x, the writer gets
# receipts for y then x and waits for x holding y; the session then wants
# y: a deadlock, which the writer (waiting longer) loses
my ($wy, $wx) = ("wamid.dly.$tag", "wamid.dlx.$tag");
for my $w ($wy, $wx) {
    (my $text = $w) =~ s/^wamid\./WAMID_/;
    is($t->send_message({ to => '972507000010', text => $text })->{status}, 200, "send $w");
}
ok($t->wait_for(sub { status_of($wx) eq 'sent' && status_of($wy) eq 'sent' }, 10, 'sent'), 'both sent');
$t->stop_writer;
my $mark = length $t->writer_log;
is($t->post_webhook(body(value(statuses => [ status('delivered', id => $wy, timestamp => '1764000300'),
                                            status('delivered', id => $wx, timestamp => '1764000301') ])))->{status},
   200, 'their receipts, y first');
my $s = other_session();
$s->do("SET deadlock_timeout = '20s'");
$s->begin_work;
$s->do("UPDATE whatsapp_message SET updated_at = now() WHERE provider_message_id = ?", undef, $wx);
# (held until replicated: with no standby, nothing to wait for)
$t->start_writer('--hold-until-replicated', 'on');
ok($t->wait_for(sub {
    $t->sql_value("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'wa-writer'
                      AND wait_event_type = 'Lock'") > 0 }, 10, 'the writer waits'),
   'the writer waits for x, holding y');
my $t0 = time;
$s->do("UPDATE whatsapp_message SET updated_at = now() WHERE provider_message_id = ?", undef, $wy);
ok(time - $t0 < 10, 'the session got y: the writer was chosen to roll back');
$s->commit;
ok($t->wait_for(sub { status_of($wx) eq 'delivered' && status_of($wy) eq 'delivered' }, 10, 'retried'),
   'the writer retried: both receipts applied');
my $log = substr $t->writer_log, $mark;
like($log, qr/WARN flush of \d+ records .* rolled back by a conflict .*40P01/, 'a WARN names the deadlock');
unlike($log, qr/CRITICAL/, 'no CRITICAL');
is($swept->('retried_conflicts'), 1, 'and wa-writer status counts it');
ok($t->wait_drained(10), '--hold-until-replicated without a standby holds nothing back');

done_testing();
