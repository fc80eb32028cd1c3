#!/usr/bin/perl
# Faults under a flood of uniquely identified webhooks from several clients:
# the writer killed, PostgreSQL stopped for WA_PG_DOWN seconds (30), nginx
# reloaded, a worker killed, the ring full, the ring file deleted,
# truncated, or of another version or size. In every case the database
# ends with exactly the acknowledged messages: none missing, none twice,
# none that was refused.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use Digest::SHA qw(sha256_hex);
use Test::More;
use Time::HiRes qw(sleep time);
use WaTest;
use WaFlood;
use WaPayload qw(body value message);

my $PG_DOWN = $ENV{WA_PG_DOWN} // 30;

my $t = WaTest->new;
$t->start_pg;
$t->migrate;
my $mock = $t->start_mock;
$t->start_nginx(ring_size => '8m');
$t->start_writer;

sub mock_count { scalar(my @r = $mock->requests) }

# the error log from here on
sub log_mark { length $t->error_log }
sub log_since { substr($t->error_log, $_[0]) }

sub exactly_once { my ($f, $r, $what) = @_; $f->exactly_once($r, $what, 60) }

sub flood_during {
    my ($what, $fault, %o) = @_;
    my $f = WaFlood->start($t, clients => $o{clients} // 3, rate => $o{rate});
    sleep 0.5;
    $fault->($f);
    sleep 0.5;
    my $r = $f->stop;
    exactly_once($f, $r, $what);
    return $r;
}

# ---- (a) the writer killed -9 three times ----------------------------------

flood_during('writer killed -9 x3', sub {
    for (1 .. 3) {
        sleep 0.7;
        $t->kill_writer;
        sleep 0.3;
        $t->start_writer;
    }
});

# ---- (c) nginx reloaded three times ------------------------------------------

my $r = flood_during('nginx reloaded x3', sub {
    for (1 .. 3) { sleep 0.5; $t->reload_nginx }
});
# an old worker closes its idle keep-alive connections: a request sent on
# one as it closes gets no answer (HTTP's own race; Meta retries those)
is($r->{codes}{503} // 0, 0, 'reloads: no request refused ('
   . ($r->{codes}{599} // 0) . ' kept-alive connections closed under a request)');

# ---- (d) a worker killed -9 ---------------------------------------------------

my $mark = log_mark();
my @before = $t->worker_pids;
flood_during('a worker killed -9', sub {
    sleep 0.5;
    kill 'KILL', $before[0];
    $t->wait_for(sub { scalar($t->worker_pids) == @before }, 10, 'respawn');
    sleep 0.5;
});
like(log_since($mark), qr/exited on signal 9/, 'nginx saw its worker die');
is(scalar($t->worker_pids), scalar @before, 'and started another');

# ---- (b) PostgreSQL stopped for $PG_DOWN s under a steady flood -------------

$mark = length $t->writer_log;
$r = flood_during("PostgreSQL down ${PG_DOWN}s", sub {
    $t->stop_pg;
    sleep $PG_DOWN;
    $t->start_pg;
}, rate => 40);
is(($r->{codes}{503} // 0) + ($r->{codes}{599} // 0), 0,
   'PostgreSQL down: every webhook still acknowledged');
like(substr($t->writer_log, $mark), qr/CRITICAL.*flush.*\[\d+, \d+\)/,
     'the writer said CRITICAL, with the ring range');
like(substr($t->writer_log, $mark), qr/INFO.*recovered/, 'and that it recovered');

# ---- (e) the ring full, the writer stopped -----------------------------------

$t->stop_writer;
my $sends_before = mock_count();
my ($full_send, $acked_full);
# the send's record is larger than the flood's: the flood stops with up to
# one of its records' room left (above the ring's reserve for outcomes),
# where a smaller send fits, and is stored, as t/40 shows
my $full_text = 'while full ' . ('x' x 200);
$r = flood_during('ring full', sub {
    my ($f) = @_;
    $t->wait_for(sub { ($f->answers->{503} // 0) > 20 }, 60, 'a full ring');
    $full_send = $t->send_message({ to => '972509990000', text => $full_text });
    $t->start_writer;
}, clients => 2);
ok($r->{codes}{503}, "ring full: $r->{codes}{503} webhooks answered 503");
is($full_send->{status}, 503, 'a send while the ring is full: 503');
is(mock_count(), $sends_before, 'and it never reached the provider');
is($t->sql_value("SELECT count(*) FROM whatsapp_message WHERE body = ?", $full_text),
   0, 'nor the database');

# ---- the ring file deleted under a running nginx ------------------------------

my $one = sub { $t->post_webhook(body(value(messages => [ message('text', @_) ]))) };
@before = $t->worker_pids;
$mark = log_mark();
my $wmark = length $t->writer_log;
my $f = WaFlood->start($t, clients => 2, rate => 50);
sleep 0.5;
unlink $t->ring;
sleep 1.5;
$r = $f->stop;
ok($r->{codes}{503}, 'ring deleted: webhooks get 503 (' . ($r->{codes}{503} // 0) . ')');
like(log_since($mark), qr/wa_ring .* was deleted under nginx, answering 503/,
     'nginx says the ring was deleted');
is(join(',', $t->worker_pids), join(',', @before), 'no worker crashed');
exactly_once($f, $r, 'ring deleted');
ok($t->wait_for(sub { substr($t->writer_log, $wmark) =~ /drained up to pos/ }, 10, 'drain'),
   'the writer drained the deleted file before letting it go');
$t->reload_nginx;
ok(-s $t->ring, 'nginx -s reload creates a new ring');
my $m = message('text');
ok($t->wait_for(sub { $t->post_webhook(body(value(messages => [$m])))->{status} == 200 },
                10, '200 again'), 'and webhooks are accepted again');
ok($t->wait_for(sub { $t->sql_value('SELECT count(*) FROM whatsapp_message
                        WHERE provider_message_id = ?', $m->{id}) }, 15, 'new ring drained'),
   'the writer found the new ring and drained it');

# ---- the ring file truncated under a running nginx -----------------------------

@before = $t->worker_pids;
$mark = log_mark();
$wmark = length $t->writer_log;
truncate $t->ring, 4096 or die "truncate: $!";
is($one->()->{status}, 503, 'ring truncated: 503');
like(log_since($mark), qr/was truncated under nginx, answering 503/,
     'nginx says the ring was truncated');
is($t->http('GET', '/wa_status')->{status}, 200, 'wa_status still answers');
ok($t->wait_for(sub { substr($t->writer_log, $wmark) =~ /CRITICAL.*truncated under us/ },
                10, 'writer CRITICAL'), 'the writer says CRITICAL');
is(join(',', $t->worker_pids), join(',', @before), 'no worker crashed (no SIGBUS)');
unlike(log_since($mark), qr/exited on signal/, 'no worker exited on a signal');
ok($t->{writer} && kill(0, $t->{writer}), 'the writer is still running');
$t->reload_nginx;
like(log_since($mark), qr/wa_ring .* is unusable.*too small/,
     'a reload does not reinitialise the truncated file: it says why');
is(-s $t->ring, 4096, 'and leaves it as it is');
unlink $t->ring;
$t->reload_nginx;
ok($t->wait_for(sub { $one->()->{status} == 200 }, 10, 'recovery'),
   'removed by the operator and reloaded: accepted again');

# ---- a ring of another version or size ----------------------------------------

$t->stop_nginx;
$t->stop_writer;
open my $fh, '+<', $t->ring or die;
binmode $fh;
seek $fh, 8, 0;
print $fh pack('V', 99);
close $fh;
my $sum = sha256_hex(WaTest::slurp($t->ring));
$mark = log_mark();
$t->start_nginx(ring_size => '8m');
like(log_since($mark), qr/unusable.*ring version 99/, 'another version: nginx says so');
is($one->()->{status}, 503, 'and answers 503');
$t->stop_nginx;
is(sha256_hex(WaTest::slurp($t->ring)), $sum, 'the file is not reinitialised');

unlink $t->ring;
$t->start_nginx(ring_size => '8m');
is($one->()->{status}, 200, 'a fresh ring');
$t->stop_nginx;
$sum = sha256_hex(WaTest::slurp($t->ring));
# another size is a configuration error: nginx does not start (a reload
# keeps the running configuration: t/42) rather than answer 503 to all
my ($rc, $out) = $t->nginx_t(ring_size => '16m');
isnt($rc, 0, 'another size configured: nginx -t fails');
like($out, qr/"wa_ring": .*8388608 bytes.*not size=16777216/,
     'naming wa_ring and both sizes');
ok(!eval { $t->start_nginx(ring_size => '16m'); 1 }, 'and nginx does not start');
is(sha256_hex(WaTest::slurp($t->ring)), $sum, 'the file is not reinitialised');

done_testing();
