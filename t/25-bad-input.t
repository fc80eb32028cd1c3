#!/usr/bin/perl
# Bad input, one case per row: the answer, and nothing stored.
#
# Every refused body carries a never-seen message id, so it would have been
# stored had it been accepted. Per case, the ring's published counter must
# not move; at the end a good webhook (the sentinel) is posted and stored,
# and only then is the database searched for the refused ids: the writer
# has drained everything published before the sentinel, so "none of them"
# is not vacuous.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use Digest::MD5 qw(md5_hex);
use Digest::SHA qw(hmac_sha256_hex);
use IO::Select;
use IO::Socket::INET;
use JSON::PP;
use Test::More;
use Time::HiRes qw(sleep time);
use WaTest;
use WaPayload qw(wamid body value message encode);

my $t = WaTest->new;
$t->start_pg;
$t->migrate;

# one worker, so "other requests are served meanwhile" means the same event
# loop; a 64m ring (the default) holds the 3 MB string's record (ring/4)
$t->start_nginx(workers => 1, ring_size => '64m',
                http => 'client_body_timeout 1s;');
$t->start_writer;

my @workers = $t->worker_pids;
is(scalar @workers, 1, 'one worker');

my (@refused, @accepted);

sub sig { 'sha256=' . hmac_sha256_hex($_[0], $WaTest::SECRET) }

sub published {
    my $r = $t->http('GET', '/wa_status');
    my $j = eval { decode_json($r->{content}) } or die "wa_status: $r->{content}";
    return $j->{producers}{published};
}

sub stored {
    my (@ids) = @_;
    return $t->sql_value('SELECT count(*) FROM whatsapp_message
                           WHERE provider_message_id = ANY (?)', \@ids);
}

# a body with one text message; $text may be replaced by raw bytes below
sub one {
    my ($id, %o) = @_;
    return body(value(messages => [ message('text', id => $id,
                                             text => $o{text} // 'hello') ]));
}

# a refused case: the answer, and nothing published into the ring
sub refused {
    my ($what, $want, $ids, $send) = @_;
    my $before = published();
    my $st = $send->();
    is($st, $want, "$what: $want");
    is(published(), $before, "$what: nothing published");
    push @refused, @$ids;
}

sub post { $t->post_webhook(@_)->{status} }

sub access_log { WaTest::slurp($t->dir . '/access.log') }

# raw HTTP: the request bytes as given; (status or undef, response)
sub raw {
    my ($req, %o) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                  PeerPort => $t->port, Proto => 'tcp')
        or die "connect: $!";
    local $SIG{PIPE} = 'IGNORE';
    for (my $off = 0; $off < length $req; ) {
        my $n = syswrite($s, $req, 65536, $off);
        last unless defined $n;
        $off += $n;
    }
    my ($resp, $closed) = read_all($s, $o{timeout} // 10);
    close $s;
    my ($st) = $resp =~ m{^HTTP/1\.[01] (\d{3}) };
    return ($st, $resp, $closed);
}

# what the server sent, and whether it closed the connection in time
sub read_all {
    my ($s, $timeout) = @_;
    my ($resp, $sel, $end) = ('', IO::Select->new($s), time + $timeout);
    while (time < $end) {
        next unless $sel->can_read(0.05);
        my $n = sysread($s, my $buf, 65536);
        return ($resp, 1) unless $n;        # EOF or reset
        $resp .= $buf;
    }
    return ($resp, 0);
}

sub head {
    my ($proto, $method, %h) = @_;
    return "$method /webhook $proto\r\nHost: 127.0.0.1\r\n"
         . join('', map { "$_: $h{$_}\r\n" } sort keys %h) . "\r\n";
}

sub chunked {
    my ($body, $size) = @_;
    my $out = '';
    for (my $off = 0; $off < length $body; $off += $size) {
        my $c = substr($body, $off, $size);
        $out .= sprintf("%x\r\n%s\r\n", length $c, $c);
    }
    return $out . "0\r\n\r\n";
}

# ---- invalid JSON ------------------------------------------------------------

my $id = wamid();
my $cut = substr(one($id), 0, -2);
refused('truncated JSON', 400, [$id], sub { post($cut) });

$id = wamid();
refused('trailing garbage after the JSON', 400, [$id],
        sub { post(one($id) . ' x') });

$id = wamid();
(my $noquote = one($id)) =~ s/"hello"/hello/ or die;
refused('unquoted string', 400, [$id], sub { post($noquote) });

$id = wamid();
(my $comma = one($id)) =~ s/\}\z/,}/ or die;
refused('trailing comma', 400, [$id], sub { post($comma) });

refused('empty body', 400, [], sub { post('') });
refused('empty chunked body', 400, [], sub {
    (raw(head('HTTP/1.1', 'POST', 'Content-Type' => 'application/json',
        'X-Hub-Signature-256' => sig(''), 'Transfer-Encoding' => 'chunked',
        'Connection' => 'close') . "0\r\n\r\n"))[0] });

# ---- JSON of the wrong shape -------------------------------------------------

$id = wamid();
refused('array at the top', 400, [$id], sub { post('[' . one($id) . ']') });

$id = wamid();
(my $page = one($id)) =~ s/"whatsapp_business_account"/"page"/ or die;
refused('"object" is not a WhatsApp account', 400, [$id], sub { post($page) });

$id = wamid();
my $val = value(messages => [ message('text', id => $id) ]);
refused('entry is an object', 400, [$id], sub {
    post(encode({ object => 'whatsapp_business_account',
                  entry => { changes => [ { value => $val } ] } })) });

$id = wamid();
$val = value(messages => [ message('text', id => $id) ]);
refused('changes[] item is an array', 400, [$id], sub {
    post(encode({ object => 'whatsapp_business_account',
                  entry => [ { changes => [ [ { value => $val } ] ] } ] })) });

$id = wamid();
refused('value is a string', 400, [$id], sub {
    post(encode({ object => 'whatsapp_business_account',
                  entry => [ { changes => [ { value => "messages $id" } ] } ] })) });

$id = wamid();
refused('message without metadata.phone_number_id', 400, [$id], sub {
    post(encode({ object => 'whatsapp_business_account', entry => [ { changes => [
        { value => { messages => [ message('text', id => $id) ] } } ] } ] })) });

# ---- wrong types: a number where a string is expected -------------------------

my $num = 0 + sprintf('%d%04d', time, $$ % 10000);
refused('message id is a number', 400, [$num], sub {
    my $m = message('text');
    $m->{id} = $num;
    post(body(value(messages => [$m]))) });

$id = wamid();
refused('from is a number', 400, [$id], sub {
    my $m = message('text', id => $id);
    $m->{from} = 16505551234;
    post(body(value(messages => [$m]))) });

$id = wamid();
refused('type is a number', 400, [$id], sub {
    my $m = message('text', id => $id);
    $m->{type} = 1;
    post(body(value(messages => [$m]))) });

$id = wamid();
refused('phone_number_id is a number', 400, [$id], sub {
    my $v = value(messages => [ message('text', id => $id) ]);
    $v->{metadata}{phone_number_id} = 0 + $WaTest::PHONE_ID;
    post(body($v)) });

$id = wamid();
refused('messages is an object', 400, [$id], sub {
    my $v = value();
    $v->{messages} = { 0 => message('text', id => $id) };
    post(body($v)) });

$id = wamid();
refused('messages[] item is a string', 400, [$id], sub {
    post(body(value(messages => [ message('text'), "$id" ]))) });

$id = wamid();
refused('statuses[].id is a number, next to a good message', 400, [$id], sub {
    post(body(value(messages => [ message('text', id => $id) ],
                    statuses => [ { id => 42, status => 'read' } ]))) });

# ---- neither messages nor statuses: a valid event, stored raw (one record) --

for my $case (
    [ 'value with contacts only', body(value(contacts => [
        { profile => { name => 'Dana' }, wa_id => '16505551234' } ])) ],
    [ 'account update (no metadata)', encode({
        object => 'whatsapp_business_account', entry => [ { id => '1',
        changes => [ { field => 'account_update',
                       value => { event => 'VERIFIED_ACCOUNT' } } ] } ] }) ])
{
    my ($what, $b) = @$case;
    my $before = published();
    is(post($b), 200, "$what: 200");
    is(published(), $before + 1, "$what: one raw event record");
}

# ---- nothing in it at all: nothing to record ----------------------------------

for my $case (
    [ 'empty messages[]', body(value(messages => [])) ],
    [ 'empty entry[]', encode({ object => 'whatsapp_business_account',
                                entry => [] }) ])
{
    my ($what, $b) = @$case;
    my $before = published();
    is(post($b), 200, "$what: 200");
    is(published(), $before, "$what: no record");
}

# ---- 10k messages in one body: under the limit, so accepted, all stored -------

my @tenk = map { message('text', from => '97253' . sprintf('%07d', $_ % 100),
                         text => "m$_") } 1 .. 10_000;
my $tenk = body(value(messages => \@tenk));
ok(length($tenk) < 4 * 1024 * 1024, '10k messages in ' . length($tenk)
   . ' bytes, under wa_webhook_max_body_size');
my $before = published();
is(post($tenk), 200, '10k messages: 200');
is(published() - $before, 10_000, '10k messages: 10k records published');
push @accepted, map { $_->{id} } @tenk;

# ---- depth bomb --------------------------------------------------------------

my $bomb_id = wamid();
my $bomb = do {
    my $m = message('text', id => $bomb_id);
    $m->{x} = 'BOMB';
    my $j = body(value(messages => [$m]));
    $j =~ s/"BOMB"/('[' x 100_000) . (']' x 100_000)/e;
    $j;
};

for my $case ([ '100k [', '[' x 100_000, [] ],
              [ '100k {"a":', '{"a":' x 100_000, [] ],
              [ 'a message nesting 100k [', $bomb, [$bomb_id] ])
{
    my ($what, $b, $ids) = @$case;
    my $t0 = time;
    refused("depth bomb, $what", 400, $ids, sub { post($b) });
    ok(time - $t0 < 2, sprintf("depth bomb, $what: answered in %.3f s",
                                time - $t0));
}
is_deeply([ $t->worker_pids ], \@workers, 'depth bombs: the worker lives on');

# ---- a huge string: 3 MB of text, under the body limit, stored whole ---------

my $huge = join '', map { chr(0x41 + $_ % 26) } 1 .. 3 * 1024 * 1024;
my $huge_id = wamid();
$before = published();
is(post(one($huge_id, text => $huge)), 200, '3 MB text: 200');
is(published() - $before, 1, '3 MB text: one record');
push @accepted, $huge_id;

# ---- invalid UTF-8: refused up front, since PostgreSQL would refuse it ---------

for my $case (
    [ 'lone continuation byte', "\x80" ],
    [ 'byte 0xFF', "\xFF" ],
    [ 'overlong "/"', "\xC0\xAF" ],
    [ 'overlong 3-byte NUL', "\xE0\x80\x80" ],
    [ 'UTF-16 surrogate', "\xED\xA0\x80" ],
    [ 'over U+10FFFF', "\xF4\x90\x80\x80" ],
    [ 'truncated sequence', "\xE2\x82" ],
    [ 'Latin-1 text', "caf\xE9 ol\xE9" ])
{
    my ($what, $bytes) = @$case;
    $id = wamid();
    (my $b = one($id, text => 'PLACEHOLDER')) =~ s/PLACEHOLDER/$bytes/ or die;
    refused("invalid UTF-8, $what", 400, [$id], sub { post($b) });
}

$id = wamid();
(my $badkey = one($id)) =~ s/"text":\{/"te\xFFxt":{/ or die;
refused('invalid UTF-8 in a key', 400, [$id], sub { post($badkey) });

# the control: valid multi-byte text, raw, at every length
my $utf8_id = wamid();
my $utf8 = "\xD7\xA9\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80\xEF\xBF\xBF";
(my $ub = one($utf8_id, text => 'PLACEHOLDER')) =~ s/PLACEHOLDER/$utf8/ or die;
is(post($ub), 200, 'valid raw UTF-8 of 2, 3 and 4 bytes: 200');
push @accepted, $utf8_id;

# ---- NUL bytes and control characters --------------------------------------

$id = wamid();
(my $nul_in = one($id, text => 'PLACEHOLDER')) =~ s/PLACEHOLDER/ab\x00cd/ or die;
refused('raw NUL in a string', 400, [$id], sub { post($nul_in) });

$id = wamid();
(my $nul_out = one($id)) =~ s/,/,\x00/ or die;
refused('raw NUL between tokens', 400, [$id], sub { post($nul_out) });

$id = wamid();
refused('trailing NUL', 400, [$id], sub { post(one($id) . "\x00") });

$id = wamid();
(my $esc0 = one($id, text => 'PLACEHOLDER')) =~ s/PLACEHOLDER/ab\\u0000cd/ or die;
refused('\u0000 in a string', 400, [$id], sub { post($esc0) });

$id = wamid();
(my $esc0k = one($id)) =~ s/"body"/"bo\\u0000dy"/ or die;
refused('\u0000 in a key', 400, [$id], sub { post($esc0k) });

$id = wamid();
(my $ctl = one($id, text => 'PLACEHOLDER')) =~ s/PLACEHOLDER/tab\there/ or die;
refused('raw control character in a string', 400, [$id], sub { post($ctl) });

$id = wamid();
(my $ctl_out = one($id)) =~ s/,/,\x0B/ or die;
refused('raw vertical tab between tokens', 400, [$id], sub { post($ctl_out) });

# the control: an escaped backslash before "u0000" is text, not a NUL
my $bs_id = wamid();
my $bs_text = 'C:\\u0000 and \\\\u0000';
is(post(one($bs_id, text => $bs_text)), 200, 'escaped backslash + u0000: 200');
push @accepted, $bs_id;

# ---- duplicate keys: which one counts would be a guess -------------------------

$id = wamid();
my $id2 = wamid();
(my $dupid = one($id)) =~ s/"id":"\Q$id\E"/"id":"$id","id":"$id2"/ or die;
refused('duplicate message id', 400, [$id, $id2], sub { post($dupid) });

$id = wamid();
$id2 = wamid();
(my $dupm = body(value(messages => [ message('text', id => $id) ])))
    =~ s/"messages":(\[.*?\])/"messages":$1,"messages":[${\ encode(message('text', id => $id2)) }]/ or die;
refused('duplicate messages[] array', 400, [$id, $id2], sub { post($dupm) });

$id = wamid();
(my $dupb = one($id)) =~ s/"body":"hello"/"body":"hello","body":"bye"/ or die;
refused('duplicate text.body', 400, [$id], sub { post($dupb) });

# ---- Content-Type --------------------------------------------------------------

for my $ct ('text/plain', 'application/x-www-form-urlencoded',
            'application/jsonx', 'application/json-patch+json') {
    $id = wamid();
    refused("Content-Type $ct", 415, [$id],
            sub { post(one($id), headers => { 'Content-Type' => $ct }) });
}

my $cs_id = wamid();
is(post(one($cs_id), headers => {
    'Content-Type' => 'application/json; charset=utf-8' }), 200,
   'Content-Type application/json; charset=utf-8: 200');
push @accepted, $cs_id;

# ---- chunked bodies: valid HTTP/1.1, the same as any body ------------------------

for my $case ([ 'chunked body, 3 chunks', 1, 0 ],
              [ 'chunked body in 64 KB chunks', 5_000, 65536 ])
{
    my ($what, $n, $size) = @$case;
    my @m = map { message('text', text => 'y' x 80) } 1 .. $n;
    my $b = body(value(messages => \@m));
    $what .= ' (' . length($b) . ' bytes)' if $size;
    my ($st) = raw(head('HTTP/1.1', 'POST',
        'Content-Type' => 'application/json', 'X-Hub-Signature-256' => sig($b),
        'Transfer-Encoding' => 'chunked', 'Connection' => 'close')
        . chunked($b, $size || int(length($b) / 3) + 1));
    is($st, 200, "$what: 200");
    push @accepted, map { $_->{id} } @m;
}

$id = wamid();
refused('chunked body over the limit', 413, [$id], sub {
    my $b = one($id, text => 'z' x (5 * 1024 * 1024));
    (raw(head('HTTP/1.1', 'POST', 'Content-Type' => 'application/json',
        'X-Hub-Signature-256' => sig($b), 'Transfer-Encoding' => 'chunked',
        'Connection' => 'close') . chunked($b, 65536)))[0] });

$id = wamid();
refused('body over the limit', 413, [$id],
        sub { post(one($id, text => 'z' x (5 * 1024 * 1024))) });

# ---- HTTP/1.0 ------------------------------------------------------------------

my $h10_id = wamid();
my $h10 = one($h10_id);
my ($st, $resp, $gone) = raw(head('HTTP/1.0', 'POST',
    'Content-Type' => 'application/json', 'X-Hub-Signature-256' => sig($h10),
    'Content-Length' => length $h10) . $h10);
is($st, 200, 'HTTP/1.0 with Content-Length: 200');
ok($gone && $resp =~ /\{"ok":true\}\z/, 'HTTP/1.0: the whole answer, then closed');
push @accepted, $h10_id;

# ---- slowloris: part of the body, then nothing ---------------------------------

my (@slow, @slow_ids);
$before = published();
for (1 .. 20) {
    my $sid = wamid();
    my $b = one($sid);
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                  PeerPort => $t->port, Proto => 'tcp')
        or die "connect: $!";
    print $s head('HTTP/1.1', 'POST', 'Content-Type' => 'application/json',
                  'X-Hub-Signature-256' => sig($b),
                  'Content-Length' => length $b)
           . substr($b, 0, length($b) / 2);
    $s->flush;
    push @slow, $s;
    push @slow_ids, $sid;
}
my $t0 = time;
my $mid_id = wamid();
is(post(one($mid_id)), 200, 'slowloris: another webhook is served meanwhile');
ok(time - $t0 < 0.5, sprintf('slowloris: and at once (%.3f s)', time - $t0));
push @accepted, $mid_id;

my $closed = 0;
my $answered = 0;
for my $s (@slow) {
    my ($r, $eof) = read_all($s, 4);
    $closed++ if $eof;
    $answered++ if length $r && $r !~ m{^HTTP/1\.1 408 };
    close $s;
}
my $waited = time - $t0;
is($closed, 20, 'slowloris: all 20 stalled connections closed by nginx');
is($answered, 0, 'slowloris: none got an answer but 408');
ok($waited > 0.9 && $waited < 6,
   sprintf('slowloris: closed by client_body_timeout 1s (after %.1f s)', $waited));
ok($t->wait_for(sub { (() = access_log() =~ m{"POST /webhook HTTP/1\.1" 408 }g)
                      == 20 }, 5, '408s'), 'slowloris: 20 requests logged 408');
is(published() - $before, 1, 'slowloris: only the good webhook published');
push @refused, @slow_ids;

# ---- signatures ------------------------------------------------------------------

$id = wamid();
my $other = one(wamid());
refused('signature over a different body', 401, [$id], sub {
    $t->http('POST', '/webhook', { 'Content-Type' => 'application/json',
        'X-Hub-Signature-256' => sig($other) }, one($id))->{status} });

my $orig_id = wamid();
my $orig = one($orig_id);
is(post($orig), 200, 'a signed webhook: 200');
push @accepted, $orig_id;

$id = wamid();
(my $replay = $orig) =~ s/\Q$orig_id\E/$id/ or die;
is(length $replay, length $orig, 'the modified body is as long as the original');
refused('replayed signature, modified body', 401, [$id], sub {
    $t->http('POST', '/webhook', { 'Content-Type' => 'application/json',
        'X-Hub-Signature-256' => sig($orig) }, $replay)->{status} });

$id = wamid();
(my $upper = one($id)) =~ s/hello/HELLO/ or die;
refused('replayed signature, one letter changed', 401, [$id], sub {
    $t->http('POST', '/webhook', { 'Content-Type' => 'application/json',
        'X-Hub-Signature-256' => sig(one($id)) }, $upper)->{status} });

# ---- methods -------------------------------------------------------------------

for my $method (qw(PUT DELETE PATCH)) {
    $id = wamid();
    my $b = one($id);
    refused("$method with a signed body", 405, [$id], sub {
        $t->http($method, '/webhook', { 'Content-Type' => 'application/json',
            'X-Hub-Signature-256' => sig($b) }, $b)->{status} });
}

# ---- odd shapes where the writer reads the new columns: stored, never
# dead-lettered (the columns stay NULL or read what they can) ------------------

{
    my @odd;
    my $m = sub { my ($type, %o) = @_; my $x = message($type); $x->{$_} = $o{$_} for keys %o;
                  push @odd, $x; $x };
    $m->('text', context => 'not an object');
    $m->('text', context => { id => 42, from => [ 1 ], forwarded => 'yes',
                              frequently_forwarded => 1 });
    $m->('text', referral => [ 'ad' ]);
    $m->('location', location => { latitude => 'north', longitude => 1e300,
                                   name => { a => 1 } });
    $m->('location', location => 'here');
    $m->('image', image => [ 1, 2 ]);
    $m->('reaction', reaction => { message_id => 7, emoji => [ 'x' ] });
    $m->('interactive', interactive => { type => 'button_reply', button_reply => 'yes' });
    $m->('contacts', contacts => { name => 'not an array' });
    $m->('order', order => { product_items => 'many' });
    $m->('edit', edit => { original_message_id => 12, message => 'new text' });
    $m->('edit', edit => 'x');
    $m->('revoke', revoke => [ ]);
    $m->('system', system => { type => 'user_changed_number', wa_id => 16505550001 });
    $m->('system', system => { type => 'user_changed_user_id', user_id => { x => 1 } });
    $m->('system', system => 'x');
    $m->('unsupported', errors => 'x');
    $m->('brand_new_type');
    my $b = body(value(contacts => [ 'a string', 42,
                                     { profile => 'x', wa_id => 16505551234,
                                       user_id => [ 1 ], parent_user_id => {},
                                       country_code => 1 } ],
                       messages => \@odd));
    is(post($b), 200, 'odd shapes in the fields read by the writer: 200');
    push @accepted, map { $_->{id} } @odd;

    # one contact of odd shapes: the sender's, so it reaches the writer
    my $cid = wamid();
    is(post(body(value(contacts => [ { profile => 'x', wa_id => 16505551234,
                                       user_id => [ 1 ], parent_user_id => {},
                                       country_code => 1 } ],
                       messages => [ message('text', id => $cid) ]))), 200,
       'a contact of odd shapes: 200');
    push @accepted, $cid;
    our $deep_id;
    my @deep = (message('location'), message('edit'));
    $deep[0]{location} = { latitude => 'BIG', longitude => 'TINY' };
    $deep[1]{edit} = { original_message_id => 'x', message =>
                       { type => 'edit', edit => { message => { type => 'edit' } } } };
    (my $db = body(value(messages => \@deep))) =~ s/"BIG"/1e300/;
    $db =~ s/"TINY"/-1e-400/;
    is(post($db), 200, 'coordinates out of range, an edit of an edit: 200');
    $deep_id = $deep[0]{id};
    push @accepted, map { $_->{id} } @deep;

    # and receipts of odd shapes for a message stored since
    my $sid = wamid();
    is(post(body(value(message_echoes => [ { from => '15550783881', to => '16505551234',
                                             id => $sid, type => 'text',
                                             text => { body => 'x' } } ]))), 200,
       'an outbound row for odd receipts');
    is(post(body(value(statuses => [
        { id => $sid, status => 'sent', pricing => 'x', conversation => [ 1 ],
          biz_opaque_callback_data => 5 },
        { id => $sid, status => 'delivered', pricing => { billable => 'yes' },
          conversation => { id => 1, expiration_timestamp => 'soon', origin => 'x' },
          recipient_type => 'group', recipient_participant_id => 16505551111 },
        { id => $sid, status => 'failed', errors => { code => 1 } } ]))), 200,
       'receipts of odd shapes: 200');
    push @accepted, $sid;
}

# ---- the sentinel, then the verdict -------------------------------------------

my $sentinel = wamid();
is(post(one($sentinel)), 200, 'sentinel: 200');
ok($t->wait_for(sub { stored($sentinel) == 1 }, 60, 'sentinel'),
   'sentinel stored: the writer drained everything before it');

is(stored(@accepted), scalar @accepted,
   'every accepted message stored (' . scalar(@accepted) . ')');
is(stored(@refused), 0,
   'none of the ' . scalar(@refused) . ' refused messages stored');
is($t->sql_value('SELECT count(*) FROM wa_dead_letter'), 0,
   'no dead letter: nothing acknowledged that PostgreSQL refused');

my $row = $t->sql('SELECT length(body) AS len, md5(body) AS md5
                     FROM whatsapp_message WHERE provider_message_id = ?',
                  $huge_id)->[0];
is($row->{len}, length $huge, '3 MB text stored whole');
is($row->{md5}, md5_hex($huge), '3 MB text stored byte for byte');

my $u = $t->sql_value('SELECT body FROM whatsapp_message
                        WHERE provider_message_id = ?', $utf8_id);
utf8::encode($u) if utf8::is_utf8($u);
is($u, $utf8, 'raw UTF-8 stored byte for byte');
is($t->sql_value('SELECT body FROM whatsapp_message
                   WHERE provider_message_id = ?', $bs_id), $bs_text,
   'escaped backslash + u0000 stored as text');

is_deeply($t->dbh->selectrow_arrayref('SELECT latitude, longitude FROM whatsapp_message
                                        WHERE provider_message_id = ?', undef, $main::deep_id),
          [ undef, 0 ], 'a coordinate out of range is not a coordinate');

is_deeply([ $t->worker_pids ], \@workers, 'the same worker throughout');
unlike($t->error_log, qr/signal \d+|exited on/, 'no worker crashed');
like($t->error_log, qr/\[error\].*body refused: invalid UTF-8 at byte \d+/,
     'a signed body refused is logged at nginx\'s default level, error');

done_testing();
