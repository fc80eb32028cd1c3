#!/usr/bin/perl
# Receipts update rows monotonically and are never lost; what PostgreSQL
# rejects for good goes to wa_dead_letter; corrupt ring bytes are skipped
# loudly.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Time::HiRes qw(time sleep);
use WaTest;
use WaPayload qw(body value message status);

my $t = WaTest->new;
$t->start_pg;
$t->migrate;
$t->start_mock;
$t->start_nginx;
$t->start_writer;

my $phone = '972503333333';
my $tag = $$ . int(time * 1000);

sub row_by_wamid {
    return $t->sql('SELECT * FROM whatsapp_message WHERE provider_message_id = ?', $_[0])->[0];
}

sub receipts {
    my ($wamid, @st) = @_;
    my $ts = 1764000000;
    my $r = $t->post_webhook(body(value(statuses => [
        map { status($_, id => $wamid, timestamp => '' . $ts++) } @st ])));
    return $r->{status};
}

sub settle { sleep 0.4 }

# ---- monotonic: sent, delivered, read; then a late delivered -----------------

my $r = $t->send_message({ to => $phone, text => "WAMID_mono$tag" });
is($r->{status}, 200, 'a sent message');
my $wamid = "wamid.mono$tag";
$t->wait_for(sub { my $x = row_by_wamid($wamid); $x && $x->{status} eq 'sent' }, 10, 'sent row');

is(receipts($wamid, 'delivered'), 200, 'delivered receipt');
$t->wait_for(sub { row_by_wamid($wamid)->{status} eq 'delivered' }, 10, 'delivered');
is(row_by_wamid($wamid)->{status}, 'delivered', 'row delivered');
ok(row_by_wamid($wamid)->{delivered_at}, 'delivered_at set');

is(receipts($wamid, 'read'), 200, 'read receipt');
$t->wait_for(sub { row_by_wamid($wamid)->{status} eq 'read' }, 10, 'read');
my $read_at = row_by_wamid($wamid)->{read_at};
ok($read_at, 'read_at set');

is(receipts($wamid, 'delivered', 'sent'), 200, 'late delivered and sent receipts');
settle();
is(row_by_wamid($wamid)->{status}, 'read', 'read never goes back');
is(row_by_wamid($wamid)->{read_at}, $read_at, 'read_at set once');

# ---- read with no delivered before it -----------------------------------------

$r = $t->send_message({ to => $phone, text => "WAMID_skip$tag" });
my $w2 = "wamid.skip$tag";
$t->wait_for(sub { my $x = row_by_wamid($w2); $x && $x->{status} eq 'sent' }, 10, 'sent');
receipts($w2, 'read');
$t->wait_for(sub { row_by_wamid($w2)->{status} eq 'read' }, 10, 'read');
my $x = row_by_wamid($w2);
is($x->{status}, 'read', 'read straight after sent');
ok($x->{delivered_at}, 'read implies delivered_at');

# ---- failed keeps its code and title -------------------------------------------

$r = $t->send_message({ to => $phone, text => "WAMID_fail$tag" });
my $w3 = "wamid.fail$tag";
$t->wait_for(sub { my $x = row_by_wamid($w3); $x && $x->{status} eq 'sent' }, 10, 'sent');
$t->post_webhook(body(value(statuses => [ status('failed', id => $w3, code => 131026,
                                                 title => 'Message undeliverable') ])));
$t->wait_for(sub { row_by_wamid($w3)->{status} eq 'failed' }, 10, 'failed');
$x = row_by_wamid($w3);
is($x->{status}, 'failed', 'failed receipt applied');
is($x->{error_code}, 131026, 'its error code');
is($x->{error_title}, 'Message undeliverable', 'its title');
receipts($w3, 'delivered');
settle();
is(row_by_wamid($w3)->{status}, 'failed', 'failed is kept');
is(row_by_wamid($w3)->{error_code}, 131026, 'with its code');

# ---- a receipt before its message row: kept, applied when the row arrives -------

my $w4 = "wamid.early$tag";
is(receipts($w4, 'delivered'), 200, 'receipt for a message not recorded yet');
settle();
ok(!row_by_wamid($w4), 'no row yet');
ok($t->sql_value('SELECT count(*) FROM wa_pending_receipt WHERE provider_message_id = ?', $w4),
   'the receipt is kept');
$r = $t->send_message({ to => $phone, text => "WAMID_early$tag" });
is($r->{status}, 200, 'then the send that produced it');
$t->wait_for(sub { my $x = row_by_wamid($w4); $x && $x->{status} eq 'delivered' }, 10, 'applied');
is(row_by_wamid($w4)->{status}, 'delivered', 'the early receipt is applied to the new row');
is($t->sql_value('SELECT count(*) FROM wa_pending_receipt WHERE provider_message_id = ?', $w4),
   0, 'and no longer pending');

# ---- a receipt whose wamid the row does not know: biz_opaque_callback_data ------
# (what happens when a send's answer, and so its wamid, was lost)

$t->stop_writer;
$r = $t->send_message({ to => $phone, text => "lost answer $tag" });
my $local = $r->{json}{id};
$t->post_webhook(body(value(statuses => [
    status('delivered', id => "wamid.cb$tag", callback => $local) ])));
$t->start_writer;
$t->wait_for(sub {
    my $x = $t->sql('SELECT * FROM whatsapp_message WHERE local_id = ?', $local)->[0];
    $x && $x->{status} eq 'delivered';
}, 10, 'callback receipt');
$x = $t->sql('SELECT * FROM whatsapp_message WHERE local_id = ?', $local)->[0];
is($x->{status}, 'delivered', 'a receipt with an unknown wamid finds its row by biz_opaque_callback_data');

# ---- dead letters: one bad record, the rest of the batch stored -----------------

$t->stop_writer;
my @m = map { message('text', from => '97250444444' . $_, text => "batch $_ $tag") } 1 .. 3;
my $bad = message('text', from => '972504444449', text => "bad \xff\xfe byte $tag");
my $json = body(value(messages => [ $m[0], $m[1] ]));
# a record PostgreSQL refuses for good (invalid UTF-8): the webhook refuses
# such bodies now, so it goes into the ring as an older build or another
# producer could have put it there
is($t->post_webhook($json)->{status}, 200, 'two good messages');
open my $feed, '|-', "$WaTest::BUILD/wa-feed", $t->ring or die;
print $feed "in business=1 phone_number_id=$WaTest::PHONE_ID phone=972504444449"
          . " wamid=$bad->{id} msg_type=text body=bad%ff%fe%20byte\n";
ok(close($feed), 'one with invalid UTF-8');
is($t->post_webhook(body(value(messages => [ $m[2] ])))->{status}, 200, 'one more good');
$t->start_writer;
my @good = map { $_->{id} } @m;
$t->wait_for(sub {
    $t->sql_value('SELECT count(*) FROM whatsapp_message WHERE provider_message_id = ANY (?)', \@good) == 3
}, 15, 'good rows');
is($t->sql_value('SELECT count(*) FROM whatsapp_message WHERE provider_message_id = ANY (?)', \@good),
   3, 'the good records of the batch are stored');
$t->wait_for(sub { $t->sql_value('SELECT count(*) FROM wa_dead_letter') }, 10, 'dead letter');
my $dl = $t->sql('SELECT * FROM wa_dead_letter')->[0];
ok($dl, 'the bad one is in wa_dead_letter');
like($dl->{reason} // '', qr/\S/, "with its reason: $dl->{reason}");
ok(length($dl->{raw} // ''), 'and the raw record');
like($t->writer_log, qr/CRITICAL.*dead/i, 'with a CRITICAL line');
is($t->sql_value('SELECT count(*) FROM whatsapp_message WHERE provider_message_id = ?', $bad->{id}),
   0, 'not stored as a message');

# ---- corrupt bytes in the ring: skipped, counted, CRITICAL ------------------------

$t->stop_writer;
my $cm = message('text', from => '972505555555', text => "corrupt me $tag");
my $ok = message('text', from => '972505555556', text => "after corrupt $tag");
$t->post_webhook(body(value(messages => [$cm])));
$t->post_webhook(body(value(messages => [$ok])));
{
    # flip a byte inside the first waiting record's payload
    open my $fh, '+<', $t->ring or die;
    binmode $fh;
    my $hdr;
    sysread $fh, $hdr, 4096;
    my ($head) = unpack 'Q<', substr($hdr, 128, 8);
    my $cap = unpack 'Q<', substr($hdr, 16, 8);
    my $off = 4096 + ($head % $cap) + 32 + 10;
    sysseek $fh, $off, 0;
    my $b;
    sysread $fh, $b, 1;
    sysseek $fh, $off, 0;
    syswrite $fh, chr(ord($b) ^ 0x20);
    close $fh;
}
$t->start_writer;
$t->wait_for(sub { row_by_wamid($ok->{id}) }, 10, 'record after the corrupt one');
ok(row_by_wamid($ok->{id}), 'the record after the corrupt one is stored');
ok(!row_by_wamid($cm->{id}), 'the corrupt one is not');
like($t->writer_log, qr/CRITICAL.*checksum/, 'CRITICAL names the checksum');
like($t->http('GET', '/wa_status')->{content}, qr/"corrupt_records":1/, 'wa_status counts it');

done_testing();
