#!/usr/bin/perl
# A worker stopped or killed between its ring claim and its commit, at a
# point chosen by the test shim (t/shim/ring_hook.c, preloaded into nginx):
# wa-writer gives up on the record after WA_RING_STUCK_SEC (5 s) of its
# own clock and moves on. Whatever the worker does next, a request answered
# 200 is in the database: a stalled worker that wakes up finds its record
# abandoned and answers 503 (the sender retries), never 200.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Time::HiRes qw(sleep time);
use WaTest;
use WaFlood;

my $STUCK = 5;      # WA_RING_STUCK_SEC
my $SHIM = "$WaTest::BUILD/t/ring_hook.so";
-e $SHIM or BAIL_OUT("$SHIM is missing: run make first");

my $t = WaTest->new(preload => [$SHIM]);
$t->start_pg;
$t->migrate;
$t->start_writer;

my $hooks = $t->dir . '/hook';
mkdir $hooks;
chmod 0777, $hooks;     # the workers run as nobody under root

sub log_mark { length $t->error_log }
sub log_since { substr($t->error_log, $_[0]) }

# nginx whose workers act at the hook once (the first worker to get there
# after $after inbound messages), writing their pid into the file returned
sub nginx_with_hook {
    my ($point, $action, $name) = @_;
    my $once = "$hooks/$name";
    $t->start_nginx(ring_size => '8m', main => join ' ',
                    "env WA_HOOK_POINT=$point;", "env WA_HOOK_ACTION=$action;",
                    'env WA_HOOK_AFTER=30;', 'env WA_HOOK_TYPE=1;',
                    "env WA_HOOK_ONCE=$once;");
    return $once;
}

sub fired_pid {
    my ($once) = @_;
    $t->wait_for(sub { -s $once }, 20, "the hook at $once") or return 0;
    my ($pid) = WaTest::slurp($once) =~ /^(\d+)/;
    return $pid // 0;
}

sub proc_state {
    my ($pid) = @_;
    my ($state) = WaTest::slurp("/proc/$pid/stat") =~ /^\d+ \(.*?\) (\S)/;
    return $state // '';
}

sub acked_stored { my ($f, $r, $what) = @_; $f->exactly_once($r, $what, 30) }

# ---- (a) a worker killed -9 between claim and header ------------------------

my $mark = log_mark();
my $wmark = length $t->writer_log;
my $once = nginx_with_hook('claimed', 'kill', 'kill-claimed');
my @workers = $t->worker_pids;
like(WaTest::slurp("/proc/$workers[0]/maps"), qr/ring_hook\.so/,
     'the shim is mapped in the workers');

my $f = WaFlood->start($t, clients => 3, rate => 40);
my $pid = fired_pid($once);
ok($pid, "the module called the shim's hook: worker $pid killed itself "
   . 'right after its claim');
$t->wait_for(sub { scalar($t->worker_pids) == @workers }, 10, 'respawn');
ok($t->wait_for(sub {
    substr($t->writer_log, $wmark) =~ /skipped \d+ bytes .*no record header/
}, $STUCK + 10, 'the skip'), 'the writer skipped the hole after '
   . "${STUCK} s");
sleep 1;
my $r = $f->stop;
like(log_since($mark), qr/exited on signal 9/, 'nginx saw its worker die');
ok(($r->{codes}{599} // 0) >= 1, 'the webhook in flight got no answer ('
   . ($r->{codes}{599} // 0) . ' unanswered)');
acked_stored($f, $r, 'killed after claim');
ok($t->wait_drained(20), 'the writer drained the ring past the hole');
$t->stop_nginx;

# ---- (b), (c) a worker stopped for longer than the writer waits -------------

for my $case (['written', 'before its commit', qr/abandoned after $STUCK s without publish/],
              ['claimed', 'right after its claim', qr/no record header after $STUCK s/])
{
    my ($point, $when, $skip) = @$case;
    my $what = "stopped $when";

    $mark = log_mark();
    $wmark = length $t->writer_log;
    $once = nginx_with_hook($point, 'stop', "stop-$point");
    $f = WaFlood->start($t, clients => 4, rate => 40);
    $pid = fired_pid($once);
    ok($pid && $t->wait_for(sub { proc_state($pid) eq 'T' }, 5, 'stopped'),
       "$what: worker $pid stopped itself");
    ok($t->wait_for(sub { substr($t->writer_log, $wmark) =~ $skip },
                    $STUCK + 10, 'the skip'),
       "$what: the writer gave up on the record after ${STUCK} s");
    like(substr($t->writer_log, $wmark), qr/skipped \d+ bytes at ring pos/,
         "$what: and logged the skip");
    kill 'CONT', $pid;
    sleep 1.5;
    $r = $f->stop;
    ok(($r->{codes}{503} // 0) >= 1, "$what: woken up, its request got 503, "
       . 'not 200 (' . ($r->{codes}{503} // 0) . ' x 503)');
    like(log_since($mark), qr/record was abandoned by the consumer after a stall/,
         "$what: nginx says why");
    acked_stored($f, $r, $what);
    ok($t->wait_drained(20), "$what: the ring drained");
    is(scalar(grep { /exited on signal/ } split /\n/, log_since($mark)), 0,
       "$what: no worker died");
    $t->stop_nginx;
}

done_testing();
