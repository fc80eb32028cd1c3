#!/usr/bin/perl
# A/B of the send path on a shared machine: text and an image by media id
# against one build (WA_BUILD), make bench's setup (2 workers, a return-200
# mock, the writer on), each kind twice, with the CPU time the nginx
# workers, the writer and its PostgreSQL backend spent per send: on a
# machine others load, req/s swings with them, CPU per send much less.
#
#   WA_BUILD=/path/to/build perl bench/send_ab.pl [seconds = 5]
#
# Run it against two builds in turn (A B A B) to compare them.
use strict; use warnings;
use FindBin;
use lib "$FindBin::Bin/../t/lib";
use WaTest;
my $secs = shift // 5;
my $t = WaTest->new(pg_settings => [ 'fsync=on', 'full_page_writes=on' ]);
$t->start_pg; $t->migrate;
my $mock = WaTest::free_port();
$t->start_nginx(ring_size => '256m', workers => 2, worker_connections => 8192,
                main => 'worker_rlimit_nofile 20000;', http => <<EOF2, server => <<EOF3);
    access_log off;
    server {
        listen 127.0.0.1:$mock;
        location / {
            return 200 '{"messaging_product":"whatsapp","contacts":[{"input":"x","wa_id":"x"}],"messages":[{"id":"wamid.mock.\$request_id"}]}';
        }
    }
EOF2
        location /send {
            wa_send;
            wa_api_base http://127.0.0.1:$mock;
            wa_channel $WaTest::PHONE_ID business=1 token=$WaTest::TOKEN;
            wa_send_concurrency 2000;
        }
EOF3
$t->start_writer;
chdir "$FindBin::Bin/.." or die;
sub cpu { my $s = 0; for my $p (@_) { my @f = split ' ', WaTest::slurp("/proc/$p/stat") =~ s/^.*\) //r; $s += $f[11] + $f[12] } $s }
my @w = $t->worker_pids;
sleep 1;
my @pg = map { $_->[0] } @{ $t->dbh->selectall_arrayref("SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()") };
my $wc0 = cpu($t->{writer});
my $pc0 = cpu(@pg);
for my $kind ('text', 'media', 'text', 'media') {
    my $c0 = cpu(@w);
    my $out = `wrk -t2 -c32 -d${secs}s --latency -s bench/send.lua http://127.0.0.1:${\ $t->port}/send -- $kind 2>&1`;
    my ($line) = $out =~ /^(RESULT .*)$/m;
    my %r = ($line // '') =~ /(\w+)=([\d.]+)/g;
    my $us = (cpu(@w) - $c0) * 1e6 / 100 / ($r{requests} || 1);
    printf "%s %s %.0f req/s non2xx=%d p50=%s p99=%s nginx-workers %.1f us CPU per send\n", $ENV{WA_BUILD}, $kind,
        ($r{requests} - $r{non2xx}) / $r{seconds}, $r{non2xx}, $r{p50_ms}, $r{p99_ms}, $us;
}
$t->wait_drained(300);
my $rows = $t->sql_value("SELECT count(*) FROM whatsapp_message WHERE status = 'sent'");
printf "%s rows sent %d, writer %.1f us + its PostgreSQL backend %.1f us CPU per send (record and outcome)\n", $ENV{WA_BUILD}, $rows,
    (cpu($t->{writer}) - $wc0) * 1e6 / 100 / ($rows || 1), (cpu(@pg) - $pc0) * 1e6 / 100 / ($rows || 1);
