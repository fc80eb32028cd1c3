#!/usr/bin/perl
# make bench: every benchmark side by side with its reference, in one run,
# on this machine; prints one table of ratios. Not a test.
#
#   perl bench/run.pl [seconds per wrk run = 8]
#
# PostgreSQL runs with fsync on (as in production) and commit timestamps
# on (for the lag). Everything shares the machine's cores: wrk, nginx, the
# writer, PostgreSQL, and the baseline app.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/../t/lib";

use Digest::SHA qw(hmac_sha256_hex);
use IO::Socket::INET;
use POSIX ();
use Time::HiRes qw(time sleep);
use WaTest;

my $SECS = shift // 8;
# WA_BENCH_SKIP=2,3,5,6: sections not run (each prints its own rows; a
# quick look at one part needs not the others)
my %SKIP = map { $_ => 1 } split /,/, $ENV{WA_BENCH_SKIP} // '';
my $CORES = () = WaTest::slurp('/proc/cpuinfo') =~ /^processor/mg;
chdir "$FindBin::Bin/.." or die;

for my $tool (qw(wrk gunicorn)) {
    system("command -v $tool >/dev/null") == 0
        or die "$tool is needed: sh scripts/deps.sh bench\n";
}

my @rows;           # the table
sub row { push @rows, [@_]; printf STDERR "  %-48s %s\n", $_[0], join('  ', @_[1 .. $#_]) }

my $t = WaTest->new(pg_settings => [ 'fsync=on', 'full_page_writes=on',
                                     'track_commit_timestamp=on' ]);
$t->start_pg;
$t->migrate;

my $mock_port = WaTest::free_port();
my $slow_port = WaTest::free_port();
my $flask_port = WaTest::free_port();
my $PHONE = $WaTest::PHONE_ID;
my $TOKEN = $WaTest::TOKEN;

# inbound media: the bench's mock answers every lookup with one 20 KB file
my $MEDIA_DIR = $t->dir . '/media';
mkdir $MEDIA_DIR; chmod 0777, $MEDIA_DIR;
my $media_file = 'x' x 20480;
WaTest::spew($t->dir . '/bench-media.jpg', $media_file);
my $media_sha = Digest::SHA::sha256_hex($media_file);

$t->start_nginx(ring_size => '512m', workers => 2, worker_connections => 8192,
                main => 'worker_rlimit_nofile 20000;', http => <<EOF, server => <<EOF);
    access_log off;
    upstream graph_mock { server 127.0.0.1:$mock_port; keepalive 64; }
    server {
        listen 127.0.0.1:$mock_port;
        location ~ ^/media-dl/ {
            root ${\ $t->dir };
            try_files /bench-media.jpg =404;
        }
        location ~ ^/bench-media- {
            default_type application/json;
            return 200 '{"url":"http://127.0.0.1:$mock_port/media-dl/x","mime_type":"image/jpeg","sha256":"$media_sha","file_size":20480}';
        }
        location / {
            return 200 '{"messaging_product":"whatsapp","contacts":[{"input":"x","wa_id":"x"}],"messages":[{"id":"wamid.mock.\$request_id"}]}';
        }
    }
EOF
        location /ref { return 200 '{"ok":true}'; }
        location /webhook {
            wa_webhook;
            wa_channel $PHONE business=1 token=$TOKEN;
        }
        location /webhook_signed {
            wa_webhook;
            wa_app_secret $WaTest::SECRET;
            wa_channel $PHONE business=1 token=$TOKEN;
        }
        # the gateway's throughput, not Meta's: a rate above the load
        # (the limiter's own cost is bench/pacing.pl's)
        location /send {
            wa_send;
            wa_api_base http://127.0.0.1:$mock_port;
            wa_channel $PHONE business=1 token=$TOKEN rate=1000000r/s;
            wa_send_concurrency 2000;
        }
        location /send_slow {
            wa_send;
            wa_api_base http://127.0.0.1:$slow_port;
            wa_channel $PHONE business=1 token=$TOKEN rate=1000000r/s;
            wa_send_concurrency 2000;
            wa_send_timeout 60s;
        }
        location = /wa-media-fetch {
            wa_media_fetch;
            wa_media_path $MEDIA_DIR;
            wa_api_base http://127.0.0.1:$mock_port;
            wa_channel $PHONE business=1 token=$TOKEN;
        }
        location /proxy {
            proxy_pass http://graph_mock/v21.0/$PHONE/messages;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Authorization "Bearer $TOKEN";
        }
EOF
$t->start_writer;

# ---- helpers -------------------------------------------------------------

sub wrk {
    my ($url, %o) = @_;
    my $script = $o{script} // 'bench/webhook.lua';
    my $args = join ' ', @{ $o{args} // [] };
    my $out = `wrk -t2 -c@{[ $o{conns} // 32 ]} -d@{[ $o{secs} // $SECS ]}s --latency -s $script $url -- $args 2>&1`;
    my ($line) = $out =~ /^(RESULT .*)$/m or die "wrk: $out";
    my %r = $line =~ /(\w+)=([\d.]+)/g;
    $r{ok} = $r{requests} - $r{non2xx};
    $r{rps} = $r{ok} / $r{seconds};
    return \%r;
}

sub url { 'http://127.0.0.1:' . ($_[1] // $t->port) . $_[0] }

sub count_tag {
    my ($tag) = @_;
    return $t->sql_value("SELECT count(*) FROM whatsapp_message
                           WHERE provider_message_id LIKE 'wamid.bench.$tag.%'");
}

# wait until the database holds n rows of a tag; the seconds it took
sub persisted {
    my ($tag, $n, $t0) = @_;
    my $c = 0;
    for (1 .. 1200) {
        $c = count_tag($tag);
        last if $c >= $n;
        sleep 0.25;
    }
    return ($c, time - $t0);
}

# private memory only (RssAnon): the ring's pages a worker has touched are
# the shared file mapping, counted in VmRSS but not the worker's to free
sub rss_kb {
    my $s = WaTest::slurp("/proc/$_[0]/status");
    return $s =~ /RssAnon:\s+(\d+)/ ? $1 : 0;
}
sub workers_rss { join '+', map { sprintf '%.1f', rss_kb($_) / 1024 } $t->worker_pids }

my $tag = sub { sprintf '%s%d', $_[0], time % 100000 };

# wrk, and the machine's busy CPU time per request answered, in µs
sub wrk_cpu {
    my $c0 = WaTest::cpu_busy();
    my $r = wrk(@_);
    $r->{cpu_us} = (WaTest::cpu_busy() - $c0) / ($r->{ok} || 1) * 1e6;
    return $r;
}

# a short wrk run with the writer stopped, so neither it nor PostgreSQL
# takes CPU from nginx (records wait in the ring; short, so it does not
# fill), then the writer drains what was acknowledged. The machine's CPU
# time is taken over each phase: per request served by the module alone
# (nginx, wrk, the kernel), then per request drained (the writer,
# PostgreSQL), which a run with the writer going would need both of.
sub writer_stopped {
    my ($url, %o) = @_;
    $t->stop_writer;
    my $r = wrk_cpu($url, %o, secs => 3);
    my $c0 = WaTest::cpu_busy();
    $t->start_writer;
    $t->wait_drained(600);
    $r->{cpu_drain_us} = (WaTest::cpu_busy() - $c0) / ($r->{ok} || 1) * 1e6;
    return $r;
}

# the cores a rate needs at a CPU cost per request, both measured
sub cores_row {
    my ($what, $r, $rate) = @_;
    my $us = $r->{cpu_us} + $r->{cpu_drain_us};
    row($what, sprintf('%.1f + %.1f = %.1f µs', $r->{cpu_us},
                       $r->{cpu_drain_us}, $us),
        sprintf('%.0f/s needs %.2f cores', $rate, $us * $rate / 1e6),
        sprintf('this machine: %d', $CORES));
}

sub sent_rows {
    $t->sql_value("SELECT count(*) FROM whatsapp_message WHERE direction = 'out' AND status = 'sent'");
}

# ---- 1. webhook ingestion --------------------------------------------------

print STDERR "webhook ingestion ($SECS s per run)\n";
my $rss0 = workers_rss();
my $requests_seen = 0;

my $ref = wrk_cpu(url('/ref'));
row('(a) nginx return 200 (ceiling)', sprintf('%.0f req/s', $ref->{rps}),
    "p50 $ref->{p50_ms} ms", "p99 $ref->{p99_ms} ms",
    sprintf('CPU %.1f µs per request', $ref->{cpu_us}));

my $tg = $tag->('u');
my $t0 = time;
my $wh = wrk(url('/webhook'), args => [ "tag=$tg" ]);
my ($stored, $took) = persisted($tg, $wh->{ok}, $t0);
$requests_seen += $wh->{requests};
row('wa_webhook, signature off', sprintf('%.0f req/s', $wh->{rps}),
    "p50 $wh->{p50_ms} ms", "p99 $wh->{p99_ms} ms",
    sprintf('x%.2f of (a)', $wh->{rps} / $ref->{rps}));
row('  persisted (acknowledged -> committed)',
    sprintf('%.0f msg/s', $stored / $took),
    "$stored of $wh->{ok} acknowledged stored",
    $stored >= $wh->{ok} ? 'all' : 'MISSING');

# signed: pre-signed unique bodies, cycled
my $nbodies = 200_000;
my $bodies = $t->dir . '/signed.txt';
my $sg = $tag->('s');
open my $bf, '>', $bodies or die;
for my $i (1 .. $nbodies) {
    my $from = '97251' . sprintf('%07d', $i % 1000);
    my $b = '{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550000000","phone_number_id":"' . $PHONE . '"},"contacts":[{"profile":{"name":"Bench"},"wa_id":"' . $from . '"}],"messages":[{"from":"' . $from . '","id":"wamid.bench.' . $sg . '.' . $i . '","timestamp":"1700000000","type":"text","text":{"body":"hello from the bench"}}]}}]}]}';
    print $bf hmac_sha256_hex($b, $WaTest::SECRET), "\t", $b, "\n";
}
close $bf;
$t0 = time;
my $ws = wrk(url('/webhook_signed'), args => [ "bodies=$bodies" ]);
$requests_seen += $ws->{requests};
# each thread sends its ids in order (odd or even), wrapping after its
# half: every id up to the highest of each parity must be stored, once
my ($sent_ids, $rows_s);
$t->wait_drained(600);
{
    my ($odd, $even, $n) = $t->dbh->selectrow_array(
        "SELECT max(i) FILTER (WHERE i % 2 = 1), max(i) FILTER (WHERE i % 2 = 0),
                count(*)
           FROM (SELECT split_part(provider_message_id, '.', 4)::int AS i
                   FROM whatsapp_message
                  WHERE provider_message_id LIKE 'wamid.bench.$sg.%') s");
    $sent_ids = int((($odd // -1) + 1) / 2) + int(($even // 0) / 2);
    $rows_s = $n;
}
$took = time - $t0;
row('wa_webhook, signature on', sprintf('%.0f req/s', $ws->{rps}),
    "p50 $ws->{p50_ms} ms", "p99 $ws->{p99_ms} ms",
    sprintf('x%.2f of (a)', $ws->{rps} / $ref->{rps}));
row('  persisted (ids cycle after 200k; no gap allowed)',
    "$rows_s of $sent_ids distinct ids stored",
    $rows_s == $sent_ids && !$ws->{non2xx} ? 'all, none twice' : 'MISSING');

# the module alone, then everything acknowledged counted
my $og = $tag->('o');
my $wo = writer_stopped(url('/webhook'), args => [ "tag=$og" ]);
$requests_seen += $wo->{requests};
my $ostored = count_tag($og);
row('wa_webhook, writer stopped (the module alone)', sprintf('%.0f req/s', $wo->{rps}),
    "p50 $wo->{p50_ms} ms", "p99 $wo->{p99_ms} ms",
    sprintf('x%.2f of (a); %d of %d stored after', $wo->{rps} / $ref->{rps}, $ostored, $wo->{ok}));
cores_row('  CPU per request: served alone + drained', $wo, 0.8 * $ref->{rps});

# (b) the seed's architecture
my $fpid = fork // die;
if ($fpid == 0) {
    open STDOUT, '>', $t->dir . '/gunicorn.log';
    open STDERR, '>&', \*STDOUT;
    $ENV{WA_BENCH_DSN} = $t->dsn;
    { exec '/usr/bin/python3', '/usr/bin/gunicorn', '-w', '4', '-b', "127.0.0.1:$flask_port",
           '--chdir', 'bench', '--log-level', 'warning', 'flask_app:app' }
    POSIX::_exit(127);
}
$t->wait_for(sub { IO::Socket::INET->new("127.0.0.1:$flask_port") }, 30, 'gunicorn')
    or die "gunicorn did not start:\n" . WaTest::slurp($t->dir . '/gunicorn.log');
my $fg = $tag->('f');
my $fl = wrk(url('/webhook', $flask_port), args => [ "tag=$fg" ], conns => 8);
kill 'TERM', $fpid;
waitpid $fpid, 0;
my $fstored = count_tag($fg);
row('(b) Flask + gunicorn (4) + psycopg2, per request', sprintf('%.0f req/s', $fl->{rps}),
    "p50 $fl->{p50_ms} ms", "p99 $fl->{p99_ms} ms",
    sprintf('wa_webhook is x%.0f of (b)', $wh->{rps} / ($fl->{rps} || 1)));
row('  persisted', "$fstored of $fl->{ok} acknowledged");

# ---- 2. end-to-end lag at half the ceiling ----------------------------------

unless ($SKIP{2}) {
print STDERR "lag at half of wa_webhook's rate\n";
my $target = $wh->{rps} / 2;
my $conns = 64;
my $delay = int($conns * 1000 / $target + 0.5) || 1;
my $lg = $tag->('l');
my $lw = wrk(url('/webhook'), args => [ "tag=$lg", "delay=$delay" ], conns => $conns);
$requests_seen += $lw->{requests};
persisted($lg, $lw->{ok}, time);
my ($p50, $p99, $max) = @{ $t->dbh->selectrow_arrayref(
    "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY l),
            percentile_cont(0.99) WITHIN GROUP (ORDER BY l), max(l)
       FROM (SELECT extract(epoch FROM pg_xact_commit_timestamp(xmin) - created_at) * 1000 AS l
               FROM whatsapp_message
              WHERE provider_message_id LIKE 'wamid.bench.$lg.%') s") };
row(sprintf('lag ack -> commit at %.0f req/s', $lw->{rps}),
    sprintf('p50 %.1f ms', $p50), sprintf('p99 %.1f ms', $p99), sprintf('max %.1f ms', $max));
}

# ---- 3. memory: nginx workers over 1M requests, the writer ---------------------

unless ($SKIP{3}) {
print STDERR "worker memory over 1M webhook requests\n";
my $more = 1_000_000 - $requests_seen;
if ($more > 0) {
    my $secs = int($more / ($wh->{rps} || 1) * 1.2) + 1;
    my $mw = wrk(url('/webhook'), args => [ 'tag=' . $tag->('m') ], secs => $secs);
    $requests_seen += $mw->{requests};
}
row('nginx worker private RSS (MB), before -> after', "$rss0 -> " . workers_rss(),
    "after $requests_seen webhook requests");
}

# ---- 4. send -----------------------------------------------------------------

print STDERR "send\n";
my $px = wrk_cpu(url('/proxy'), script => 'bench/send.lua');
row('(c) proxy_pass to the same mock (ceiling)', sprintf('%.0f req/s', $px->{rps}),
    "p50 $px->{p50_ms} ms", "p99 $px->{p99_ms} ms",
    sprintf('CPU %.1f µs per request', $px->{cpu_us}));
my $before = sent_rows();
$t0 = time;
my $sd = wrk(url('/send'), script => 'bench/send.lua');
my $sent = 0;
for (1 .. 600) {
    $sent = sent_rows() - $before;
    last if $sent >= $sd->{ok};
    sleep 0.25;
}
row('wa_send to the mock', sprintf('%.0f req/s', $sd->{rps}),
    "p50 $sd->{p50_ms} ms", "p99 $sd->{p99_ms} ms",
    sprintf('x%.2f of (c)', $sd->{rps} / $px->{rps}));
row('  rows sent', "$sent of $sd->{ok} answered 200", $sent >= $sd->{ok} ? 'all' : 'MISSING');

# an image by media id, Meta's shape: the type's checks and the byte slice
$before = sent_rows();
my $sm = wrk(url('/send'), script => 'bench/send.lua', args => [ 'media' ]);
my $msent = 0;
for (1 .. 600) {
    $msent = sent_rows() - $before;
    last if $msent >= $sm->{ok};
    sleep 0.25;
}
row('wa_send, an image by media id', sprintf('%.0f req/s', $sm->{rps}),
    "p50 $sm->{p50_ms} ms", "p99 $sm->{p99_ms} ms",
    sprintf('x%.2f of (c); x%.2f of text', $sm->{rps} / $px->{rps},
            $sm->{rps} / $sd->{rps}));
row('  rows sent', "$msent of $sm->{ok} answered 200",
    $msent >= $sm->{ok} ? 'all' : 'MISSING');

# the module alone, as for the webhook
$before = sent_rows();
my $so = writer_stopped(url('/send'), script => 'bench/send.lua');
my $osent = sent_rows() - $before;
row('wa_send, writer stopped (the module alone)', sprintf('%.0f req/s', $so->{rps}),
    "p50 $so->{p50_ms} ms", "p99 $so->{p99_ms} ms",
    sprintf('x%.2f of (c); %d of %d sent rows after', $so->{rps} / $px->{rps}, $osent, $so->{ok}));
cores_row('  CPU per send: served alone + drained', $so, 0.7 * $px->{rps});

# webhook latency while 1,000 sends wait on a 10 s provider
my $spid = fork // die;
if ($spid == 0) {
    exec 'sh', '-c', "ulimit -n 8192; exec perl bench/slow_mock.pl $slow_port 10";
}
$t->wait_for(sub { IO::Socket::INET->new("127.0.0.1:$slow_port") }, 10, 'slow mock');
my $quiet = wrk(url('/webhook'), args => [ 'tag=' . $tag->('q') ], conns => 8, secs => 3);
my $cpid = fork // die;
if ($cpid == 0) {
    open STDOUT, '>', $t->dir . '/slow.out' or die;
    exec 'sh', '-c', "ulimit -n 8192; exec perl bench/slow_sends.pl " . $t->port
        . ' /send_slow 1000';
}
sleep 2;
my $busy = wrk(url('/webhook'), args => [ 'tag=' . $tag->('w') ], conns => 8, secs => 3);
waitpid $cpid, 0;
kill 'TERM', $spid;
waitpid $spid, 0;
my $slow_ok = WaTest::slurp($t->dir . '/slow.out') =~ /(\d+)/ ? $1 : 0;
row('webhook p99, alone vs 1,000 sends waiting', "$quiet->{p99_ms} ms -> $busy->{p99_ms} ms",
    sprintf('%.0f -> %.0f req/s', $quiet->{rps}, $busy->{rps}),
    "$slow_ok of 1000 slow sends answered 200");

# ---- 4b. inbound media -------------------------------------------------------

# Text and image webhooks in turn, two rounds, each figure the median of
# its two: served with the writer draining (every image also queued in
# wa_media), persisted (acknowledged -> committed), and served by the
# module alone (the writer stopped, its drain's CPU counted after).
print STDERR "inbound media\n";
my %md;
for my $round (1 .. 2) {
    for my $kind (qw(text image)) {
        my @media = $kind eq 'image' ? ('media=1') : ();
        my $mt = $tag->(substr($kind, 0, 1) . "m$round");
        my $m0 = time;
        my $r = wrk(url('/webhook'), args => [ "tag=$mt", @media ]);
        my ($n, $mtook) = persisted($mt, $r->{ok}, $m0);
        $r->{persisted} = $n / $mtook;
        # (a few more rows than 200s: requests in flight when wrk stopped)
        $r->{missing} = $r->{ok} > $n ? $r->{ok} - $n : 0;
        my $alone = writer_stopped(url('/webhook'), args => [ "tag=${mt}a", @media ]);
        $r->{alone} = $alone->{rps};
        $r->{alone_us} = $alone->{cpu_us};
        $r->{drain_us} = $alone->{cpu_drain_us};
        my $na = count_tag("${mt}a");
        $r->{missing} += $alone->{ok} > $na ? $alone->{ok} - $na : 0;
        push @{ $md{$kind} }, $r;
    }
}
my %mm;
for my $kind (qw(text image)) {
    for my $f (qw(rps p99_ms persisted alone alone_us drain_us missing)) {
        my @v = sort { $a <=> $b } map { $_->{$f} } @{ $md{$kind} };
        $mm{$kind}{$f} = $f eq 'missing' ? $v[0] + $v[1] : ($v[0] + $v[1]) / 2;
    }
}
row('wa_webhook, image messages (media queued)', sprintf('%.0f req/s', $mm{image}{rps}),
    sprintf('text %.0f req/s', $mm{text}{rps}), "p99 $mm{image}{p99_ms} ms",
    sprintf('x%.2f of text, in turn', $mm{image}{rps} / $mm{text}{rps}));
row('  persisted, each image queued in wa_media',
    sprintf('%.0f msg/s', $mm{image}{persisted}),
    sprintf('text %.0f msg/s', $mm{text}{persisted}),
    sprintf('x%.2f of text', $mm{image}{persisted} / $mm{text}{persisted}),
    ($mm{image}{missing} + $mm{text}{missing}) ? 'MISSING' : 'all acknowledged stored');
row('  the module alone (writer stopped)', sprintf('%.0f req/s', $mm{image}{alone}),
    sprintf('text %.0f req/s', $mm{text}{alone}),
    sprintf('x%.2f of text', $mm{image}{alone} / $mm{text}{alone}), '');
row('  CPU per message: served alone + drained',
    sprintf('image %.1f + %.1f µs', $mm{image}{alone_us}, $mm{image}{drain_us}),
    sprintf('text %.1f + %.1f µs', $mm{text}{alone_us}, $mm{text}{drain_us}),
    sprintf('x%.2f of text', ($mm{image}{alone_us} + $mm{image}{drain_us})
                             / ($mm{text}{alone_us} + $mm{text}{drain_us})), '');

# one fetcher drains the queue: lookup, 20 KB download, fsync, rename, row.
# Text webhooks while it fetches, and with it stopped, in turn, two rounds
# (medians): the fetch path must not slow them.
my (@fetching, @quiet, @frates, $idle_rate);
my $fetched = sub { $t->sql_value("SELECT count(*) FROM wa_media WHERE state = 'fetched'") };
for my $round (1 .. 2) {
    # niced, as conf/wa-media.service runs it: background work
    $t->start_media_exec('nice', '-n', '10',
                         $t->as_user($t->writer_bin, 'media', '--db', $t->dsn, '--media-dir',
                                     $MEDIA_DIR, '--media-url', url('/wa-media-fetch')));
    sleep 1;
    if ($round == 1) {
        # the fetcher alone on the machine
        my ($i0, $it0) = ($fetched->(), time);
        sleep $SECS;
        $idle_rate = ($fetched->() - $i0) / (time - $it0);
    }
    my $f0 = $fetched->();
    my $ft0 = time;
    push @fetching, wrk(url('/webhook'), args => [ 'tag=' . $tag->("f$round") ]);
    push @frates, ($fetched->() - $f0) / (time - $ft0);
    $t->stop_media;
    push @quiet, wrk(url('/webhook'), args => [ 'tag=' . $tag->("q$round") ]);
}
my $mid = sub { my @v = sort { $a <=> $b } @_; ($v[0] + $v[1]) / 2 };
my ($wf, $wq) = map { my $l = $_; +{ map { my $f = $_; ($f => $mid->(map { $_->{$f} } @$l)) }
                                      qw(rps p99_ms) } } \@fetching, \@quiet;
row('media fetched by one wa-writer media (nice 10)', sprintf('%.0f media/s alone', $idle_rate),
    sprintf('%.0f media/s under webhook load', $mid->(@frates)),
    'lookup + 20 KB + fsync + rename + row', '');
row('wa_webhook, text, while media are fetched', sprintf('%.0f req/s', $wf->{rps}),
    sprintf('fetcher stopped %.0f req/s', $wq->{rps}), "p99 $wf->{p99_ms} ms",
    sprintf('x%.2f of text, fetcher stopped, in turn', $wf->{rps} / $wq->{rps}));

# ---- 5. writer drain vs COPY (its own PostgreSQL: bench/writer.pl) ----------

$t->teardown;
unless ($SKIP{5}) {
print STDERR "writer drain vs COPY\n";
for (`perl bench/writer.pl 200000`) {
    push @rows, [ map { s/^\s+|\s+$//gr } split /\|/, $1 ] if /^\|(.*)\|\s*$/;
}
$? == 0 or die "bench/writer.pl failed\n";
}

# ---- 6. durability: ring in /dev/shm, on disk, on disk with sync=on ----------

unless ($SKIP{6}) {
print STDERR "durability levels (bench/sync.pl)\n";
for (`perl bench/sync.pl $SECS`) {
    push @rows, [ map { s/^\s+|\s+$//gr } split /\|/, $1 ] if /^\|(.*)\|\s*$/ && !/^\| (run|---) /;
}
$? == 0 or die "bench/sync.pl failed\n";
}

# ---- the table ---------------------------------------------------------------

my $cpu = (grep { /model name/ } split /\n/, WaTest::slurp('/proc/cpuinfo'))[0] // '';
$cpu =~ s/.*:\s*//;
printf "\nngx_wa bench: %d cores (%s), %s, wrk -t2 %ds runs, PostgreSQL 15 fsync on\n\n",
    $CORES, $cpu,
    (split /\n/, WaTest::slurp('/etc/debian_version'))[0] ? 'Debian ' . WaTest::slurp('/etc/debian_version') =~ s/\s+//gr : '', $SECS;
printf "| %s |\n", join ' | ', 'run', 'figure', '', '', '';
print "| --- | --- | --- | --- | --- |\n";
printf "| %s |\n", join ' | ', map { $_ // '' } @$_[0 .. 4] for @rows;
