#!/usr/bin/perl
# The rest of the send API: sends to a business-scoped user id, the reply
# context in its own column, mark-as-read (with the typing indicator), and
# media uploads streamed from disk with a bounded worker memory.
# WA_SEND_WORLD=1 runs it all against the mock over TLS and HTTP/2.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Digest::SHA;
use IO::Socket::INET;
use JSON::PP;
use Time::HiRes qw(time sleep);
use WaTest;
use WaPayload qw(body value message wamid);

my $json = JSON::PP->new->utf8->canonical;

my $t = WaTest->new;
$t->start_pg;
$t->migrate;
# WA_SEND_WORLD=1: the mock reached as Meta is (host name, TLS, HTTP/2),
# as t/41 runs t/40
my $mock = $t->start_mock(world => $ENV{WA_SEND_WORLD});
my $api = $mock->api_conf;
$t->start_nginx(workers => 1, ring_size => '64k', server => $t->default_locations
                . <<EOF);
        location /upload {
            wa_media_upload;
            $api
            wa_channel $WaTest::PHONE_ID business=1 token=$WaTest::TOKEN;
        }
        location /send2 {
            wa_send;
            $api
            wa_channel 111111111 business=2 token=T2;
            wa_channel 222222222 business=3 token=T3;
        }
        location /upload2 {
            wa_media_upload;
            $api
            wa_channel 111111111 business=2 token=T2;
            wa_channel 222222222 business=3 token=T3;
        }
EOF
$t->start_writer;

my $port = $t->port;
my $phone_id = $WaTest::PHONE_ID;

sub mock_requests { my ($re) = @_; grep { $_->{path} =~ $re } $mock->requests }
sub count { $t->sql_value(@_) }

# ---- mark as read -------------------------------------------------------

subtest 'mark as read, with the typing indicator' => sub {
    my $w = wamid();
    my $r = $t->post_webhook(body(value(
        contacts => [ { profile => { name => 'Reader' }, wa_id => '16505550101' } ],
        messages => [ message('text', from => '16505550101', id => $w) ])));
    is($r->{status}, 200, 'inbound message acknowledged');
    $t->wait_for(sub { count('SELECT count(*) FROM whatsapp_message WHERE provider_message_id = ?', $w) }, 10,
                 'inbound row');
    my $in_id = count('SELECT id FROM whatsapp_message WHERE provider_message_id = ?', $w);
    ok($in_id, 'inbound row stored');
    is(count('SELECT read_by_business_at FROM whatsapp_message WHERE id = ?', $in_id), undef,
       'not read by the business yet');

    my $before = () = mock_requests(qr{/messages$});
    # the caller's spacing inside typing_indicator reaches Meta as written
    $r = $t->send_message('{"status":"read","message_id":"' . $w
                          . '","typing_indicator":{ "type" : "text" }}');
    is($r->{status}, 200, 'mark-as-read answered 200') or diag($r->{content});
    is($r->{json}{status}, 'read', 'status read');
    is($r->{json}{message_id}, $w, 'names the message');
    like($r->{json}{id} // '', qr/^wa-/, 'a local id');

    my @got = mock_requests(qr{/messages$});
    is(scalar @got, $before + 1, 'one call reached the mock');
    is($got[-1]{path}, "/$phone_id/messages", 'to /PHONE_NUMBER_ID/messages');
    is($got[-1]{body}, '{"messaging_product":"whatsapp","status":"read","message_id":"'
       . $w . '","typing_indicator":{ "type" : "text" }}',
       'Meta\'s body, the typing indicator byte for byte');
    is($got[-1]{headers}{authorization}, "Bearer $WaTest::TOKEN", 'the channel\'s token');

    my $row;
    $t->wait_for(sub {
        $row = $t->sql('SELECT * FROM wa_mark_read WHERE local_id = ?', $r->{json}{id})->[0];
        $row && $row->{status} ne 'pending';
    }, 10, 'mark row');
    is($row->{status}, 'read', 'wa_mark_read row: read');
    is($row->{provider_message_id}, $w, 'its wamid');
    is($row->{typing_indicator}, 'text', 'the typing indicator');
    is(count('SELECT m.id FROM wa_mark_read r JOIN whatsapp_message m
                ON m.provider_message_id = r.provider_message_id AND m.business_id = r.business_id
             WHERE r.local_id = ?', $r->{json}{id}), $in_id,
       'names the inbound row by its key');
    is($row->{business_id}, 1, 'its business');
    is($row->{http_status}, 200, 'the provider\'s status');
    ok($row->{done_at}, 'done_at set');

    my $at = count('SELECT read_by_business_at FROM whatsapp_message WHERE id = ?', $in_id);
    ok($at, 'read_by_business_at set');

    # again, without the indicator: a second call, the stamp unchanged
    sleep 0.05;
    $r = $t->send_message({ status => 'read', message_id => $w });
    is($r->{status}, 200, 'marked again');
    $t->wait_for(sub { count("SELECT count(*) FROM wa_mark_read WHERE provider_message_id = ? AND status = 'read'", $w) == 2 }, 10,
                 'second mark row');
    is(count("SELECT count(*) FROM wa_mark_read WHERE provider_message_id = ? AND status = 'read'", $w), 2,
       'two calls recorded');
    is(count('SELECT typing_indicator FROM wa_mark_read WHERE local_id = ?', $r->{json}{id}), undef,
       'the second without indicator');
    is(count('SELECT read_by_business_at FROM whatsapp_message WHERE id = ?', $in_id), $at,
       'read_by_business_at stamped once');
    my @last = mock_requests(qr{/messages$});
    is($last[-1]{body}, '{"messaging_product":"whatsapp","status":"read","message_id":"' . $w . '"}',
       'no typing_indicator when none was asked');
};

subtest 'mark as read refused by the provider' => sub {
    my $w = 'wamid.FAIL_131009_' . int(time * 1000);
    $t->post_webhook(body(value(messages => [ message('text', from => '16505550102', id => $w) ])));
    $t->wait_for(sub { count('SELECT count(*) FROM whatsapp_message WHERE provider_message_id = ?', $w) }, 10);
    my $r = $t->send_message({ status => 'read', message_id => $w });
    is($r->{status}, 502, 'refused: 502');
    is($r->{json}{status}, 'failed', 'failed');
    is($r->{json}{error}{code}, 131009, 'the provider\'s code');
    my $row;
    $t->wait_for(sub {
        $row = $t->sql('SELECT * FROM wa_mark_read WHERE local_id = ?', $r->{json}{id})->[0];
        $row && $row->{status} ne 'pending';
    }, 10);
    is($row->{status}, 'failed', 'row failed');
    is($row->{error_code}, 131009, 'its error code');
    is(count('SELECT read_by_business_at FROM whatsapp_message WHERE provider_message_id = ?', $w), undef,
       'the message is not read by the business');
};

subtest 'mark as read through one of several channels' => sub {
    my $w = wamid();
    my $r = $t->send_message({ status => 'read', message_id => $w }, path => '/send2');
    is($r->{status}, 400, 'several channels, no phone_number_id: 400');
    like($r->{json}{error} // '', qr/^phone_number_id:/, 'names phone_number_id');
    $r = $t->send_message({ status => 'read', message_id => $w, phone_number_id => '222222222' },
                          path => '/send2');
    is($r->{status}, 200, 'with its phone_number_id: 200');
    my @got = mock_requests(qr{/messages$});
    is($got[-1]{path}, '/222222222/messages', 'that channel\'s endpoint');
    is($got[-1]{headers}{authorization}, 'Bearer T3', 'that channel\'s token');
    my $row;
    $t->wait_for(sub {
        $row = $t->sql('SELECT * FROM wa_mark_read WHERE local_id = ?', $r->{json}{id})->[0];
        $row && $row->{status} ne 'pending';
    }, 10);
    is($row->{business_id}, 3, 'that channel\'s business');
    is($row->{phone_number_id}, '222222222', 'its phone number id');
};

subtest 'mark as read: bad input is refused, nothing sent or recorded' => sub {
    my $marks = count('SELECT count(*) FROM wa_mark_read');
    my $calls = () = $mock->requests;
    for my $c (
        [ { status => 'delivered', message_id => 'wamid.x' }, qr/^status:/ ],
        [ { status => 'read' }, qr/^message_id:/ ],
        [ { status => 'read', message_id => '' }, qr/^message_id:/ ],
        [ { status => 'read', message_id => 'wamid.x', typing_indicator => { type => 'audio' } },
          qr/^typing_indicator:/ ],
        [ { status => 'read', message_id => 'wamid.x', typing_indicator => 'text' },
          qr/^typing_indicator:/ ],
        [ { status => 'read', message_id => 'wamid.x', to => '16505550101' }, qr/^to:/ ],
        [ { status => 'read', message_id => 'wamid.x', text => 'hi' }, qr/^text:/ ],
        [ { status => 'read', message_id => 'wamid.x', messaging_product => 'sms' },
          qr/^messaging_product:/ ],
        [ { status => 'read', message_id => 'wamid.x', phone_number_id => '999' },
          qr/^phone_number_id:/ ],
    ) {
        my $r = $t->send_message($c->[0]);
        is($r->{status}, 400, '400 for ' . $json->encode($c->[0]));
        like($r->{json}{error} // '', $c->[1], 'names the field');
    }
    $t->wait_drained;
    is(count('SELECT count(*) FROM wa_mark_read'), $marks, 'nothing recorded');
    is(scalar(my @r = $mock->requests), $calls, 'nothing sent');
};

# ---- business-scoped user ids -------------------------------------------

subtest 'a send to a user id alone: accepted, recorded with its lead' => sub {
    my $uid = 'US.1349120865530274' . int(rand(1e6));
    my $r = $t->send_message({ recipient => $uid, text => 'hello by user id' });
    is($r->{status}, 200, 'accepted: 200') or diag($r->{content});
    my @got = mock_requests(qr{/messages$});
    my $sent = $json->decode($got[-1]{body});
    is($sent->{recipient}, $uid, 'the user id reaches Meta as "recipient"');
    ok(!exists $sent->{to}, 'no "to"');
    my $row = $t->send_row($r->{json}{id});
    is($row->{status}, 'sent', 'row sent');
    is($row->{phone}, undef, 'no phone');
    is($row->{wa_user_id}, $uid, 'its wa_user_id');
    ok($row->{lead_id}, 'a lead');
    my $lead = $t->sql('SELECT * FROM leads WHERE id = ?', $row->{lead_id})->[0];
    is($lead->{wa_user_id}, $uid, 'the lead is the user id\'s');
    is($lead->{business_id}, 1, 'of the business');

    # the user writes in (no phone in the webhook): the same lead
    my $w = wamid();
    $t->post_webhook(body(value(
        contacts => [ { profile => { name => 'Hidden' }, user_id => $uid } ],
        messages => [ { from_user_id => $uid, id => $w, timestamp => '' . int(time),
                        type => 'text', text => { body => 'hi back' } } ])));
    $t->wait_for(sub { count('SELECT count(*) FROM whatsapp_message WHERE provider_message_id = ?', $w) }, 10,
                 'inbound by user id');
    is(count('SELECT lead_id FROM whatsapp_message WHERE provider_message_id = ?', $w), $row->{lead_id},
       'the inbound message of that user links to the same lead');

    # a second send to the same user: the same lead, none created
    my $leads = count('SELECT count(*) FROM leads');
    $r = $t->send_message({ recipient => $uid, type => 'text', text => { body => 'again' } });
    is($r->{status}, 200, 'second send');
    is($t->send_row($r->{json}{id})->{lead_id}, $row->{lead_id}, 'same lead');
    is(count('SELECT count(*) FROM leads'), $leads, 'no lead created');
};

subtest 'a user id of a lead first met by user id, then a phone and a user id' => sub {
    my $uid = 'BR.ENT.1181579921288684' . int(rand(1e6));
    my $phone = '97250' . (1000000 + int(rand(8e6)));
    my $r = $t->send_message({ to => "+$phone", recipient => $uid, text => 'both' });
    is($r->{status}, 200, 'to and recipient: 200');
    my @got = mock_requests(qr{/messages$});
    my $sent = $json->decode($got[-1]{body});
    is($sent->{to}, $phone, 'to forwarded');
    is($sent->{recipient}, $uid, 'recipient forwarded (Meta lets "to" win)');
    my $row = $t->send_row($r->{json}{id});
    is($row->{phone}, $phone, 'row phone');
    is($row->{wa_user_id}, $uid, 'row wa_user_id');
    my $lead = $t->sql('SELECT * FROM leads WHERE id = ?', $row->{lead_id})->[0];
    is($lead->{phone}, $phone, 'the lead of the phone');
    is($lead->{wa_user_id}, $uid, 'which learnt the user id');
};

subtest 'recipient: bad ids refused, nothing recorded' => sub {
    my $n = count('SELECT count(*) FROM whatsapp_message');
    for my $bad ('nope', 'us.123', 'US.', 'US..1', 'US.12 3', 'US.' . ('1' x 200), 12345) {
        my $r = $t->send_message({ recipient => $bad, text => 'x' });
        is($r->{status}, 400, "400 for recipient $bad");
        like($r->{json}{error} // '', qr/^recipient:/, 'names recipient');
    }
    my $r = $t->send_message({ text => 'x' });
    like($r->{json}{error} // '', qr/^to:.*recipient/, 'neither: the error names both');
    $t->wait_drained;
    is(count('SELECT count(*) FROM whatsapp_message'), $n, 'nothing recorded');
};

subtest 'the reply context in context_message_id' => sub {
    my $ctx = wamid();
    my $r = $t->send_message({ to => '+16505550103', type => 'text', text => { body => 'a reply' },
                               context => { message_id => $ctx } });
    is($r->{status}, 200, 'reply sent');
    my $row = $t->send_row($r->{json}{id});
    is($row->{context_message_id}, $ctx, 'context_message_id');
    is($json->decode($row->{payload})->{context}{message_id}, $ctx, 'alongside the payload');
    $r = $t->send_message({ to => '+16505550103', text => 'no reply' });
    is($t->send_row($r->{json}{id})->{context_message_id}, undef, 'NULL without a context');
    ok(count("SELECT count(*) FROM pg_indexes WHERE tablename = 'whatsapp_message' AND indexdef LIKE '%(context_message_id%'"),
       'context_message_id is indexed');
};

# ---- media upload -------------------------------------------------------

sub upload {
    my (%o) = @_;
    my $path = $o{path} // '/upload';
    my @cmd = ('curl', '-s', '-o', $o{out}, '-w', '%{http_code}', '-X', 'POST',
               '-H', "Content-Type: $o{type}", '-H', 'Expect:',
               $o{chunked} ? ('-H', 'Transfer-Encoding: chunked') : (),
               '--data-binary', "\@$o{file}",
               "http://127.0.0.1:$port$path" . ($o{query} // ''));
    return @cmd;
}

sub upload_now {
    my (%o) = @_;
    my $out = $t->dir . "/upload-out-" . int(rand(1e9));
    my $code = qx{@{[ join ' ', map { WaTest::quote($_) } upload(%o, out => $out) ]}};
    my $body = WaTest::slurp($out);
    return ($code, scalar(eval { $json->decode($body) }) // { raw => $body });
}

sub make_file {
    my ($name, $size, $head) = @_;
    my $f = $t->dir . "/$name";
    open my $fh, '>', $f or die;
    binmode $fh;
    $head //= '';
    print $fh $head;
    my $left = $size - length $head;
    # not all zeros: a hash that sees every byte
    my $block = join '', map { chr(($_ * 131 + 7) % 256) } 0 .. 65535;
    my $i = 0;
    while ($left > 0) {
        my $n = $left < length $block ? $left : length $block;
        print $fh substr($block, 0, $n - 1) . chr($i++ % 256);
        $left -= $n;
    }
    close $fh;
    return $f;
}

sub sha_file { Digest::SHA->new(256)->addfile($_[0], 'b')->hexdigest }

sub media_row {
    my ($id) = @_;
    my $row;
    $t->wait_for(sub {
        $row = $t->sql('SELECT * FROM wa_media_upload WHERE local_id = ?', $id)->[0];
        $row && $row->{status} ne 'pending';
    }, 20, "media row $id");
    return $row;
}

subtest 'upload an image: the media id, the bytes exact, the row' => sub {
    my $f = make_file('photo.jpg', 300_000);
    my ($code, $a) = upload_now(file => $f, type => 'image/jpeg', query => '?filename=photo%20one.jpg');
    is($code, 200, 'accepted: 200') or diag($json->encode($a));
    is($a->{status}, 'uploaded', 'uploaded');
    like($a->{media_id} // '', qr/^\d+$/, 'the media id');
    is($a->{sha256}, sha_file($f), 'sha256 of the file');
    is($a->{size}, 300_000, 'its size');
    is($a->{type}, 'image', 'its kind');

    my ($got) = grep { $_->{file} && $_->{file}{filename} eq 'photo one.jpg' } mock_requests(qr{/media$});
    ok($got, 'the mock got the upload');
    is($got->{path}, "/$phone_id/media", 'at /PHONE_NUMBER_ID/media');
    is($got->{headers}{authorization}, "Bearer $WaTest::TOKEN", 'with the channel\'s token');
    like($got->{headers}{'content-type'}, qr{^multipart/form-data; boundary=}, 'as a form');
    is($got->{fields}{messaging_product}, 'whatsapp', 'messaging_product');
    is($got->{fields}{type}, 'image/jpeg', 'type');
    is($got->{file}{type}, 'image/jpeg', 'the file part\'s type');
    is($got->{file}{size}, 300_000, 'every byte');
    is($got->{file}{sha256}, sha_file($f), 'byte for byte');

    my $row = media_row($a->{id});
    is($row->{status}, 'uploaded', 'row uploaded');
    is($row->{media_id}, $a->{media_id}, 'row media id');
    is($row->{sha256}, sha_file($f), 'row sha256');
    is($row->{size}, 300_000, 'row size');
    is($row->{media_type}, 'image', 'row media_type');
    is($row->{mime_type}, 'image/jpeg', 'row mime_type');
    is($row->{filename}, 'photo one.jpg', 'row filename');
    is($row->{business_id}, 1, 'row business');
    is($row->{phone_number_id}, $phone_id, 'row phone number id');
    ok($row->{uploaded_at}, 'uploaded_at');
};

subtest 'a 50 MB document streams: the worker does not hold it' => sub {
    my $size = 50 * 1024 * 1024;
    my $f = make_file('big.pdf', $size);
    my ($pid) = $t->worker_pids;
    my $status = sub {
        my %s = WaTest::slurp("/proc/$pid/status") =~ /^(VmRSS|VmHWM):\s+(\d+) kB/mg;
        return \%s;
    };
    my $before = $status->();
    ok($before->{VmRSS}, "worker $pid VmRSS before: $before->{VmRSS} kB, VmHWM $before->{VmHWM} kB");

    my $out = $t->dir . '/big-out';
    my $cpid = fork // die;
    if ($cpid == 0) {
        open STDOUT, '>', '/dev/null';
        { exec upload(file => $f, type => 'application/pdf', query => '?filename=big.pdf', out => $out) }
        POSIX::_exit(127);
    }
    my $max = 0;
    my $samples = 0;
    while (waitpid($cpid, POSIX::WNOHANG()) == 0) {
        my $s = $status->();
        $max = $s->{VmRSS} if ($s->{VmRSS} // 0) > $max;
        $samples++;
        sleep 0.01;
    }
    my $after = $status->();
    diag("worker VmRSS before $before->{VmRSS} kB, max during $max kB ($samples samples), "
         . "VmHWM before $before->{VmHWM} kB, after $after->{VmHWM} kB");
    cmp_ok($max - $before->{VmRSS}, '<', 8 * 1024, 'VmRSS during the upload grew by less than 8 MB');
    cmp_ok($after->{VmHWM} - $before->{VmHWM}, '<', 8 * 1024,
           'VmHWM (the peak) grew by less than 8 MB, for a 50 MB file');

    my $a = eval { $json->decode(WaTest::slurp($out)) } // {};
    is($a->{status}, 'uploaded', 'uploaded') or diag(WaTest::slurp($out));
    my ($got) = grep { $_->{file} && $_->{file}{filename} eq 'big.pdf' } mock_requests(qr{/media$});
    is($got->{file}{size}, $size, 'the mock got 50 MB');
    my $sha = sha_file($f);
    is($got->{file}{sha256}, $sha, 'byte for byte');
    my $row = media_row($a->{id} // '');
    is($row->{sha256}, $sha, 'the row\'s sha256, computed as the bytes left');
    is($row->{size}, $size, 'the row\'s size');
    is($row->{media_type}, 'document', 'document');
    unlink $f;
};

subtest 'size limits and types: refused, nothing recorded or sent' => sub {
    my $uploads = count('SELECT count(*) FROM wa_media_upload');
    my $calls = () = mock_requests(qr{/media$});

    my $img = make_file('too-big.jpg', 5 * 1024 * 1024 + 1);
    my ($code, $a) = upload_now(file => $img, type => 'image/jpeg');
    is($code, 413, 'image over 5 MB: 413');
    like($a->{error} // '', qr/^body:/, 'names the body');
    ($code) = upload_now(file => $img, type => 'image/jpeg', chunked => 1);
    is($code, 413, 'the same, chunked (its size known only once read): 413');

    my $vid = make_file('too-big.mp4', 16 * 1024 * 1024 + 1);
    ($code) = upload_now(file => $vid, type => 'video/mp4');
    is($code, 413, 'video over 16 MB: 413');
    ($code) = upload_now(file => $vid, type => 'audio/ogg');
    is($code, 413, 'audio over 16 MB: 413');

    # a static WebP sticker: 100 KB; an animated one (VP8X, animation bit): 500 KB
    my $static = "RIFF\0\0\0\0WEBPVP8 ";
    my $anim = "RIFF\0\0\0\0WEBPVP8X\x0a\0\0\0\x02";
    ($code) = upload_now(file => make_file('s.webp', 100 * 1024 + 1, $static), type => 'image/webp');
    is($code, 413, 'static sticker over 100 KB: 413');
    ($code, $a) = upload_now(file => make_file('a.webp', 200 * 1024, $anim), type => 'image/webp');
    is($code, 200, 'animated sticker of 200 KB: 200');
    is($a->{type}, 'sticker', 'a sticker');
    ($code) = upload_now(file => make_file('a2.webp', 500 * 1024 + 1, $anim), type => 'image/webp');
    is($code, 413, 'animated sticker over 500 KB: 413');
    ($code) = upload_now(file => make_file('x.webp', 1000), type => 'image/webp');
    is($code, 400, 'image/webp that is not WebP: 400');

    my $small = make_file('small.gif', 1000);
    ($code, $a) = upload_now(file => $small, type => 'image/gif');
    is($code, 415, 'image/gif: 415');
    like($a->{error} // '', qr/^Content-Type:/, 'names the Content-Type');
    ($code) = upload_now(file => $small, type => 'application/pdf', query => '?filename=a%2Fb.pdf');
    is($code, 400, 'a file name with a slash: 400');
    ($code) = upload_now(file => $small, type => 'application/pdf', query => '?filename=a%22b');
    is($code, 400, 'a file name with a quote: 400');
    ($code) = upload_now(file => make_file('empty.pdf', 0), type => 'application/pdf');
    is($code, 400, 'an empty file: 400');
    ($code, $a) = upload_now(file => $small, type => 'application/pdf', path => '/upload2');
    is($code, 400, 'several channels, no phone_number_id: 400');
    like($a->{error} // '', qr/^phone_number_id:/, 'names phone_number_id');

    # a 2 GB promise: refused on its headers, the body never read
    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port") or die;
    print $s "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: application/pdf\r\n"
           . "Content-Length: 2147483648\r\n\r\n";
    my $head = <$s> // '';
    like($head, qr/^HTTP\/1\.1 413/, 'a document of 2 GB: 413 from its headers alone');
    close $s;

    $t->wait_drained;
    is(count('SELECT count(*) FROM wa_media_upload'), $uploads + 1,
       'nothing recorded but the one accepted sticker');
    is(scalar(my @m = mock_requests(qr{/media$})), $calls + 1, 'nothing else sent');
};

subtest 'upload refused by the provider; a second channel' => sub {
    my $f = make_file('refused.pdf', 10_000);
    my ($code, $a) = upload_now(file => $f, type => 'application/pdf',
                                query => '?filename=FAIL_131053.pdf');
    is($code, 502, 'refused: 502');
    is($a->{status}, 'failed', 'failed');
    is($a->{error}{code}, 131053, 'the provider\'s code');
    my $row = media_row($a->{id});
    is($row->{status}, 'failed', 'row failed');
    is($row->{error_code}, 131053, 'its code');
    is($row->{media_id}, undef, 'no media id');
    is($row->{sha256}, sha_file($f), 'the bytes that left, hashed');

    ($code, $a) = upload_now(file => $f, type => 'application/pdf', path => '/upload2',
                             query => '?phone_number_id=222222222&filename=doc.pdf');
    is($code, 200, 'second location, its second channel');
    my ($got) = grep { $_->{file} && $_->{file}{filename} eq 'doc.pdf' } mock_requests(qr{/media$});
    is($got->{path}, '/222222222/media', 'that channel\'s endpoint');
    is($got->{headers}{authorization}, 'Bearer T3', 'that channel\'s token');
    is(media_row($a->{id})->{business_id}, 3, 'that channel\'s business');
};

subtest 'ring full: marks and uploads refused with 503, nothing reaches the provider' => sub {
    $t->stop_writer;
    my $filled = 0;
    for (1 .. 2000) {
        my $st = $t->post_webhook(body(value(messages => [ message('text', text => 'f' x 500) ])))->{status};
        last if $st == 503;
        $filled++;
    }
    ok($filled > 0, "ring filled by $filled webhooks");

    # the last bytes: marks themselves, until one is refused
    my $refused;
    for (1 .. 50) {
        my $r = $t->send_message({ status => 'read', message_id => wamid() });
        if ($r->{status} == 503) { $refused = $r; last }
    }
    ok($refused, 'mark-as-read with the ring full: 503');
    like($refused->{content} // '', qr/nothing was sent/, 'says nothing was sent');

    # an upload's record is smaller than a mark's: the last bytes may take
    # a few, until one is refused
    my $f = make_file('ringfull.pdf', 1000);
    my ($code, $a, $calls);
    for my $i (1 .. 50) {
        $calls = () = $mock->requests;
        ($code, $a) = upload_now(file => $f, type => 'application/pdf',
                                 query => "?filename=ringfull-$i.pdf");
        last if $code == 503;
    }
    is($code, 503, 'upload with the ring full: 503');
    like($a->{error} // '', qr/nothing was uploaded/, 'says nothing was uploaded');
    sleep 0.3;
    is(scalar(my @r = $mock->requests), $calls, 'the refused upload never reached the provider');
    $t->start_writer;
    $t->wait_drained(30);
    is(count("SELECT count(*) FROM wa_media_upload WHERE filename LIKE 'ringfull-%'"),
       scalar(grep { $_->{file} && $_->{file}{filename} =~ /^ringfull-/ } $mock->requests),
       'every upload that reached the provider is recorded, the refused one is not');
    # their outcomes went into the room the ring keeps for outcomes
    is(count("SELECT count(*) FROM wa_media_upload WHERE filename LIKE 'ringfull-%'
               AND status = 'pending'"), 0, 'none of them is left pending');
};

subtest 'nginx -t names the directive' => sub {
    my ($rc, $out) = $t->nginx_t(ring_size => '64k', server => "location /m { wa_media_upload; }");
    isnt($rc, 0, 'wa_media_upload without a channel refused');
    like($out, qr/wa_media_upload needs at least one "wa_channel"/, 'named') or diag($out);
    ($rc, $out) = $t->nginx_t(ring_size => '64k', server => "location /m { wa_media_upload; wa_channel 1 business=1 token=T; "
                                        . "wa_media_upload_timeout 0; }");
    isnt($rc, 0, 'wa_media_upload_timeout 0 refused');
    like($out, qr/wa_media_upload_timeout/, 'named') or diag($out);
    ($rc, $out) = $t->nginx_t(no_ring => 1, server => "location /m { wa_media_upload; "
                                                      . "wa_channel 1 business=1 token=T; }");
    isnt($rc, 0, 'wa_media_upload without wa_ring refused');
    like($out, qr/wa_media_upload need "wa_ring"/, 'named');
};

subtest 'nothing lost: no dead letter, no CRITICAL' => sub {
    $t->wait_drained;
    is(count('SELECT count(*) FROM wa_dead_letter'), 0, 'no dead letter');
    unlike($t->writer_log, qr/CRITICAL/, 'no CRITICAL in the writer log');
    unlike($t->error_log, qr/\[(alert|emerg|crit)\]/, 'no alert in nginx\'s log');
};

done_testing;
