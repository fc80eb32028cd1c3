#!/usr/bin/perl
# Inbound media is fetched and kept: the webhook stores the message, the
# database queues its media, `wa-writer media` has nginx look it up and
# download it with the channel's token, then syncs and names the file by
# its sha256. Checked on disk and in the rows: identical files stored once,
# failures retried and logged, give-ups CRITICAL and recorded, a full disk
# leaving nothing partial, the webhook path never waiting on a download,
# the token nowhere but nginx.conf, and the file served back with its type.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Time::HiRes qw(time sleep);
use Digest::SHA qw(sha256_hex);
use JSON::PP;
use WaTest;
use MockGraph;
use WaPayload qw(wamid body value message echo encode);

my $t = WaTest->new;
$t->start_pg;
$t->migrate;
my $mock = $t->start_mock(world => $ENV{WA_MEDIA_WORLD} ? 1 : 0);

my $mdir = $t->dir . '/media';
mkdir $mdir or die "mkdir $mdir: $!";
chmod 0777, $mdir;

my $tmpfs = 0;
if ($> == 0 && system("mount -t tmpfs -o size=2m,mode=0777 wa-media-test "
                      . WaTest::quote($mdir) . " 2>/dev/null") == 0) {
    $tmpfs = 1;
}
END { system('umount', $mdir) if $tmpfs && $mdir }

my $KEY = 'media-key-7f1c';
my $pnid = $WaTest::PHONE_ID;

$t->start_nginx(server => $t->default_locations . <<EOF);
        location /wa-media-fetch {
            wa_media_fetch;
            wa_media_path $mdir;
            wa_media_max_size 1m;
            wa_media_timeout 5s;
            ${\ $mock->api_conf }
            wa_channel $pnid business=1 token=$WaTest::TOKEN;
            wa_send_key $KEY;
            allow 127.0.0.1;
            deny all;
        }
        location /media/ {
            wa_media_serve;
            wa_media_path $mdir;
            wa_send_key $KEY;
        }
EOF
$t->start_writer;
# a fetcher that dies holds its media for --media-timeout-ms + 10 s
my @fetcher = ('--media-dir', $mdir,
               '--media-url', "http://127.0.0.1:${\ $t->port }/wa-media-fetch",
               '--media-key', $KEY, '--media-retry-ms', '200',
               '--media-timeout-ms', '4000');
$t->start_media(@fetcher);

my $tag = $$ . int(time * 1000);
my $dbh = $t->dbh;

# a message of type with media id; returns its wamid
sub media_message {
    my ($type, $id, %o) = @_;
    my $m = message($type, from => $o{from} // '16505551234');
    $m->{$type}{id} = $id;
    my $r = $t->post_webhook(body(value(messages => [ $m ],
        contacts => [ { profile => { name => 'Dana' },
                        wa_id => $o{from} // '16505551234' } ])));
    is $r->{status}, 200, "webhook with $type $id: 200";
    return $m->{id};
}

sub media_row {
    my ($id) = @_;
    return $dbh->selectrow_hashref('SELECT m.*, w.type AS msg_type, '
        . 'w.provider_message_id FROM wa_media m JOIN whatsapp_message w '
        . 'ON w.id = m.message_id WHERE m.media_id = ? ORDER BY m.id DESC '
        . 'LIMIT 1', undef, $id);
}

sub wait_state {
    my ($id, $state, $timeout) = @_;
    my $row;
    $t->wait_for(sub {
        $row = media_row($id);
        $row && $row->{state} eq $state;
    }, $timeout // 20, "media $id $state");
    return media_row($id);
}

sub files_under {
    my @f;
    for my $sub (glob "$mdir/*") {
        next if $sub =~ m{/tmp$};
        push @f, glob "$sub/*" if -d $sub;
    }
    return @f;
}

# ---- an image, a document, a voice note: fetched, named, served ---------

my %want = (
    "IMG_$tag"   => [ image    => 'image/jpeg', 'jpg' ],
    "DOC_$tag"   => [ document => 'application/pdf', 'pdf' ],
    "VOICE_$tag" => [ audio    => 'audio/ogg; codecs=opus', 'ogg' ],
);

for my $id (sort keys %want) {
    media_message($want{$id}[0], $id);
}

for my $id (sort keys %want) {
    my ($type, $mime, $ext) = @{ $want{$id} };
    my $row = wait_state($id, 'fetched');
    my $bytes = MockGraph::media_bytes($id);
    my $sha = sha256_hex($bytes);

    ok $row && $row->{state} eq 'fetched', "$id: fetched";
    is $row->{kind}, $type, "$id: kind $type";
    is $row->{sha256}, $sha, "$id: sha256 of the provider's bytes";
    is $row->{size}, length $bytes, "$id: size";
    is $row->{mime_type}, $mime, "$id: mime type";
    is $row->{path}, substr($sha, 0, 2) . "/$sha.$ext", "$id: named by content";
    ok $row->{fetched_at}, "$id: fetched_at";

    my $file = "$mdir/$row->{path}";
    ok -f $file, "$id: the file exists";
    open my $fh, '<:raw', $file;
    my $got = do { local $/; <$fh> };
    is sha256_hex($got // ''), $sha, "$id: the file holds the bytes";

    my $r = $t->http('GET', "/media/$row->{path}", { 'X-WA-Key' => $KEY });
    is $r->{status}, 200, "$id: served";
    is $r->{headers}{'content-type'}, $mime =~ s/;.*//r,
       "$id: served with its type";
    is sha256_hex($r->{content}), $sha, "$id: served bytes";
}

my @reqs = $mock->requests;
my @lookups = grep { $_->{method} eq 'GET' && $_->{path} !~ m{/media-dl/} } @reqs;
my @downloads = grep { $_->{method} eq 'GET' && $_->{path} =~ m{/media-dl/} } @reqs;
ok @lookups >= 3 && @downloads >= 3, 'lookups and downloads reached the mock';
ok !(grep { ($_->{headers}{authorization} // '') ne "Bearer $WaTest::TOKEN" }
          @lookups, @downloads),
   'every lookup and download carried the channel\'s token';

if ($mock->world) {
    ok !(grep { ($_->{headers}{'x-front-proto'} // '') ne 'HTTP/2.0' }
              @lookups, @downloads),
       'world: lookups and downloads came by host name, TLS and HTTP/2';
}

{
    my $row = media_row("IMG_$tag");
    my $r = $t->http('GET', "/media/$row->{path}");
    is $r->{status}, 401, 'served media: no key, 401';
    $r = $t->http('GET', '/media/../nginx.conf', { 'X-WA-Key' => $KEY });
    is $r->{status}, 404, 'only stored names are served';
    $r = $t->http('GET', '/media/' . ('a' x 2) . '/' . ('b' x 64) . '.jpg',
                  { 'X-WA-Key' => $KEY });
    is $r->{status}, 404, 'a name whose directory is not its prefix: 404';
    $r = $t->http('GET', "/wa-media-fetch?media_id=x&phone_number_id=$pnid");
    is $r->{status}, 401, 'the fetch location wants its key too';
    sleep 0.5;      # (a lookup would be on its way by now)
    ok !(grep { $_->{path} =~ m{/x(?:\?|$)} } $mock->requests),
       'and refused, it looks nothing up';
}

# ---- the same bytes twice: one file ----------------------------------------

media_message('image', "DUP_a$tag");
media_message('sticker', "DUP_b$tag");
my $da = wait_state("DUP_a$tag", 'fetched');
my $db = wait_state("DUP_b$tag", 'fetched');
is $da->{sha256}, $db->{sha256}, 'identical files: one sha256';
my ($dup_path) = map { $_->{path} } $da;
my @same = grep { m{\Q$da->{sha256}\E} } files_under();
is scalar @same, 1, 'identical files: stored once';

# ---- a redelivery queues nothing new --------------------------------------

{
    my $m = message('image');
    $m->{image}{id} = "REDELIVER_$tag";
    my $b = body(value(messages => [ $m ]));
    is $t->post_webhook($b)->{status}, 200, 'first delivery';
    wait_state("REDELIVER_$tag", 'fetched');
    is $t->post_webhook($b)->{status}, 200, 'redelivery';
    $t->wait_drained(10);
    is $dbh->selectrow_array('SELECT count(*) FROM wa_media WHERE media_id = ?',
                             undef, "REDELIVER_$tag"), 1,
       'a redelivered message queues its media once';
}

# ---- a run of messages, one set statement: each medium queued once -------

{
    # the writer stopped, so that one batch takes them all: 40 inbound
    # messages, a run that wa_ingest_in_messages writes in one statement
    $t->stop_writer;
    my (@msgs, %kind);
    for my $i (1 .. 40) {
        my $type = (qw(image text document text audio))[$i % 5];
        my $m = message($type, from => '1650555' . sprintf('%04d', $i % 7));
        if ($type ne 'text') {
            $m->{$type}{id} = "RUN${i}_$tag";
            $kind{"RUN${i}_$tag"} = $type;
        }
        push @msgs, $m;
    }
    my $b = body(value(messages => \@msgs));
    is $t->post_webhook($b)->{status}, 200, 'a run of 40 messages, 24 with media';
    is $t->post_webhook($b)->{status}, 200, 'and its redelivery, in the same batch';
    $t->start_writer;
    ok $t->wait_drained(20), 'written';
    my $rows = $dbh->selectall_arrayref(
        "SELECT m.media_id, m.kind, w.type, count(*) OVER (PARTITION BY m.media_id) AS n
           FROM wa_media m JOIN whatsapp_message w ON w.id = m.message_id
          WHERE m.media_id LIKE ?", { Slice => {} }, "RUN%\\_$tag");
    is scalar @$rows, scalar keys %kind, 'every medium of the run queued, once';
    is scalar(grep { $_->{kind} ne $kind{ $_->{media_id} } || $_->{type} ne $_->{kind}
                     || $_->{n} != 1 } @$rows), 0, 'each of its kind, linked to its message';
    ok $t->wait_for(sub {
        $dbh->selectrow_array("SELECT count(*) FROM wa_media WHERE media_id LIKE ?
                                  AND state = 'fetched'", undef, "RUN%\\_$tag") == keys %kind
    }, 30, 'the run fetched'), 'and every one fetched';
}

# ---- an echo's media is fetched, an outbound send's is not -----------------

{
    my $e = echo(to => '16505557777');
    $e->{type} = 'image';
    delete $e->{text};
    $e->{image} = { id => "ECHO_$tag", mime_type => 'image/jpeg' };
    my $r = $t->post_webhook(body(value(message_echoes => [ $e ])));
    is $r->{status}, 200, 'echo with an image: 200';
    my $row = wait_state("ECHO_$tag", 'fetched');
    ok $row, 'an echo\'s media is fetched too';
    my $m = $t->sql('SELECT media_id, body, source FROM whatsapp_message '
                    . 'WHERE provider_message_id = ?', $e->{id})->[0];
    is $m->{media_id}, "ECHO_$tag", 'the echo\'s row has its media id column';
    is $m->{body}, '[image]', 'and a readable body';
    is $m->{source}, 'business_app', 'from the Business app';

    $dbh->do(q{INSERT INTO whatsapp_message (business_id, direction, phone,
               type, payload, status, source)
               VALUES (1, 'out', '16505550001', 'image',
                       '{"type":"image","image":{"id":"OURS_1"}}', 'sent', 'api')});
    is $dbh->selectrow_array(q{SELECT count(*) FROM wa_media
                               WHERE media_id = 'OURS_1'}), 0,
       'media we sent by id is not fetched back';
}

# ---- failures: retried and logged, or given up loudly ----------------------

media_message('image', "FAILDL2_$tag");
{
    my $row = wait_state("FAILDL2_$tag", 'fetched', 30);
    ok $row, 'a download that failed twice is fetched on the third try';
    is $row->{attempts}, 3, 'three attempts';
    my @lines = grep { /FAILDL2_\Q$tag\E/ && /ERROR/ } split /\n/, $t->media_log;
    is scalar @lines, 2, 'each failed attempt: one ERROR line with the media id';
}

media_message('image', "GONE_$tag");
media_message('video', "BIG_$tag");
media_message('image', "BADSHA_$tag");

{
    my $row = wait_state("GONE_$tag", 'failed');
    like $row->{last_error}, qr/^not_found/, 'unknown media id: given up, not_found';
    is $row->{attempts}, 1, 'unknown media id: at once';
    ok $row->{failed_at}, 'failed_at set';

    $row = wait_state("BIG_$tag", 'failed');
    like $row->{last_error}, qr/^too_big/, 'over wa_media_max_size: too_big';
    ok !(grep { $_->{path} =~ /media-dl\/BIG_/ } $mock->requests),
       'too big: nothing downloaded';

    $row = wait_state("BADSHA_$tag", 'failed', 30);
    like $row->{last_error}, qr/^sha256_mismatch/, 'wrong sha256: given up';
    is $row->{attempts}, 3, 'wrong sha256: after three tries';

    my $log = $t->media_log;
    for my $id ("GONE_$tag", "BIG_$tag", "BADSHA_$tag") {
        like $log, qr/CRITICAL.*media \Q$id\E .*given up/,
             "$id: a CRITICAL line names the media";
    }
    ok !(glob "$mdir/tmp/*"), 'no temporary file left behind'
        or diag(join ' ', glob "$mdir/tmp/*");
}

# ---- the counts in wa_status ------------------------------------------------

{
    my $st;
    $t->wait_for(sub {
        my $r = $t->http('GET', '/wa_status');
        $st = eval { decode_json($r->{content}) };
        $st && $st->{media} && $st->{media}{failed} >= 3;
    }, 15, 'wa_status media counts');
    ok $st->{media}{failed} >= 3, 'wa_status: media given up, counted';
    ok $st->{media}{downloaded} >= 8, 'wa_status: downloads counted';
    ok $st->{media}{download_errors} >= 4, 'wa_status: download errors counted';
    ok $st->{media}{report_age_ms} < 15000, 'wa_status: the fetcher reports';
    my $p = $t->http('GET', '/wa_status?format=prometheus')->{content};
    like $p, qr/^wa_media_failed \d+$/m, 'prometheus: wa_media_failed';
    like $p, qr/^wa_media_waiting \d+$/m, 'prometheus: wa_media_waiting';
}

# ---- the webhook path never waits on a download ----------------------------

{
    media_message('image', "SLOWDL2000_$tag");
    sleep 0.5;                       # the download is in flight
    my $t0 = time;
    my $r = $t->post_webhook(body(value(messages => [ message('text') ])));
    my $dt = time - $t0;
    is $r->{status}, 200, 'a webhook during a slow download: 200';
    cmp_ok $dt, '<', 0.5, sprintf('answered in %.3f s, not after the download', $dt);
    ok wait_state("SLOWDL2000_$tag", 'fetched', 20), 'the slow one is fetched';
}

# ---- a full disk: nothing partial, retried, then stored --------------------

SKIP: {
    skip 'needs root to mount a small tmpfs', 5 unless $tmpfs;
    media_message('document', "DOC_SIZE900000_$tag");
    media_message('document', "DOC_SIZE900001_$tag");
    media_message('document', "DOC_SIZE900002_$tag");
    my $full;
    $t->wait_for(sub { ($full) = grep { /no_space/ } split /\n/, $t->media_log;
                       $full }, 30, 'ENOSPC');
    ok $full, 'a full media directory is reported: ' . ($full // '');
    ok !(glob "$mdir/tmp/*"), 'ENOSPC: no partial file';
    system('mount', '-o', 'remount,size=16m', $mdir) == 0 or diag "remount failed";
    for my $n (900000, 900001, 900002) {
        ok wait_state("DOC_SIZE${n}_$tag", 'fetched', 30), "after ENOSPC: $n fetched";
    }
}

# ---- a fetcher killed mid-download: another takes over after the lease --

{
    my $id = "SLOWDL1500_KILL_$tag";
    media_message('image', $id);
    $t->wait_for(sub { grep { $_->{path} =~ /media-dl\/\Q$id\E/ } $mock->requests },
                 15, 'the download to start');
    $t->stop_media('KILL');
    my $t0 = time;
    $t->start_media(@fetcher);
    my $row = wait_state($id, 'fetched', 40);
    ok $row, sprintf('a media whose fetcher was killed is fetched by the next '
                     . 'one, %.1f s later', time - $t0);
    is $row->{attempts}, 2, 'two attempts';
    is scalar(grep { $_->{path} =~ /media-dl\/\Q$id\E/ } $mock->requests), 2,
       'downloaded again, not lost';
}

# ---- the token is in nginx.conf only ---------------------------------------

{
    my $dump = join "\n", map { join ',', map { $_ // '' } @$_ }
        @{ $dbh->selectall_arrayref('SELECT * FROM wa_media') };
    unlike $t->error_log, qr/\Q$WaTest::TOKEN\E/, 'token: not in nginx\'s log';
    unlike $t->media_log, qr/\Q$WaTest::TOKEN\E/, 'token: not in the fetcher\'s log';
    unlike $dump, qr/\Q$WaTest::TOKEN\E/, 'token: not in the database';
    unlike $t->error_log, qr/mock-signature/, 'the signed download url is not logged';
}

is $t->stop_media, 0, 'the fetcher stops cleanly';

done_testing;
