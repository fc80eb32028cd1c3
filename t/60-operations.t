#!/usr/bin/perl
# What an operator sees: wa_status (JSON and Prometheus), wa-writer status
# without nginx, the writer's settings, and make run's embedded default.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use JSON::PP;
use Test::More;
use Time::HiRes qw(sleep);
use WaTest;
use WaPayload qw(body value message);

my $t = WaTest->new;
$t->start_pg;
$t->migrate;
$t->start_nginx;

my $writer = "$WaTest::BUILD/wa-writer";

# ---- status with the writer down, records waiting --------------------------------

$t->post_webhook(body(value(messages => [ message('text') ]))) for 1 .. 3;

my $r = $t->http('GET', '/wa_status');
is($r->{status}, 200, 'wa_status answers');
like($r->{headers}{'content-type'}, qr{application/json}, 'JSON by default');
my $st = eval { decode_json($r->{content}) };
ok($st, 'valid JSON') or diag($r->{content});
is($st->{ring}{available}, JSON::PP::true(), 'ring available');
is($st->{ring}{records_waiting}, 3, '3 records waiting');
ok($st->{ring}{bytes_waiting} > 0, 'bytes waiting');
is($st->{ring}{reserved}, $st->{ring}{size} / 16, 'the sixteenth kept for outcomes');
is($st->{producers}{published}, 3, '3 published');
is($st->{writer}{alive}, JSON::PP::false(), 'no writer: not alive');

my ($rc, $out) = $t->run_quiet($writer, 'status', '--ring', $t->ring);
is($rc, 0, 'wa-writer status runs without nginx');
like($out, qr/^bytes_waiting [1-9]/m, 'and shows the bytes waiting');
like($out, qr/^reserved $st->{ring}{reserved}$/m, 'and the reserve for outcomes, as wa_status');
like($out, qr/^writer_alive no/m, 'and the writer down');

# ---- with the writer ---------------------------------------------------------------

$t->start_writer;
ok($t->wait_for(sub {
    my $s = decode_json($t->http('GET', '/wa_status')->{content});
    $s->{ring}{bytes_waiting} == 0 && $s->{writer}{alive};
}, 10, 'drained'), 'the writer drains and is alive');
$st = decode_json($t->http('GET', '/wa_status')->{content});
is($st->{writer}{rows_written}, 3, 'rows written: 3');
ok($st->{writer}{pid} > 0, 'writer pid shown');
ok($st->{writer}{heartbeat_age_ms} < 5000, 'fresh heartbeat');

$r = $t->http('GET', '/wa_status?format=prometheus');
like($r->{headers}{'content-type'}, qr{text/plain}, 'Prometheus text on ?format=prometheus');
like($r->{content}, qr/^wa_writer_up 1$/m, 'wa_writer_up 1');
like($r->{content}, qr/^wa_published_records_total 3$/m, 'published counter');
like($r->{content}, qr/^wa_refused_total\{reason="full"\} 0$/m, 'refusals by reason');
like($r->{content}, qr/^wa_ring_reserved_bytes $st->{ring}{reserved}$/m, 'the reserve');
unlike($r->{content}, qr/^[^#\n]+ [^\d.\n]/m, 'every sample is numeric');
$r = $t->http('GET', '/wa_status', { Accept => 'text/plain;version=0.0.4' });
like($r->{content}, qr/^# TYPE wa_ring_waiting_bytes gauge$/m, 'or on Accept: text/plain');
is($t->http('POST', '/wa_status', {}, 'x')->{status}, 405, 'POST to wa_status: 405');

# ---- the last error reaches wa_status -------------------------------------------------

$t->stop_pg;
$t->post_webhook(body(value(messages => [ message('text') ])));
ok($t->wait_for(sub {
    decode_json($t->http('GET', '/wa_status')->{content})->{writer}{last_error} ne ''
}, 10, 'last error'), 'a failed flush shows as last_error');
$st = decode_json($t->http('GET', '/wa_status')->{content});
ok($st->{writer}{flush_failures} > 0, 'and counts flush failures');
unlike($st->{writer}{last_error}, qr/password/i, 'no credentials in it');
$t->start_pg;
$t->wait_for(sub { decode_json($t->http('GET', '/wa_status')->{content})->{ring}{bytes_waiting} == 0 },
             15, 'recovered');

# ---- the writer's settings -----------------------------------------------------------

($rc, $out) = $t->run_quiet($writer, '--help');
is($rc, 0, '--help exits 0');
like($out, qr/--batch-size.*--batch-delay-ms/s, '--help lists the settings');
($rc, $out) = $t->run_quiet($writer, '--ring', $t->ring, '--batch-size', 'lots');
is($rc, 2, 'a bad setting is refused (exit 2)');
like($out, qr/--batch-size/, 'naming the setting');
($rc, $out) = $t->run_quiet($writer, '--bogus');
isnt($rc, 0, 'an unknown option is refused');
($rc, $out) = $t->run_quiet('sh', '-c', "WA_BATCH_SIZE=0 $writer --ring " . $t->ring);
is($rc, 2, 'settings from the environment are checked too');

$t->stop_writer;
$t->stop_nginx;

# ---- make run: the embedded default, twice, stopped cleanly ---------------------------

# processes whose command line names the run directory (but not ps itself)
sub left_behind {
    my ($dir) = @_;
    return grep { index($_, $dir) >= 0 && !/\bps -eo\b/ } split /\n/, `ps -eo pid=,args=`;
}

SKIP: {
    skip 'make run needs root (it starts PostgreSQL as nobody)', 6 unless $> == 0;

    my $run = $t->dir . '/run';
    my ($port, $pg, $mockp) = map { WaTest::free_port() } 1 .. 3;
    my %env = (WA_RUN_DIR => $run, WA_PORT => $port, WA_PG_PORT => $pg, WA_MOCK_PORT => $mockp);

    my $start = sub {
        my $pid = fork // die;
        if ($pid == 0) {
            $ENV{$_} = $env{$_} for keys %env;
            open STDOUT, '>>', $t->dir . '/make-run.log';
            open STDERR, '>&', \*STDOUT;
            exec 'sh', "$WaTest::TOP/scripts/run.sh" or POSIX::_exit(127);
        }
        return $pid;
    };

    my $pid = $start->();
    ok($t->wait_for(sub { WaTest::slurp($t->dir . '/make-run.log') =~ /Ctrl-C stops/ }, 60, 'up'),
       'make run starts everything and prints what to curl');
    my $ua = HTTP::Tiny->new(timeout => 10);
    $r = $ua->request('POST', "http://127.0.0.1:$port/send", {
        headers => { 'Content-Type' => 'application/json' },
        content => '{"to":"+972501234567","text":"Hello from make run"}' });
    is($r->{status}, 200, 'a send through the mock works');
    kill 'TERM', $pid;
    waitpid $pid, 0;
    sleep 0.5;
    is(scalar(left_behind($run)), 0, 'stopping leaves no process behind');

    $pid = $start->();
    $t->wait_for(sub { () = WaTest::slurp($t->dir . '/make-run.log') =~ /Ctrl-C stops/g; 1 }, 1);
    ok($t->wait_for(sub {
        my @n = WaTest::slurp($t->dir . '/make-run.log') =~ /Ctrl-C stops/g; @n == 2 }, 60, 'up again'),
       'a second make run starts');
    my $log = WaTest::slurp($t->dir . '/make-run.log');
    my @created = $log =~ /creating the database/g;
    is(scalar @created, 1, 'and reuses the database');
    kill 'TERM', $pid;
    waitpid $pid, 0;
    sleep 0.5;
    is(scalar(left_behind($run)), 0, 'stopped cleanly again')
        or diag(join "\n", left_behind($run));
}

done_testing();
