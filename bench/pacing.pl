#!/usr/bin/perl
# The send limiter's cost per send, with a rate far above the load:
#
#   make bench-pacing            (or, once build-bench/ is built:
#   WA_BUILD=$PWD/build-bench perl bench/pacing.pl [seconds per run = 5])
#
# The module is built with NGX_HTTP_WA_PACE_BENCH (build-bench/): there,
# every turn taken in the pacing zone (ngx_http_wa_pace_reserve, and
# ngx_http_wa_pace_go for a send that waited) is timed with two
# CLOCK_MONOTONIC reads, summed in the channel's node, and shown by
# wa_status (bench_ns, bench_calls): the real zone code, its lock shared by
# 2 workers under wrk's load, the two clock reads included.
#
# Side by side, the same sends through a location whose channel is not
# paced (rate=off) and one paced at 1,000,000/s (rate above the load):
# throughput, alternating, three runs each. On a shared 2-core machine the
# difference is within run-to-run noise; the in-process figure is the one
# that resolves microseconds.

use strict;
use warnings;
use FindBin;
BEGIN { $ENV{WA_BUILD} //= "$FindBin::Bin/../build-bench" }
use lib "$FindBin::Bin/../t/lib";

use JSON::PP;
use WaTest;

my $SECS = shift // 5;
chdir "$FindBin::Bin/.." or die;
system('command -v wrk >/dev/null') == 0 or die "wrk is needed: sh scripts/deps.sh bench\n";

my $t = WaTest->new;
my $mock_port = WaTest::free_port();
my $T = $WaTest::TOKEN;
my ($OFF, $ON) = ('100000000001', '100000000002');

$t->start_nginx(ring_size => '512m', workers => 2, worker_connections => 8192,
                main => 'worker_rlimit_nofile 20000;', http => <<EOF, server => <<EOF);
    access_log off;
    server {
        listen 127.0.0.1:$mock_port;
        location / {
            return 200 '{"messaging_product":"whatsapp","contacts":[{"input":"x","wa_id":"x"}],"messages":[{"id":"wamid.mock.\$request_id"}]}';
        }
    }
EOF
        location /send_off {
            wa_send;
            wa_api_base http://127.0.0.1:$mock_port;
            wa_channel $OFF business=1 token=$T rate=off;
            wa_send_concurrency 2000;
        }
        location /send_paced {
            wa_send;
            wa_api_base http://127.0.0.1:$mock_port;
            wa_channel $ON business=1 token=$T rate=1000000r/s;
            wa_send_concurrency 2000;
        }
        location /wa_status { wa_status; }
EOF

sub wrk {
    my ($path) = @_;
    my $out = `wrk -t2 -c32 -d${SECS}s --latency -s bench/send.lua http://127.0.0.1:@{[ $t->port ]}$path 2>&1`;
    my ($line) = $out =~ /^(RESULT .*)$/m or die "wrk: $out";
    my %r = $line =~ /(\w+)=([\d.]+)/g;
    $r{rps} = ($r{requests} - $r{non2xx}) / $r{seconds};
    return \%r;
}

sub pacing {
    my $s = decode_json($t->http('GET', '/wa_status')->{content});
    return $s->{channels}{$ON}{pacing} // die 'no pacing status: is the module built with NGX_HTTP_WA_PACE_BENCH?';
}

my (@off, @on);
wrk('/send_paced');                          # warm both up
wrk('/send_off');
my $p0 = pacing();
die "wa_status has no bench_ns: build with NGX_HTTP_WA_PACE_BENCH (make bench-pacing)\n"
    unless defined $p0->{bench_ns};

for (1 .. 3) {
    push @off, wrk('/send_off');
    push @on, wrk('/send_paced');
}
my $p1 = pacing();

my $calls = $p1->{bench_calls} - $p0->{bench_calls};
my $ns = $p1->{bench_ns} - $p0->{bench_ns};
my $sends = $p1->{sends} - $p0->{sends};
my $med = sub { my @x = sort { $a <=> $b } map { $_->{rps} } @_; $x[1] };

printf "limiter, in nginx (2 workers, one channel, rate above the load):\n";
printf "  %.0f ns per turn taken (%d turns for %d sends, %d waits; two clock reads included)\n",
       $ns / ($calls || 1), $calls, $sends, $p1->{waits} - $p0->{waits};
printf "through nginx, %d s runs, alternating:\n", $SECS;
printf "  rate=off            %s req/s (median %.0f)\n", join(' ', map { sprintf '%.0f', $_->{rps} } @off), $med->(@off);
printf "  rate=1000000r/s     %s req/s (median %.0f)\n", join(' ', map { sprintf '%.0f', $_->{rps} } @on), $med->(@on);
printf "  per send: %.2f us vs %.2f us (1/median, wall time of the whole path)\n",
       1e6 / $med->(@off), 1e6 / $med->(@on);
