#!/usr/bin/perl
# The three durability levels of the ring, side by side in one run, with
# the writer and PostgreSQL (fsync on) running as in production:
#
#   shm        wa_ring in /dev/shm (tmpfs): survives process crashes
#   disk       wa_ring on a disk file system: also survives a clean
#              reboot, not a power cut or a panic (dirty pages)
#   disk+sync  wa_ring ... sync=on: the 200 (and a send's provider call)
#              waits for fdatasync: also survives a power cut
#
#   perl bench/sync.pl [seconds per wrk run = 8] [saturation connections = 256]
#   WA_BENCH_REPS=N   rounds (default 3); each figure is their median
#   WA_SYNC_KINDS=K,K only these kinds of run (sat, c32, paced, paced8, send)
#   WA_SYNC_RING=SIZE the rings' size (default 512m; a small one fills up in
#                     a long run at saturation: see bench/RESULTS.md)
#
# One PostgreSQL; an nginx and a writer per level, all up at once, so the
# runs interleave (each kind of run on each level in turn, N rounds) and a
# neighbour's load on the machine falls on every level alike. Kinds:
# webhooks at saturation (many connections: group commit shares each sync
# among the waiting requests), webhooks at bench/run.pl's 32 connections,
# webhooks paced at a fixed rate (latency below saturation), and sends.
# Every acknowledged webhook is then looked for in the database. Prints a
# markdown table; bench/run.pl (make bench) appends its rows.
#
# Two rates per run: requests answered per second while wrk runs, and the
# sustained rate, answered and stored per second until the writer has
# drained the run. At saturation a level that answers faster than its
# writer stores runs up a backlog in the ring, which the first rate does
# not count and the second does.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../t/lib";

use IO::Handle;
use Time::HiRes qw(time sleep);
use WaTest;

my $SECS = shift // 8;
my $SAT = shift // 256;
my $REPS = $ENV{WA_BENCH_REPS} // 3;
chdir "$FindBin::Bin/.." or die;

system('command -v wrk >/dev/null') == 0
    or die "wrk is needed: sh scripts/deps.sh bench\n";

my $t = WaTest->new(pg_settings => [ 'fsync=on', 'full_page_writes=on' ]);
$t->start_pg;
$t->migrate;

my $PHONE = $WaTest::PHONE_ID;
my $TOKEN = $WaTest::TOKEN;
my $shm_ring = "/dev/shm/wa-sync-bench-$$.ring";

my @rows;
sub row { push @rows, [@_]; printf STDERR "  %-44s %s\n", $_[0], join('  ', @_[1 .. $#_]) }

sub wrk {
    my ($lt, $path, %o) = @_;
    my $script = $o{script} // 'bench/webhook.lua';
    my $args = join ' ', @{ $o{args} // [] };
    my $t0 = time;
    my $c0 = WaTest::cpu_busy();
    my $out = `wrk -t2 -c$o{conns} -d${SECS}s --latency -s $script http://127.0.0.1:${\ $lt->port }$path -- $args 2>&1`;
    my $cpu = WaTest::cpu_busy() - $c0;
    my ($line) = $out =~ /^(RESULT .*)$/m or die "wrk: $out";
    my %r = $line =~ /(\w+)=([\d.]+)/g;
    $r{ok} = $r{requests} - $r{non2xx};
    $r{rps} = $r{ok} / $r{seconds};
    $r{cpu_us} = $cpu / ($r{ok} || 1) * 1e6;
    @r{qw(t0 c0)} = ($t0, $c0);
    return \%r;
}

sub count_tag {
    my ($tag) = @_;
    return $t->sql_value("SELECT count(*) FROM whatsapp_message
                           WHERE provider_message_id LIKE 'wamid.bench.$tag.%'");
}

sub fs_type {
    my ($path) = @_;
    (my $dir = $path) =~ s{/[^/]*$}{};
    my $df = (split /\n/, `df -T $dir 2>/dev/null`)[1] // '';
    my @f = split ' ', $df;
    return "$f[1] ($f[0])";
}

# the nginx and writer of a level, on the shared PostgreSQL
sub level_start {
    my ($lt, $args) = @_;
    $lt->{pg_port} = $t->{pg_port};
    my $mock_port = WaTest::free_port();
    my $http = <<EOF;
    access_log off;
    server {
        listen 127.0.0.1:$mock_port;
        location / {
            return 200 '{"messaging_product":"whatsapp","contacts":[{"input":"x","wa_id":"x"}],"messages":[{"id":"wamid.mock.\$request_id"}]}';
        }
    }
EOF
    my $server = <<EOF;
        location /webhook {
            wa_webhook;
            wa_channel $PHONE business=1 token=$TOKEN;
        }
        location /send {
            wa_send;
            wa_api_base http://127.0.0.1:$mock_port;
            # unpaced: this measures the ring's sync, not Meta's 80/s
            wa_channel $PHONE business=1 token=$TOKEN rate=off;
            wa_send_concurrency 2000;
        }
EOF
    $lt->start_nginx(ring_size => $ENV{WA_SYNC_RING} // '512m', workers => 2, worker_connections => 8192,
                     ring_args => $args, main => 'worker_rlimit_nofile 20000;',
                     http => $http, server => $server);
    $lt->start_writer;
    print STDERR "ring ${\ $lt->ring } on ${\ fs_type($lt->ring) } $args\n";
    return $lt;
}

my @names = ([ shm => 'ring in /dev/shm' ], [ disk => 'ring on disk' ],
             [ sync => 'ring on disk, sync=on' ]);
my %lt = (shm  => level_start(WaTest->new(ring_path => $shm_ring), ''),
          disk => level_start($t, ''),
          sync => level_start(WaTest->new, 'sync=on'));
my @kinds = ([ sat => "webhooks, $SAT connections (saturation)", conns => $SAT ],
             [ c32 => 'webhooks, 32 connections', conns => 32 ],
             # 64 connections, each a request every 4 ms: 16k req/s offered,
             # about what sync=on serves at most here
             [ paced => 'webhooks paced, 64 conns x 1 per 4 ms', conns => 64,
               args => [ 'delay=4' ] ],
             # half that, 8k req/s, which every level serves: the latency
             # a sync adds, without the queueing of a saturated server
             [ paced8 => 'webhooks paced, 64 conns x 1 per 8 ms', conns => 64,
               args => [ 'delay=8' ] ],
             [ send => 'sends, 64 connections', conns => 64,
               script => 'bench/send.lua', path => '/send' ]);

# WA_SYNC_KINDS=sat,paced8: only those kinds of run (a quick look)
if (my $only = $ENV{WA_SYNC_KINDS}) {
    my %k = map { $_ => 1 } split /,/, $only;
    @kinds = grep { $k{ $_->[0] } } @kinds;
}

# the disk's own latency for one sync of a small write (fsync through
# IO::Handle: what fdatasync costs, and a little more), before and after
sub disk_sync_ms {
    my ($dir) = @_;
    my $f = "$dir/sync-probe";
    open my $fh, '+>', $f or die "$f: $!";
    my @ms;
    for my $i (1 .. 300) {
        seek $fh, ($i % 256) * 4096, 0;
        print $fh 'x' x 600;
        $fh->flush;
        my $t0 = time;
        $fh->sync or die "fsync: $!";
        push @ms, (time - $t0) * 1000;
    }
    close $fh;
    unlink $f;
    @ms = sort { $a <=> $b } @ms;
    my $sum = 0;
    $sum += $_ for @ms;
    return sprintf 'avg %.2f ms, p50 %.2f ms, p99 %.2f ms', $sum / @ms,
        $ms[@ms / 2], $ms[int(@ms * 0.99)];
}
my $probe0 = disk_sync_ms($lt{sync}->dir);
print STDERR "the disk's fsync of a small write: $probe0\n";

my %R;      # level -> kind -> [ runs ]
for my $rep (1 .. $REPS) {
    for my $k (@kinds) {
        my ($kind, $what, %o) = @$k;
        for my $n (@names) {
            my $lt = $lt{ $n->[0] };
            my $tg = sprintf '%s%s%d%d', $n->[0], $kind, $rep, time % 100000;
            my $r = wrk($lt, $o{path} // '/webhook', %o,
                        args => [ "tag=$tg", @{ $o{args} // [] } ]);
            $lt->wait_drained(600);
            # sustained: acknowledged and stored per second, from the run's
            # start until the writer has drained it. A level that answers
            # ahead of its writer runs up a backlog in the ring during the
            # run (paid for after it); this counts that time too.
            $r->{sustained} = $r->{ok} / (time - $r->{t0});
            $r->{cpu_all_us} = (WaTest::cpu_busy() - $r->{c0}) / ($r->{ok} || 1) * 1e6;
            $r->{stored} = $kind eq 'send' ? $r->{ok} : count_tag($tg);
            push @{ $R{ $n->[0] }{$kind} }, $r;
            printf STDERR "  %s %s #%d: %.0f req/s p99 %s ms\n", $n->[0], $kind,
                $rep, $r->{rps}, $r->{p99_ms};
        }
    }
}

sub median {
    my @v = sort { $a <=> $b } @_;
    return @v % 2 ? $v[$#v / 2] : ($v[@v / 2 - 1] + $v[@v / 2]) / 2;
}

for my $k (@kinds) {
    my ($kind, $what) = @$k;
    my %m;
    for my $n (@names) {
        my $runs = $R{ $n->[0] }{$kind};
        my $m = { map { my $f = $_; ($f => median(map { $_->{$f} } @$runs)) }
                  qw(rps sustained p50_ms p99_ms cpu_us cpu_all_us) };
        my ($ok, $stored, $non2xx) = (0, 0, 0);
        for (@$runs) {
            $ok += $_->{ok};
            $stored += $_->{stored};
            $non2xx += $_->{non2xx};
        }
        $m->{acct} = $kind eq 'send'
            ? "$non2xx non-2xx"
            : sprintf('%d of %d acknowledged stored%s%s', $stored, $ok,
                      $stored >= $ok ? '' : ' MISSING',
                      $non2xx ? "; $non2xx answered non-2xx" : '');
        $m->{p99s} = join '/', map { $_->{p99_ms} } @$runs;
        $m{ $n->[0] } = $m;
    }
    for my $n (@names) {
        my $r = $m{ $n->[0] };
        row("$what: $n->[1]",
            sprintf('%.0f req/s; sustained %.0f', $r->{rps}, $r->{sustained}),
            sprintf('p50 %.2f ms', $r->{p50_ms}),
            sprintf('p99 %.2f ms (runs %s)', $r->{p99_ms}, $r->{p99s}),
            sprintf('x%.2f of disk, sustained x%.2f; CPU %.1f µs/req, %.1f '
                    . 'with the drain; %s',
                    $r->{rps} / ($m{disk}{rps} || 1),
                    $r->{sustained} / ($m{disk}{sustained} || 1),
                    $r->{cpu_us}, $r->{cpu_all_us}, $r->{acct}));
    }
}

row("the ring's disk: one fsync of a 600-byte write, before the runs", $probe0);
row('  and after them', disk_sync_ms($lt{sync}->dir));

my $disk_fs = fs_type($lt{disk}->ring);
my $shm_fs = fs_type($shm_ring);
$_->teardown for grep { $_ != $t } values %lt;
unlink $shm_ring;

printf "\nngx_wa sync bench: wrk -t2 %ds runs, medians of %d interleaved rounds, "
    . "rings on %s and %s, PostgreSQL 15 fsync on, 1-min load average at the end: %s\n\n",
    $SECS, $REPS, $disk_fs, $shm_fs, (split ' ', WaTest::slurp('/proc/loadavg'))[0];
printf "| %s |\n", join ' | ', 'run', 'figure', '', '', '';
print "| --- | --- | --- | --- | --- |\n";
printf "| %s |\n", join ' | ', map { $_ // '' } @$_[0 .. 4] for @rows;
