#!/usr/bin/perl
# Nothing acknowledged is lost: writer stopped or killed, PostgreSQL down,
# nginx reloaded, ring full. Each case counts the 200 answers and checks the
# database holds exactly those messages, once.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Time::HiRes qw(sleep);
use WaTest;
use WaPayload qw(body value message);

my $t = WaTest->new;
$t->start_pg;
$t->migrate;
$t->start_nginx(ring_size => '64k');

# post n single-message webhooks; the ids of those answered 200, and the
# other answers
sub flood {
    my ($n, %o) = @_;
    my (@acked, %other);
    for my $i (1 .. $n) {
        my $m = message('text', from => '97252' . sprintf('%07d', $i % 50));
        my $st = $t->post_webhook(body(value(messages => [$m])))->{status};
        if ($st == 200) { push @acked, $m->{id} } else { $other{$st}++ }
        $o{each}->($i) if $o{each};
    }
    return (\@acked, \%other);
}

sub stored {
    my (@ids) = @_;
    return $t->sql_value('SELECT count(*) FROM whatsapp_message
                           WHERE provider_message_id = ANY (?)', \@ids);
}

sub exactly_once {
    my ($ids, $what) = @_;
    $t->wait_for(sub { stored(@$ids) >= @$ids }, 30, $what);
    is(stored(@$ids), scalar @$ids, "$what: every acknowledged message stored");
    is($t->sql_value('SELECT count(*) FROM (SELECT provider_message_id FROM whatsapp_message
                       WHERE provider_message_id = ANY (?)
                       GROUP BY business_id, provider_message_id HAVING count(*) > 1) d', $ids),
       0, "$what: none twice");
    is($t->sql_value('SELECT count(*) FROM whatsapp_message
                       WHERE provider_message_id = ANY (?) AND lead_id IS NULL', $ids),
       0, "$what: every row has its lead");
}

# ---- writer stopped while webhooks arrive, then started ---------------------

my ($acked, $other) = flood(100);
is(scalar @$acked, 100, 'writer down: webhooks still acknowledged');
is(stored(@$acked), 0, 'nothing stored without a writer');
$t->start_writer;
exactly_once($acked, 'writer started late');

# ---- ring full: 503, nothing lost -------------------------------------------

$t->stop_writer;
($acked, $other) = flood(400);
ok($other->{503}, "ring full: 503 answers (" . ($other->{503} // 0) . ")");
ok(@$acked > 0 && @$acked < 400, scalar(@$acked) . ' acknowledged before the ring filled');
like($t->error_log, qr/ring full/, 'ring full logged');
my $st = $t->http('GET', '/wa_status');
like($st->{content}, qr/"refused":[1-9]/, 'wa_status counts refusals');
$t->start_writer;
exactly_once($acked, 'after ring full');
is($t->post_webhook(body(value(messages => [ message('text') ])))->{status}, 200,
   'space again once the writer drained the ring');

# ---- writer killed -9 three times during traffic ----------------------------

my $kills = 0;
($acked, $other) = flood(150, each => sub {
    my ($i) = @_;
    if ($i % 50 == 25) {
        $t->kill_writer;
        $kills++;
        sleep 0.1;
        $t->start_writer;
    }
});
is($kills, 3, 'writer killed 3 times');
exactly_once($acked, 'writer killed -9');

# ---- PostgreSQL stopped: acknowledged, CRITICAL, stored once it is back ----

$t->stop_pg;
($acked, $other) = flood(30);
is(scalar @$acked, 30, 'PostgreSQL down: webhooks still acknowledged');
ok($t->wait_for(sub { $t->writer_log =~ /CRITICAL.*\[\d+, \d+\)/ }, 10, 'CRITICAL'),
   'writer logs CRITICAL with the ring range');
like($t->writer_log, qr/CRITICAL.*\b\d+ records\b/, 'and the batch size');
sleep 1;
$t->start_pg;
exactly_once($acked, 'PostgreSQL restarted');
like($t->writer_log, qr/INFO.*recovered/, 'recovery logged');

# ---- nginx reloaded three times during traffic -------------------------------

my $reloads = 0;
($acked, $other) = flood(90, each => sub {
    if ($_[0] % 30 == 15) { $t->reload_nginx; $reloads++ }
});
is($reloads, 3, 'nginx reloaded 3 times');
is(scalar @$acked, 90, 'every webhook acknowledged across reloads');
exactly_once($acked, 'reloads');

# ---- writer SIGTERM: clean exit ---------------------------------------------

is($t->stop_writer('TERM'), 0, 'writer exits 0 on SIGTERM');
like($t->writer_log, qr/INFO.*(exit|stop)/i, 'and says so');

done_testing();
