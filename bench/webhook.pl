#!/usr/bin/perl
# bench/webhook.pl: webhook ingestion against nginx's own ceiling, in one run.
#
#   (a) POST to `return 200` on the same nginx, same payloads (the ceiling)
#   (b) POST to wa_webhook, writer and PostgreSQL running; the run ends when
#       the database holds every acknowledged message, which are counted
#
# Usage: perl bench/webhook.pl [seconds=10] [connections=32]

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../t/lib";

use Time::HiRes qw(time sleep);
use WaTest;

my $secs = shift // 10;
my $conns = shift // 32;

system('command -v wrk >/dev/null') == 0 or die "wrk is needed: apt-get install wrk\n";

my $t = WaTest->new;
$t->start_pg;
$t->migrate;
$t->start_nginx(ring_size => '256m', http => 'access_log off;', server => <<EOF);
        location /webhook {
            wa_webhook;
            wa_channel $WaTest::PHONE_ID business=1 token=$WaTest::TOKEN;
        }
        location /ref { return 200 '{"ok":true}'; }
EOF
$t->start_writer;

sub wrk {
    my ($path) = @_;
    my $url = 'http://127.0.0.1:' . $t->port . $path;
    my $out = `wrk -t2 -c$conns -d${secs}s -s $FindBin::Bin/webhook.lua $url 2>&1`;
    my ($line) = $out =~ /^(RESULT .*)$/m or die "wrk: $out";
    my %r = $line =~ /(\w+)=([\d.]+)/g;
    $r{rps} = ($r{requests} - $r{non2xx}) / $r{seconds};
    return \%r;
}

my $ref = wrk('/ref');
my $t0 = time;
my $wh = wrk('/webhook');
my $acked = $wh->{requests} - $wh->{non2xx};
my $stored = 0;
for (1 .. 600) {
    $stored = $t->sql_value("SELECT count(*) FROM whatsapp_message WHERE provider_message_id LIKE 'wamid.bench.%'");
    last if $stored >= $acked;
    sleep 0.5;
}
my $persist_secs = time - $t0;
my $nulls = $t->sql_value('SELECT count(*) FROM whatsapp_message WHERE lead_id IS NULL');

printf "%-44s %12s %9s %9s\n", 'run', 'req/s', 'p50 ms', 'p99 ms';
printf "%-44s %12.0f %9.2f %9.2f\n", '(a) return 200, same nginx (ceiling)', $ref->{rps}, $ref->{p50_ms}, $ref->{p99_ms};
printf "%-44s %12.0f %9.2f %9.2f\n", 'wa_webhook, signature off', $wh->{rps}, $wh->{p50_ms}, $wh->{p99_ms};
printf "ratio wa_webhook / ceiling: %.2f\n", $wh->{rps} / $ref->{rps};
printf "acknowledged %d, stored %d (%s), rows without lead %d\n", $acked, $stored,
    $stored >= $acked ? 'every acknowledged message persisted' : 'MISSING ROWS', $nulls;
printf "persisted: %.0f messages/s (from the first request to the last row committed)\n",
    $stored / $persist_secs;
exit($stored >= $acked && $nulls == 0 ? 0 : 1);
