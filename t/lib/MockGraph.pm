package MockGraph;

# A mock of the Cloud API's POST /{phone_number_id}/messages on loopback.
# Each request is recorded as one JSON file in a directory (path, headers,
# body, and which connection carried it). The message text picks the
# answer:
#
#   FAIL_<code>   400 with a Meta-shaped error of that code
#   FAIL_500      500 with a transient error
#   FAILONCE_<code>_<x>  the first request with this text fails as FAIL_<code>,
#                 the next ones are accepted (the provider came back)
#   FAILTIMES_<n>_<code>_<x>  the first n requests with this text fail as
#                 FAIL_<code>, the next ones are accepted
#   RETRYAFTER_<s>_<x>  the first request with this text gets 130429 with
#                 a Retry-After: <s> header, the next ones are accepted
#   SLOW_<ms>     wait, then accept
#   WAMID_<x>     accept as wamid.<x>
#   DROP_<x>      read and record the request, then close without a word
#   TRUNC_<x>     200 whose Content-Length is a whole success body, half of
#                 it sent, then close
#   HUGE_<x>      200 with a valid JSON body over 300 KB (a long padding
#                 field before the usual messages array)
#   BADJSON_<x>   502, Content-Type application/json, body {not json}
#   CLOSE_AFTER_<x> 200 with a wamid, then close the kept-alive connection
#                 (the next request on it finds it dead)
#   anything else 200 with a fresh wamid
#
# GET /{media-id} is the media lookup, GET /media-dl/{media-id} the
# download its url points to (both want the channel's token; the mock
# records what they got). The media id picks the behaviour:
#
#   GONE_<x>      lookup 404, Meta's code 100: the id is unknown (expired)
#   BIG_<x>       lookup announces 200 MB
#   BADSHA_<x>    the download's bytes never match the lookup's sha256
#   FAILDL<n>_<x> the first n downloads answer 500
#   SLOWDL<ms>_<x> the download waits ms first
#   SIZE<n>_<x>   a file of n bytes (default 20000)
#   DUP_<x>       the same bytes whatever x is (one stored file)
#   DOC_<x>       application/pdf; VOICE_<x> audio/ogg; else image/jpeg
#
# A mark-as-read ("status": "read") answers {"success": true}, or the error
# FAIL_<code> in its message_id asks for.
#
# POST /{phone_number_id}/media, multipart/form-data as Meta takes it: the
# record holds, instead of the body, what the form carried (its fields, the
# file's name, type, size and SHA-256 as received); the answer is
# {"id": "<media id>"}. A file name FAIL_<code>... is refused with that
# code; SLOW_<ms>... waits first.
#
# With rate => N (MockGraph->start(rate => 20, burst => 2)) the mock is
# Meta's throughput limit: each phone number id (the path's) takes N
# messages a second, a token bucket of burst tokens (default 1) refilled N
# times a second, shared by all connections; a message beyond it gets 400
# with error 130429 and is recorded with "limited": 1. Only the messages
# the other words accept count.
#
# One process per connection, keep-alive honoured, so slow answers do not
# hold up others and connection reuse is visible: each record names its
# connection (conn) and its place on it (n, from 1).
#
# Behind the TLS + HTTP/2 front (WaTest's world mock) the same words reach
# this mock through the front's kept-alive HTTP/1.1 upstream connections;
# see WaTest::start_front for what the client then sees.

use strict;
use warnings;

use Digest::SHA qw(sha256_hex);
use Fcntl ();
use IO::Socket::INET;
use JSON::PP;
use POSIX qw(:sys_wait_h);
use Time::HiRes qw(sleep time);

my $json = JSON::PP->new->utf8->canonical;

sub start {
    my ($class, %o) = @_;
    my $dir = $o{dir} or die 'dir needed';
    mkdir $dir;

    my $listen = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
        LocalPort => $o{port} // 0, Listen => 128, ReuseAddr => 1)
        or die "mock listen: $!";
    my $port = $listen->sockport;

    if ($o{rate}) {
        open my $fh, '>', "$dir/rate" or die;
        print $fh "$o{rate} " . ($o{burst} // 1) . "\n";
        close $fh;
    }

    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        eval { serve($listen, $dir) };
        print STDERR "mock: $@" if $@;
        POSIX::_exit(1);
    }
    close $listen;

    return bless { pid => $pid, port => $port, dir => $dir }, $class;
}

sub port { $_[0]{port} }
# the world-like mock (WaTest::start_mock(world => 1)) sets url and ca
sub url  { $_[0]{url} // "http://127.0.0.1:$_[0]{port}" }
sub plain_url { "http://127.0.0.1:$_[0]{port}" }
sub ca   { $_[0]{ca} }
sub world { defined $_[0]{ca} }

# the directives a send location needs to reach this mock: wa_api_base,
# and on the world path the CA to trust
sub api_conf {
    my ($self) = @_;
    return "wa_api_base ${\ $self->url };\n"
         . ($self->{ca} ? "            wa_ssl_trusted_certificate $self->{ca};\n" : '');
}

sub requests {
    my ($self) = @_;
    my @r;
    opendir my $d, $self->{dir} or return ();
    for my $f (sort grep { /^req-/ } readdir $d) {
        open my $fh, '<', "$self->{dir}/$f" or next;
        local $/;
        my $s = <$fh>;
        push @r, $json->decode($s) if length $s;
    }
    return @r;
}

sub stop {
    my ($self) = @_;
    return unless $self->{pid};
    kill 'TERM', $self->{pid};
    waitpid $self->{pid}, 0;
    delete $self->{pid};
}

sub DESTROY { $_[0]->stop }

# for make run: serve in the foreground
sub serve_forever {
    my ($port, $dir) = @_;
    mkdir $dir;
    my $listen = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
        LocalPort => $port, Listen => 128, ReuseAddr => 1)
        or die "mock listen on $port: $!";
    serve($listen, $dir);
}

sub serve {
    my ($listen, $dir) = @_;
    my %kids;
    # forked from a test: never run the test's END blocks (its teardown)
    $SIG{TERM} = sub { kill 'TERM', keys %kids; POSIX::_exit(0) };
    # children are reaped between accepts, not from a SIGCHLD handler: a
    # burst of exits overflows perl's pending signal count and kills it
    $SIG{CHLD} = 'DEFAULT';

    while (1) {
        while ((my $k = waitpid(-1, WNOHANG)) > 0) { delete $kids{$k} }
        my $c = $listen->accept or next;
        my $pid = fork;
        if (!defined $pid) { close $c; next }
        if ($pid == 0) {
            $SIG{TERM} = 'DEFAULT';
            close $listen;
            # a request the mock cannot read is the test's business, not a
            # reason to die: answer what can be answered, then go
            eval { connection($c, $dir, "$$") };
            print STDERR "mock connection: $@" if $@;
            POSIX::_exit(0);
        }
        $kids{$pid} = 1;
        close $c;
    }
}

sub connection {
    my ($c, $dir, $conn) = @_;
    my $n = 0;

    while (1) {
        my $line = <$c>;
        return unless defined $line;
        my ($method, $path) = $line =~ m{^(\S+)\s+(\S+)};
        my %h;
        while (defined(my $l = <$c>)) {
            $l =~ s/\r?\n$//;
            last if $l eq '';
            my ($k, $v) = split /:\s*/, $l, 2;
            $h{lc $k} = $v;
        }
        my $body = '';
        read($c, $body, $h{'content-length'}) if $h{'content-length'};

        if ($method eq 'POST' && $path =~ m{/media$}) {
            $n++;
            upload($c, $dir, $conn, $n, $method, $path, \%h, \$body);
            return if lc($h{connection} // '') eq 'close';
            next;
        }

        if ($method eq 'GET') {
            $n++;
            my $rec = { method => $method, path => $path, headers => \%h,
                        body => '', conn => $conn, n => $n, at => time };
            my $f = sprintf '%s/req-%.6f-%s-%d', $dir, time, $conn, $n;
            open my $fh, '>', "$f.tmp" or die;
            print $fh $json->encode($rec);
            close $fh;
            rename "$f.tmp", $f;
            media($c, $dir, $path, \%h);
            return if lc($h{connection} // '') eq 'close';
            next;
        }

        my $req = eval { $json->decode($body) };
        $req = {} unless ref $req eq 'HASH';
        my $text = ref $req->{text} eq 'HASH' ? $req->{text}{body} // '' : '';
        $n++;

        # state across connections (one process each): a file per text
        my $retry_after;
        if ($text =~ /^FAILONCE_(\d+)_/) {
            (my $mark = "$dir/once-$text") =~ s/[^\w\/.-]/_/g;
            if (sysopen my $fh, $mark, POSIX::O_CREAT() | POSIX::O_EXCL() | POSIX::O_WRONLY()) {
                close $fh;
                $text = "FAIL_$1";
            }
        } elsif ($text =~ /^FAILTIMES_(\d+)_(\d+)_/) {
            my ($times, $code) = ($1, $2);
            $text = "FAIL_$code" if count_text($dir, $text) <= $times;
        } elsif ($text =~ /^RETRYAFTER_(\d+)_/) {
            my $s = $1;
            if (count_text($dir, $text) == 1) {
                $text = 'FAIL_130429';
                $retry_after = $s;
            }
        }

        my $at = time;
        my $limited = $text =~ /^(FAIL|DROP|TRUNC|BADJSON)/ ? 0
                    : over_rate($dir, $path, $at);
        $text = 'FAIL_130429' if $limited;

        my $rec = { method => $method, path => $path, headers => \%h,
                    body => $body, conn => $conn, n => $n, at => $at,
                    limited => $limited };
        my $f = sprintf '%s/req-%.6f-%s-%d', $dir, $at, $conn, $n;
        open my $fh, '>', "$f.tmp" or die;
        print $fh $json->encode($rec);
        close $fh;
        rename "$f.tmp", $f;

        # no answer at all: the client sees the connection end
        return if $text =~ /^DROP_/;

        my ($status, $answer, $raw);
        if ($text =~ /^SLOW_(\d+)/) {
            sleep $1 / 1000;
        }
        if (($req->{status} // '') eq 'read') {
            my $mid = $req->{message_id} // '';
            ($status, $answer) = $mid =~ /FAIL_(\d+)/
                ? (400, { error => {
                    message => "(#$1) mark as read failed", type => 'OAuthException',
                    code => 0 + $1, fbtrace_id => 'AmockRead' . $1 } })
                : (200, { success => JSON::PP::true });
        } elsif ($text =~ /^FAIL_500/) {
            ($status, $answer) = (500, { error => {
                message => 'An unknown error has occurred.', type => 'OAuthException',
                code => 1, fbtrace_id => 'AmockTrace500' } });
        } elsif ($text =~ /^FAIL_(\d+)/) {
            ($status, $answer) = (400, { error => {
                message => "(#$1) Message failed to send", type => 'OAuthException',
                code => 0 + $1,
                error_data => { messaging_product => 'whatsapp',
                                details => "mock failure $1" },
                fbtrace_id => 'AmockTrace' . $1 } });
        } elsif ($text =~ /^BADJSON_/) {
            ($status, $raw) = (502, '{not json}');
        } else {
            my $to = $req->{to} // '';
            # WAMID_<x>: the test chooses the id (to send receipts first)
            my $id = $text =~ /^WAMID_(\S+)/ ? "wamid.$1"
                   : sprintf('wamid.MOCK%s%d%d', $conn, $n, int(time * 1000));
            ($status, $answer) = (200, {
                messaging_product => 'whatsapp',
                contacts => [ { input => $to, wa_id => $to } ],
                messages => [ { id => $id } ] });
            if ($text =~ /^HUGE_/) {
                # the padding first, so a reader must get past 300 KB to
                # find the messages array
                my $rest = $json->encode($answer);
                $rest =~ s/^\{//;
                $raw = '{"padding":"' . ('x' x (320 * 1024)) . '",' . $rest;
            }
        }

        my $out = $raw // $json->encode($answer);
        my $reason = { 200 => 'OK', 400 => 'Bad Request', 500 => 'Internal Server Error',
                       502 => 'Bad Gateway' }->{$status};
        my $head = "HTTP/1.1 $status $reason\r\nContent-Type: application/json\r\n"
                 . (defined $retry_after ? "Retry-After: $retry_after\r\n" : '')
                 . "Content-Length: " . length($out) . "\r\n\r\n";
        if ($text =~ /^TRUNC_/) {
            # promise the whole body, deliver half, hang up
            print $c $head . substr($out, 0, int(length($out) / 2));
            $c->flush;
            return;
        }
        print $c $head . $out;
        $c->flush;

        return if $text =~ /^CLOSE_AFTER_/;
        return if lc($h{connection} // '') eq 'close';
    }
}

sub media_bytes {
    my ($id) = @_;
    my $size = $id =~ /SIZE(\d+)_/ ? $1 : 20000;
    my $seed = $id =~ /^DUP_/ ? 'the same bytes ' : "bytes of $id ";
    my $b = $seed x (int($size / length $seed) + 1);
    return substr $b, 0, $size;
}

sub media_mime {
    my ($id) = @_;
    return $id =~ /^DOC_/ ? 'application/pdf'
         : $id =~ /^VOICE_/ ? 'audio/ogg; codecs=opus' : 'image/jpeg';
}

sub media_answer {
    my ($c, $status, $type, $body) = @_;
    my $reason = { 200 => 'OK', 401 => 'Unauthorized', 404 => 'Not Found',
                   500 => 'Internal Server Error' }->{$status} // 'Status';
    print $c "HTTP/1.1 $status $reason\r\nContent-Type: $type\r\n"
           . "Content-Length: " . length($body) . "\r\n\r\n" . $body;
    $c->flush;
}

# the two-step media flow of the Cloud API
sub media {
    my ($c, $dir, $path, $h) = @_;
    require Digest::SHA;
    my $auth = $h->{authorization} // '';
    if ($auth !~ /^Bearer \S+$/) {
        return media_answer($c, 401, 'application/json', $json->encode(
            { error => { message => 'no token', code => 190 } }));
    }

    if ($path =~ m{^/media-dl/([\w.-]+)}) {
        my $id = $1;
        if ($id =~ /^FAILDL(\d+)_/) {
            my $max = $1;
            (my $mark = "$dir/dl-$id") =~ s/[^\w\/.-]/_/g;
            open my $fh, '>>', $mark; print $fh "x"; close $fh;
            if (-s $mark <= $max) {
                return media_answer($c, 500, 'text/plain', 'try later');
            }
        }
        sleep $1 / 1000 if $id =~ /^SLOWDL(\d+)_/;
        my $bytes = media_bytes($id);
        $bytes =~ s/^./X/ if $id =~ /^BADSHA_/;
        return media_answer($c, 200, media_mime($id), $bytes);
    }

    my ($id) = $path =~ m{/([\w.-]+)$};
    $id //= '';
    if ($id =~ /^GONE_/) {
        return media_answer($c, 404, 'application/json', $json->encode(
            { error => { message => "Unsupported get request. Object with "
                         . "ID '$id' does not exist", type => 'GraphMethodException',
                         code => 100, error_subcode => 33,
                         fbtrace_id => 'AmockGone' } }));
    }

    my $bytes = media_bytes($id);
    my $base = $h->{'x-front-host'} ? "https://$h->{'x-front-host'}"
             : "http://$h->{host}";
    media_answer($c, 200, 'application/json', $json->encode({
        messaging_product => 'whatsapp',
        url => "$base/media-dl/$id?sig=mock-signature",
        mime_type => media_mime($id),
        sha256 => Digest::SHA::sha256_hex($bytes),
        file_size => $id =~ /^BIG_/ ? 200 * 1024 * 1024 : length $bytes,
        id => $id }));
}

# the media upload endpoint: read the form, record what it carried, answer
# an id
sub upload {
    my ($c, $dir, $conn, $n, $method, $path, $h, $body) = @_;
    my ($boundary) = ($h->{'content-type'} // '') =~ /boundary=("?)([^";]+)\1/
        ? ($2) : ();
    my (%fields, $file);
    if (defined $boundary) {
        my $sep = "--$boundary";
        my $pos = index($$body, $sep);
        while ($pos >= 0) {
            my $start = $pos + length($sep);
            last if substr($$body, $start, 2) eq '--';
            $start += 2;                            # CRLF
            my $hend = index($$body, "\r\n\r\n", $start);
            last if $hend < 0;
            my $head = substr($$body, $start, $hend - $start);
            my $next = index($$body, "\r\n$sep", $hend + 4);
            last if $next < 0;
            my ($name) = $head =~ /name="([^"]*)"/;
            my ($fname) = $head =~ /filename="([^"]*)"/;
            my ($type) = $head =~ /Content-Type:\s*(\S+)/i;
            if (defined $fname) {
                my $data = substr($$body, $hend + 4, $next - $hend - 4);
                $file = { field => $name, filename => $fname, type => $type,
                          size => length($data), sha256 => sha256_hex($data) };
            } else {
                $fields{$name} = substr($$body, $hend + 4, $next - $hend - 4);
            }
            $pos = $next + 2;
        }
    }

    my $rec = { method => $method, path => $path, headers => $h,
                body_size => length($$body), fields => \%fields,
                file => $file, conn => $conn, n => $n, at => time };
    my $f = sprintf '%s/req-%.6f-%s-%d', $dir, time, $conn, $n;
    open my $fh, '>', "$f.tmp" or die;
    print $fh $json->encode($rec);
    close $fh;
    rename "$f.tmp", $f;

    my $fname = $file ? $file->{filename} : '';
    sleep $1 / 1000 if $fname =~ /^SLOW_(\d+)/;

    my ($status, $answer);
    if (!$file) {
        ($status, $answer) = (400, { error => { message => '(#100) file is required',
            type => 'OAuthException', code => 100, fbtrace_id => 'AmockMedia' } });
    } elsif ($fname =~ /^FAIL_(\d+)/) {
        ($status, $answer) = (400, { error => {
            message => "(#$1) upload failed", type => 'OAuthException',
            code => 0 + $1, fbtrace_id => 'AmockMedia' . $1 } });
    } else {
        ($status, $answer) = (200, { id => sprintf('%d%d%d', $$, $n, int(time * 1000)) });
    }

    my $out = $json->encode($answer);
    print $c "HTTP/1.1 $status " . ($status == 200 ? 'OK' : 'Bad Request')
           . "\r\nContent-Type: application/json\r\nContent-Length: "
           . length($out) . "\r\n\r\n$out";
    $c->flush;
}

# how many requests carried this text, this one included (a counter file
# under a lock: connections are processes)
sub count_text {
    my ($dir, $text) = @_;
    (my $f = "$dir/count-$text") =~ s/[^\w\/.-]/_/g;
    sysopen my $fh, $f, POSIX::O_CREAT() | POSIX::O_RDWR() or die "$f: $!";
    flock $fh, Fcntl::LOCK_EX();
    my $n = <$fh> // 0;
    seek $fh, 0, 0;
    truncate $fh, 0;
    print $fh $n + 1;
    close $fh;
    return $n + 1;
}

# rate mode: 1 when this message is over its number's rate (token bucket
# per phone number id, in a file under a lock)
sub over_rate {
    my ($dir, $path, $now) = @_;
    open my $cf, '<', "$dir/rate" or return 0;
    my ($rate, $burst) = split ' ', scalar <$cf>;
    close $cf;
    my ($id) = $path =~ m{/(\d+)/messages} or return 0;
    sysopen my $fh, "$dir/bucket-$id", POSIX::O_CREAT() | POSIX::O_RDWR() or die "bucket: $!";
    flock $fh, Fcntl::LOCK_EX();
    my ($tokens, $last) = split ' ', (<$fh> // '');
    ($tokens, $last) = ($burst, $now) unless defined $last;
    # requests are timed in their own processes: one read earlier may take
    # the lock later; it refills nothing and takes its token
    if ($now > $last) {
        $tokens += ($now - $last) * $rate;
        $last = $now;
    }
    $tokens = $burst if $tokens > $burst;
    my $limited = $tokens < 1 - 1e-9 ? 1 : 0;
    $tokens -= 1 unless $limited;
    seek $fh, 0, 0;
    truncate $fh, 0;
    print $fh "$tokens $last";
    close $fh;
    return $limited;
}

1;
