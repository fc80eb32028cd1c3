#!/usr/bin/perl
# Webhook ingestion end to end: nginx -> ring -> wa-writer -> PostgreSQL.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use WaTest;
use WaPayload qw(wamid body value message status encode);

my $t = WaTest->new;
$t->start_pg;
$t->migrate;
$t->start_nginx(ring_size => '16m');
$t->start_writer;

my $pnid = $WaTest::PHONE_ID;

sub rows_for {
    my (@ids) = @_;
    return $t->sql('SELECT m.*, l.phone AS lead_phone, l.business_id AS lead_business
                      FROM whatsapp_message m LEFT JOIN leads l ON l.id = m.lead_id
                     WHERE m.provider_message_id = ANY (?) ORDER BY m.id', \@ids);
}

sub wait_rows {
    my ($n, @ids) = @_;
    $t->wait_for(sub { @{ rows_for(@ids) } >= $n }, 15, "$n rows");
    return rows_for(@ids);
}

# ---- GET verification ------------------------------------------------------

my $r = $t->http('GET', "/webhook?hub.mode=subscribe&hub.verify_token=$WaTest::VERIFY&hub.challenge=1158201444");
is($r->{status}, 200, 'verification with the right token: 200');
is($r->{content}, '1158201444', 'challenge echoed');

$r = $t->http('GET', '/webhook?hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1');
is($r->{status}, 403, 'wrong verify token: 403');

$r = $t->http('GET', '/webhook?hub.mode=subscribe&hub.challenge=1');
is($r->{status}, 400, 'missing verify token: 400');

$r = $t->http('DELETE', '/webhook');
is($r->{status}, 405, 'other methods: 405');

# ---- every message type ----------------------------------------------------

my @types = qw(text image audio video document sticker location contacts
               interactive list_reply button reaction order system unsupported);
my (@msgs, %want_type);
for my $type (@types) {
    my $m = message($type, from => '972501234567');
    push @msgs, $m;
    $want_type{ $m->{id} } = $m->{type};
}

my $body = body(value(
    contacts => [ { profile => { name => 'Dana' }, wa_id => '972501234567' } ],
    messages => \@msgs));
$r = $t->post_webhook($body);
is($r->{status}, 200, 'every message type in one body: 200');

my @ids = map { $_->{id} } @msgs;
my $rows = wait_rows(scalar @ids, @ids);
is(scalar @$rows, scalar @ids, 'one row per message of every type');

my %lead = map { $_->{lead_id} // 'NULL' => 1 } @$rows;
is_deeply([ keys %lead ], [ $rows->[0]{lead_id} ], 'all rows share one lead');
ok(defined $rows->[0]{lead_id}, 'lead_id is set');
# the system message among them is a number change: the sender's lead
# moved to the new number and keeps the old one (t/23 tests it in depth)
is($rows->[0]{lead_phone}, '16505550000', 'the lead is the sender, moved to its new number');
is($t->sql_value('SELECT count(*) FROM leads WHERE business_id = 1 AND phone IN (?, ?)',
                 '972501234567', '16505550000'), 1, 'lead created once');
is($t->sql_value("SELECT lead_id FROM wa_lead_former_id WHERE kind = 'phone' AND value = ?",
                 '972501234567'), $rows->[0]{lead_id}, 'its old number kept');
is($t->sql_value('SELECT name FROM leads WHERE id = ?', $rows->[0]{lead_id}),
   'Dana', 'lead named from contacts[]');

my $bad = 0;
for my $row (@$rows) {
    $bad++ unless $row->{direction} eq 'in' && $row->{status} eq 'received'
                  && $row->{business_id} == 1 && $row->{phone_number_id} eq $pnid
                  && $row->{type} eq $want_type{ $row->{provider_message_id} }
                  && $row->{payload} =~ /\Q$row->{provider_message_id}\E/;
}
is($bad, 0, 'direction, status, business, type and raw payload on every row');

my %body = map { $_->{type} => $_->{body} } @$rows;
is($body{text}, 'Does it come in another color?', 'text body');
is($body{image}, '[image] a photo', 'image caption as body');
is($body{button}, 'Stop promotions', 'button text as body');

# ---- several entries and changes: all of them ------------------------------

my (@multi, @values_per_entry);
for my $e (1 .. 3) {
    my @values;
    for my $c (1 .. 2) {
        my @m = map { message('text', from => "97250000${e}${c}${_}", text => "e$e c$c m$_") } 1 .. 3;
        push @multi, @m;
        push @values, value(messages => \@m, statuses => [ status('delivered') ]);
    }
    push @values_per_entry, \@values;
}
$r = $t->post_webhook(body(@values_per_entry));
is($r->{status}, 200, '3 entries x 2 changes x 3 messages: 200');
my @mids = map { $_->{id} } @multi;
$rows = wait_rows(scalar @mids, @mids);
is(scalar @$rows, 18, 'all 18 messages stored, not just the first');
is(scalar(grep { !defined $_->{lead_id} } @$rows), 0, 'every one with a lead');

# ---- retried webhook is stored once ----------------------------------------

my $dup = message('text', from => '972509999999');
my $dbody = body(value(messages => [$dup]));
is($t->post_webhook($dbody)->{status}, 200, 'first delivery');
is($t->post_webhook($dbody)->{status}, 200, 'retried delivery');
wait_rows(1, $dup->{id});
sleep 0.5;
is(scalar @{ rows_for($dup->{id}) }, 1, 'retried webhook stored once');

# ---- unknown phone number id: default business -----------------------------

my $unk = message('text', from => '972508888888');
$r = $t->post_webhook(body(value(phone_number_id => '999000999', messages => [$unk])));
is($r->{status}, 200, 'unknown phone_number_id accepted');
$rows = wait_rows(1, $unk->{id});
is($rows->[0]{business_id}, 99, 'recorded under wa_default_business');
like($t->error_log, qr/unknown phone_number_id/, 'and logged');

# ---- bytes survive: Hebrew, quotes, backslashes, control characters --------

my $text = "\x{05E9}\x{05DC}\x{05D5}\x{05DD} \"quoted\" back\\slash \x{1F600} tab\tnl\n\x01\x1f end";
my $heb = message('text', from => '972507777777', text => $text);
$r = $t->post_webhook(body(value(messages => [$heb])));
is($r->{status}, 200, 'non-ASCII body accepted');
$rows = wait_rows(1, $heb->{id});
my $stored = $rows->[0]{body};
utf8::decode($stored);
is($stored, $text, 'body stored character for character');

# ---- refused bodies record nothing ------------------------------------------

my $before = $t->sql_value('SELECT count(*) FROM whatsapp_message');
my $sig_m = message('text');
my $sig_body = body(value(messages => [$sig_m]));

is($t->post_webhook($sig_body, secret => 'wrong-secret')->{status}, 401, 'bad signature: 401');
is($t->post_webhook($sig_body, secret => undef)->{status}, 401, 'missing signature: 401');
(my $tampered = $sig_body) =~ s/another color/ANOTHER color/;
is($t->http('POST', '/webhook', { 'Content-Type' => 'application/json',
    'X-Hub-Signature-256' => 'sha256=' . Digest::SHA::hmac_sha256_hex($sig_body, $WaTest::SECRET) },
    $tampered)->{status}, 401, 'signature of another body: 401');
is($t->post_webhook('{"hello":"world"}')->{status}, 400, 'JSON but not a Cloud API event: 400');
is($t->post_webhook('not json at all')->{status}, 400, 'not JSON: 400');
my $half = encode({ object => 'whatsapp_business_account', entry => [ { changes => [ { value => value(
    messages => [ message('text'), { type => 'text', from => '1' } ]) } ] } ] });
is($t->post_webhook($half)->{status}, 400, 'one malformed message: 400 for the body');
is($t->post_webhook($sig_body, headers => { 'Content-Type' => 'text/plain' })->{status}, 415,
   'wrong Content-Type: 415');
is($t->post_webhook('{"object":"whatsapp_business_account","entry":[],"pad":"' . ('x' x (5 * 1024 * 1024)) . '"}')->{status},
   413, 'body over the limit: 413');

# Meta's largest: 1000 updates, about 3 MB
my @bigm = map { message('text', from => '97254' . sprintf('%07d', $_), text => 'x' x 2800) } 1 .. 1000;
my $big = body(value(messages => \@bigm));
ok(length($big) > 2_900_000, 'a 1000-message body of ' . length($big) . ' bytes');
is($t->post_webhook($big)->{status}, 200, 'accepted');
$rows = wait_rows(1000, map { $_->{id} } @bigm);
is(scalar @$rows, 1000, 'all 1000 messages stored');
is(scalar(grep { !defined $_->{lead_id} } @$rows), 0, '1000 leads resolved');

sleep 0.5;
my @refused = ($sig_m->{id});
is(scalar @{ rows_for(@refused) }, 0, 'nothing recorded from refused bodies');
like($t->error_log, qr/does not match the body/, 'bad signature logged');
unlike($t->error_log . $t->writer_log, qr/\Q$WaTest::SECRET\E|\Q$WaTest::TOKEN\E/,
       'no secret or token in any log');

done_testing();
