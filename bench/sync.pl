#!/usr/bin/perl
# The three durability levels of the ring, side by side in one run, with
# the writer and PostgreSQL (fsync on) running as in production:
#
#   shm        wa_ring in /dev/shm (tmpfs): survives process crashes
#   disk       wa_ring on a disk file system: also survives a restart of
#              the machine, not a power cut or a panic (dirty pages)
#   disk+sync  wa_ring ... sync=on: the 200 (and a send's provider call)
#              waits for fdatasync: also survives a power cut
#
#   perl bench/sync.pl [seconds per wrk run = 8] [saturation connections = 256]
#
# For each: webhooks at saturation (many connections: group commit shares
# each sync among the waiting requests), webhooks at bench/run.pl's 32
# connections, webhooks paced at a fixed rate (p99 below saturation), and
# sends; every acknowledged webhook is then looked for in the database.
# Prints a markdown table; bench/run.pl (make bench) appends its rows.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../t/lib";

use POSIX ();
use Time::HiRes qw(time sleep);
use WaTest;

my $SECS = shift // 8;
my $SAT = shift // 256;
chdir "$FindBin::Bin/.." or die;

system('command -v wrk >/dev/null') == 0
    or die "wrk is needed: sh scripts/deps.sh bench\n";

my $t = WaTest->new(pg_settings => [ 'fsync=on', 'full_page_writes=on' ]);
$t->start_pg;
$t->migrate;

my $mock_port = WaTest::free_port();
my $PHONE = $WaTest::PHONE_ID;
my $TOKEN = $WaTest::TOKEN;
my $shm_ring = "/dev/shm/ngx_wa_bench_$$.ring";

my @rows;
sub row { push @rows, [@_]; printf STDERR "  %-44s %s\n", $_[0], join('  ', @_[1 .. $#_]) }

my $HZ = POSIX::sysconf(POSIX::_SC_CLK_TCK()) || 100;
sub cpu_busy {
    my @f = split ' ', (split /\n/, WaTest::slurp('/proc/stat'))[0];
    my $busy = 0;
    $busy += $f[$_] // 0 for 1, 2, 3, 6, 7, 8;
    return $busy / $HZ;
}

sub wrk {
    my ($path, %o) = @_;
    my $script = $o{script} // 'bench/webhook.lua';
    my $args = join ' ', @{ $o{args} // [] };
    my $c0 = cpu_busy();
    my $out = `wrk -t2 -c$o{conns} -d${SECS}s --latency -s $script http://127.0.0.1:${\ $t->port }$path -- $args 2>&1`;
    my $cpu = cpu_busy() - $c0;
    my ($line) = $out =~ /^(RESULT .*)$/m or die "wrk: $out";
    my %r = $line =~ /(\w+)=([\d.]+)/g;
    $r{ok} = $r{requests} - $r{non2xx};
    $r{rps} = $r{ok} / $r{seconds};
    $r{cpu_us} = $cpu / ($r{ok} || 1) * 1e6;
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

sub level {
    my ($name, $ring, $args) = @_;

    $t->stop_nginx;
    $t->stop_writer;
    $t->{ring_path} = $ring;
    $t->start_nginx(ring_size => '512m', workers => 2, worker_connections => 8192,
                    ring_args => $args,
                    main => 'worker_rlimit_nofile 20000;', http => <<EOF, server => <<EOF);
    access_log off;
    server {
        listen 127.0.0.1:$mock_port;
        location / {
            return 200 '{"messaging_product":"whatsapp","contacts":[{"input":"x","wa_id":"x"}],"messages":[{"id":"wamid.mock.\$request_id"}]}';
        }
    }
EOF
        location /webhook {
            wa_webhook;
            wa_channel $PHONE business=1 token=$TOKEN;
        }
        location /send {
            wa_send;
            wa_api_base http://127.0.0.1:$mock_port;
            wa_channel $PHONE business=1 token=$TOKEN;
            wa_send_concurrency 2000;
        }
EOF
    $t->start_writer;

    print STDERR "$name: ring $ring on ${\ fs_type($ring) } $args\n";
    my %r;
    my $tag = sprintf '%s%d', $name =~ s/\W//gr, time % 100000;
    my $n = 0;
    for my $run ([ sat => $SAT ], [ c32 => 32 ]) {
        my $tg = "$tag$run->[0]";
        $r{ $run->[0] } = wrk('/webhook', conns => $run->[1], args => [ "tag=$tg" ]);
        $r{ $run->[0] }{tag} = $tg;
        $t->wait_drained(600);
    }
    # paced: 64 connections, each a request every 4 ms: 16k req/s offered
    my $tg = "${tag}paced";
    $r{paced} = wrk('/webhook', conns => 64, args => [ "tag=$tg", 'delay=4' ]);
    $r{paced}{tag} = $tg;
    $r{send} = wrk('/send', conns => 64, script => 'bench/send.lua');
    $t->wait_drained(600);
    for my $k (qw(sat c32 paced)) {
        $r{$k}{stored} = count_tag($r{$k}{tag});
    }
    return \%r;
}

my %L;
$L{shm} = level('shm', $shm_ring, '');
$L{disk} = level('disk', $t->dir . '/ring', '');
$L{sync} = level('disk+sync', $t->dir . '/ring-sync', 'sync=on');
$t->stop_nginx;
unlink $shm_ring;

my @names = ([ shm => 'ring in /dev/shm' ], [ disk => 'ring on disk' ],
             [ sync => 'ring on disk, sync=on' ]);
for my $k (qw(sat c32 paced)) {
    my $what = { sat => "webhooks, $SAT connections (saturation)",
                 c32 => 'webhooks, 32 connections',
                 paced => 'webhooks paced, 64 conns x 1 per 4 ms' }->{$k};
    for my $n (@names) {
        my $r = $L{ $n->[0] }{$k};
        row("$what: $n->[1]", sprintf('%.0f req/s', $r->{rps}),
            "p50 $r->{p50_ms} ms", "p99 $r->{p99_ms} ms",
            sprintf('x%.2f of disk; CPU %.1f µs/req; %d of %d stored%s',
                    $r->{rps} / ($L{disk}{$k}{rps} || 1), $r->{cpu_us},
                    $r->{stored}, $r->{ok},
                    $r->{stored} >= $r->{ok} && !$r->{non2xx} ? '' : ' MISSING'));
    }
}
for my $n (@names) {
    my $r = $L{ $n->[0] }{send};
    row("sends, 64 connections: $n->[1]", sprintf('%.0f req/s', $r->{rps}),
        "p50 $r->{p50_ms} ms", "p99 $r->{p99_ms} ms",
        sprintf('x%.2f of disk; CPU %.1f µs/req; %d non-2xx', $r->{rps} / ($L{disk}{send}{rps} || 1),
                $r->{cpu_us}, $r->{non2xx}));
}

printf "\nngx_wa sync bench: wrk -t2 %ds runs, rings on %s and %s, PostgreSQL 15 fsync on\n\n",
    $SECS, fs_type($t->dir . '/ring'), fs_type($shm_ring);
printf "| %s |\n", join ' | ', 'run', 'figure', '', '', '';
print "| --- | --- | --- | --- | --- |\n";
printf "| %s |\n", join ' | ', map { $_ // '' } @$_[0 .. 4] for @rows;
