#!/usr/bin/perl
# What messages, statuses and leads keep beyond the raw payload: a readable
# body and first-class columns for every message type, the pricing,
# conversation, callback data, every error and the group participant of
# receipts, the sender's contacts[] entry, number and user id changes that
# move the lead, edits and revokes applied to their original (also when
# they come first). Bodies shaped after Meta's webhook reference; each
# checked column by column in the database, through the set path (a run of
# 16 or more) and record by record, and redelivered without a change.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Time::HiRes qw(time sleep);
use JSON::PP;
use WaTest;
use WaPayload qw(wamid body value encode echo);

my $t = WaTest->new;
$t->start_pg;
$t->migrate;
$t->start_nginx;
$t->start_writer;

my $json = JSON::PP->new->utf8->canonical;
my $now = int time;
my $seq = 0;
my $base = 9725020 . sprintf('%05d', $$ % 100000);    # phones of this run

sub phone { return $base . sprintf('%02d', shift) }

sub post {
    my ($body, $what) = @_;
    my $r = $t->post_webhook($body);
    is($r->{status}, 200, "$what: 200");
    ok($t->wait_drained(20), "$what: stored");
}

sub row {
    my ($wamid) = @_;
    return $t->sql('SELECT * FROM whatsapp_message WHERE provider_message_id = ?',
                   $wamid)->[0] // {};
}

sub lead_of {
    my ($wamid) = @_;
    return $t->sql('SELECT l.* FROM whatsapp_message m JOIN leads l ON l.id = m.lead_id
                     WHERE m.provider_message_id = ?', $wamid)->[0] // {};
}

# the columns of a row, compared to what is expected of them (undef: NULL)
sub columns_are {
    my ($wamid, $want, $what) = @_;
    my $row = row($wamid);
    my %got = map { $_ => $row->{$_} } keys %$want;
    for (keys %got) {
        $got{$_} = 0 + $got{$_} if defined $got{$_} && $_ =~ /^(latitude|longitude)$/;
    }
    is_deeply(\%got, $want, $what) or diag(explain(\%got));
}

# a whole table, to check a redelivery changed nothing
sub snapshot {
    return $json->encode([
        $t->sql('SELECT * FROM whatsapp_message ORDER BY id'),
        $t->sql('SELECT * FROM leads ORDER BY id'),
        $t->sql('SELECT * FROM wa_lead_former_id ORDER BY id'),
        $t->sql('SELECT * FROM wa_group_receipt ORDER BY id'),
        $t->sql('SELECT count(*) FROM wa_pending_receipt'),
        $t->sql('SELECT count(*) FROM wa_dead_letter') ]);
}

# ---- every message type, as Meta's reference shows it -----------------------

my $sha = 'Ifw8PEyZk4cZJpiCEFiz1Kc3vDyuV6Gy3B2Y2oA9Z8E=';

# [name, message object without from/id/timestamp, expected columns]
sub cases {
    my ($tag) = @_;
    my $ctx = "wamid.ctx.$tag";
    my $target = "wamid.target.$tag";
    return (
        [ 'text reply, forwarded',
          { type => 'text', text => { body => 'Is it in stock?' },
            context => { from => '15550783881', id => $ctx,
                         forwarded => JSON::PP::true,
                         frequently_forwarded => JSON::PP::false } },
          { body => 'Is it in stock?', context_message_id => $ctx,
            context_from => '15550783881', forwarded => 1,
            frequently_forwarded => 0 } ],
        [ 'text from an ad (referral)',
          { type => 'text', text => { body => 'Hi, I saw your ad' },
            referral => { source_url => 'https://fb.me/3cr4Wqqkv',
                          source_id => '120226305854810726',
                          source_type => 'ad', headline => 'Spring sale',
                          body => 'Get 20% off', media_type => 'image',
                          image_url => 'https://scontent.xx.fbcdn.net/x.jpg',
                          ctwa_clid => "ARAkLkA8rmlFeiCktEJQ-QTwRiyYHAFDLMNDBH0CD3qpjd0HR4irJ6LEkR7JwFF4XvnO2E4Nx0-eM-ZABMqIvexZbb$tag" } },
          { body => 'Hi, I saw your ad',
            referral_source_url => 'https://fb.me/3cr4Wqqkv',
            referral_source_id => '120226305854810726',
            referral_source_type => 'ad',
            referral_ctwa_clid => "ARAkLkA8rmlFeiCktEJQ-QTwRiyYHAFDLMNDBH0CD3qpjd0HR4irJ6LEkR7JwFF4XvnO2E4Nx0-eM-ZABMqIvexZbb$tag",
            context_message_id => undef } ],
        [ 'image without caption',
          { type => 'image', image => { mime_type => 'image/jpeg', sha256 => $sha,
                                        id => "1003383421387256$tag" } },
          { body => '[image]', media_id => "1003383421387256$tag",
            media_mime_type => 'image/jpeg', media_sha256 => $sha,
            media_filename => undef } ],
        [ 'image with caption',
          { type => 'image', image => { caption => 'Our new storefront',
                                        mime_type => 'image/jpeg', sha256 => $sha,
                                        id => "1003383421387257$tag" } },
          { body => '[image] Our new storefront', media_id => "1003383421387257$tag" } ],
        [ 'document',
          { type => 'document', document => { filename => 'invoice-1234.pdf',
                                              mime_type => 'application/pdf',
                                              sha256 => $sha, id => "2003$tag" } },
          { body => '[document] invoice-1234.pdf', media_id => "2003$tag",
            media_mime_type => 'application/pdf', media_filename => 'invoice-1234.pdf' } ],
        [ 'voice note',
          { type => 'audio', audio => { mime_type => 'audio/ogg; codecs=opus',
                                        sha256 => $sha, id => "2004$tag",
                                        voice => JSON::PP::true } },
          { body => '[voice]', media_id => "2004$tag",
            media_mime_type => 'audio/ogg; codecs=opus' } ],
        [ 'video',
          { type => 'video', video => { mime_type => 'video/mp4', sha256 => $sha,
                                        id => "2005$tag", caption => 'Unboxing' } },
          { body => '[video] Unboxing', media_id => "2005$tag",
            media_mime_type => 'video/mp4' } ],
        [ 'sticker',
          { type => 'sticker', sticker => { mime_type => 'image/webp', sha256 => $sha,
                                            id => "2006$tag", animated => JSON::PP::false } },
          { body => '[sticker]', media_id => "2006$tag", media_mime_type => 'image/webp' } ],
        [ 'location',
          { type => 'location', location => { latitude => 37.483307,
                                              longitude => -122.148981,
                                              name => 'Pablo Morales',
                                              address => '1 Hacker Way, Menlo Park, CA 94025',
                                              url => 'https://www.facebook.com' } },
          { body => 'Pablo Morales, 1 Hacker Way, Menlo Park, CA 94025',
            latitude => 37.483307, longitude => -122.148981,
            location_name => 'Pablo Morales',
            location_address => '1 Hacker Way, Menlo Park, CA 94025' } ],
        [ 'location pin without a name',
          { type => 'location', location => { latitude => 32.0853, longitude => 34.7818 } },
          { body => '[location] 32.0853, 34.7818', latitude => 32.0853,
            longitude => 34.7818, location_name => undef } ],
        [ 'contacts',
          { type => 'contacts', contacts => [
              { name => { formatted_name => 'Barbara J. Johnson', first_name => 'Barbara' },
                phones => [ { phone => '+1 (940) 555-1234', type => 'HOME',
                              wa_id => '19405551234' } ] },
              { name => { formatted_name => 'Pablo Morales' } } ] },
          { body => '[contacts] Barbara J. Johnson, Pablo Morales' } ],
        [ 'reaction',
          { type => 'reaction', reaction => { message_id => $target,
                                              emoji => "\x{1F44D}" } },
          { body => "Reacted \x{1F44D}", reaction_message_id => $target,
            reaction_emoji => "\x{1F44D}" } ],
        [ 'reaction removed',
          { type => 'reaction', reaction => { message_id => $target } },
          { body => 'Removed a reaction', reaction_message_id => $target,
            reaction_emoji => undef } ],
        [ 'reply button',
          { type => 'interactive', context => { from => '15550783881', id => $ctx },
            interactive => { type => 'button_reply',
                             button_reply => { id => 'confirm-yes', title => 'Yes' } } },
          { body => 'Yes', reply_type => 'button_reply', reply_id => 'confirm-yes',
            reply_title => 'Yes', context_message_id => $ctx } ],
        [ 'list reply',
          { type => 'interactive',
            interactive => { type => 'list_reply',
                             list_reply => { id => 'priority_express',
                                             title => 'Express Shipping',
                                             description => 'Next Day to 2 Days' } } },
          { body => 'Express Shipping', reply_type => 'list_reply',
            reply_id => 'priority_express', reply_title => 'Express Shipping' } ],
        [ 'flow reply',
          { type => 'interactive',
            interactive => { type => 'nfm_reply',
                             nfm_reply => { name => 'flow', body => 'Sent',
                                            response_json => '{"flow_token":"ft-1"}' } } },
          { body => 'Sent', reply_type => 'nfm_reply', reply_id => 'flow',
            reply_title => 'Sent' } ],
        [ 'template quick reply button',
          { type => 'button', context => { from => '15550783881', id => $ctx },
            button => { payload => 'UNSUBSCRIBE_PROMOS', text => 'Stop promotions' } },
          { body => 'Stop promotions', button_payload => 'UNSUBSCRIBE_PROMOS',
            context_message_id => $ctx } ],
        [ 'order',
          { type => 'order', order => { catalog_id => '194836987003835',
                                        text => 'Please deliver today',
                                        product_items => [
              { product_retailer_id => 'di9ozbzfi4', quantity => 2,
                item_price => 30, currency => 'USD' },
              { product_retailer_id => 'nqryix03ez', quantity => 1,
                item_price => 25, currency => 'USD' } ] } },
          { body => '[order] 2 item(s): Please deliver today' } ],
        [ 'unsupported',
          { type => 'unsupported', errors => [
              { code => 131051, title => 'Message type unknown',
                message => 'Message type unknown',
                error_data => { details => 'Message type is currently not supported.' } } ] },
          { body => '[unsupported] Message type is currently not supported.' } ],
        [ 'request_welcome',
          { type => 'request_welcome' },
          { body => '[request_welcome]' } ],
    );
}

# the sender's contacts[] entry as Meta sends it once usernames are on: a
# wa_id that is not the number the message says it is from, a
# business-scoped user id, its parent, a username
sub contact_of {
    my ($phone, $tag) = @_;
    return { profile => { name => 'Sheena Nelson', username => "sheena.$tag" },
             wa_id => "1$phone", user_id => "US.1349120865530$tag",
             parent_user_id => "US.ENT.1181579921288$tag" };
}

my %want;          # wamid => [what, expected columns]

# one body of 20 messages: the writer stores them as one run (set path)
my $tag_set = sprintf '%d%d', $$, 1;
my $from_set = phone(1);
my @msgs;
for my $c (cases($tag_set)) {
    my $m = { from => $from_set, id => wamid(), timestamp => '' . ($now - 100 + ++$seq),
              %{ $c->[1] } };
    push @msgs, $m;
    $want{ $m->{id} } = [ "set path: $c->[0]", $c->[2] ];
}
cmp_ok(scalar @msgs, '>=', 16, 'a run long enough for the set path');
my $body_set = body(value(contacts => [ contact_of($from_set, $tag_set) ],
                          messages => \@msgs));
post($body_set, 'every message type in one body');

# the same, one message per body: record by record
my $tag_one = sprintf '%d%d', $$, 2;
my $from_one = phone(2);
my @bodies_one;
for my $c (cases($tag_one)) {
    my $m = { from => $from_one, id => wamid(), timestamp => '' . ($now - 100 + ++$seq),
              %{ $c->[1] } };
    $want{ $m->{id} } = [ "record by record: $c->[0]", $c->[2] ];
    push @bodies_one, body(value(contacts => [ contact_of($from_one, $tag_one) ],
                                 messages => [ $m ]));
}
for my $b (@bodies_one) {
    is($t->post_webhook($b)->{status}, 200, 'one message a body: 200');
    $t->wait_drained(20);
}

for my $id (sort keys %want) {
    columns_are($id, $want{$id}[1], $want{$id}[0]);
}

is($t->sql_value("SELECT count(*) FROM whatsapp_message
                   WHERE provider_message_id = ANY (?) AND body IS NULL", [ keys %want ]),
   0, 'no message of any type without a body');

# the contacts[] entry, on the message and on the lead
for my $p ([ $from_set, $tag_set, $msgs[0]{id} ], [ $from_one, $tag_one, (grep { $want{$_}[0] =~ /record by record: text reply/ } keys %want)[0] ]) {
    my ($phone, $tag, $id) = @$p;
    my $row = row($id);
    is($row->{contact_wa_id}, "1$phone", "contact: the wa_id that differs from 'from' ($tag)");
    is_deeply($json->decode($row->{contact}), contact_of($phone, $tag),
              'contact: the whole entry kept on the message');
    my $lead = lead_of($id);
    is_deeply([ @$lead{qw(phone wa_user_id name wa_profile_name wa_username
                          wa_parent_user_id wa_country_code)} ],
              [ $phone, "US.1349120865530$tag", 'Sheena Nelson', 'Sheena Nelson',
                "sheena.$tag", "US.ENT.1181579921288$tag", 'US' ],
              'contact: user id, profile name, username, parent user id, country on the lead');
}

# ---- redelivery: nothing new, nothing changed -------------------------------

my $before = snapshot();
post($body_set, 'the run redelivered');
$t->post_webhook($_) for @bodies_one;
$t->wait_drained(20);
is(snapshot(), $before, 'redelivery stores and changes nothing');

# ---- the profile name is not the CRM's name ---------------------------------

my $lead1 = lead_of($msgs[0]{id});
$t->dbh->do("UPDATE leads SET name = 'Sheena (VIP)' WHERE id = ?", undef, $lead1->{id});
my $m = { from => $from_set, id => wamid(), timestamp => "$now", type => 'text',
          text => { body => 'new name' } };
my $c = contact_of($from_set, $tag_set);
$c->{profile}{name} = 'Sheena N.';
$c->{profile}{username} = "sheena.n.$tag_set";
post(body(value(contacts => [ $c ], messages => [ $m ])), 'a new profile name and username');
my $l = lead_of($m->{id});
is_deeply([ @$l{qw(id name wa_profile_name wa_username)} ],
          [ $lead1->{id}, 'Sheena (VIP)', 'Sheena N.', "sheena.n.$tag_set" ],
          "the profile name and username follow WhatsApp; the CRM's name stays");

# ---- statuses: pricing, conversation, callback data, errors, groups --------

# outbound rows to receive receipts: message echoes of the Business app
my @out = map { echo(to => phone(3), id => wamid(), text => "out $_") } 1 .. 20;
post(body(value(message_echoes => \@out)), 'outbound rows');
is($t->sql_value("SELECT count(*) FROM whatsapp_message WHERE provider_message_id = ANY (?)
                   AND direction = 'out'", [ map { $_->{id} } @out ]), 20, 'outbound rows stored');

sub st {
    my ($id, $st, %o) = @_;
    my $s = { id => $id, status => $st, timestamp => '' . ($o{ts} // $now),
              recipient_id => $o{to} // phone(3) };
    unless ($o{bare}) {
        $s->{conversation} = { id => "CONV-$id", expiration_timestamp => '' . ($now + 86400),
                               origin => { type => 'marketing' } };
        $s->{pricing} = { billable => JSON::PP::true, pricing_model => 'PMP',
                          category => 'marketing', type => 'regular' };
        $s->{biz_opaque_callback_data} = "cb-$id";
    }
    $s->{$_} = $o{$_} for grep { exists $o{$_} } qw(errors recipient_type recipient_participant_id);
    return $s;
}

my $pricing = sub {
    my ($id) = @_;
    return { status => 'delivered', pricing_billable => 1, pricing_model => 'PMP',
             pricing_category => 'marketing', pricing_type => 'regular',
             conversation_id => "CONV-$id", conversation_origin => 'marketing',
             callback_data => "cb-$id", errors => undef, failed_at => undef };
};

# a run of 40 receipts (sent then delivered of 20 messages): the set path
my @sts = ((map { st($_->{id}, 'sent', ts => $now - 50) } @out[0 .. 17]),
           (map { st($_->{id}, 'delivered', ts => $now - 40) } @out[0 .. 17]));
post(body(value(statuses => \@sts)), '36 receipts in one body');
for my $o (@out[0 .. 17]) {
    columns_are($o->{id}, $pricing->($o->{id}), "set path: pricing, conversation, callback data ($o->{text})");
}
is($t->sql_value("SELECT count(*) FROM whatsapp_message WHERE provider_message_id = ANY (?)
                   AND conversation_expires_at = to_timestamp(?)",
                 [ map { $_->{id} } @out[0 .. 17] ], $now + 86400), 18,
   'conversation expiry kept');

# a failure with two errors, each whole, and the time it failed
my @errors = (
    { code => 131050, title => 'Unable to deliver the message. This recipient has chosen to stop receiving marketing messages on WhatsApp from your business',
      message => 'Unable to deliver the message. This recipient has chosen to stop receiving marketing messages on WhatsApp from your business',
      error_data => { details => 'The user opted out of marketing messages.' },
      href => 'https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/' },
    { code => 131049, title => 'This message was not delivered to maintain healthy ecosystem engagement.',
      message => 'This message was not delivered to maintain healthy ecosystem engagement.',
      error_data => { details => 'In order to maintain a healthy ecosystem engagement, the message failed to be delivered.' },
      href => 'https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/' });
my $fid = $out[18]{id};
post(body(value(statuses => [ st($fid, 'failed', ts => $now - 30, bare => 1, errors => \@errors) ])),
     'a failed status with two errors');
my $frow = row($fid);
is_deeply([ $frow->{status}, $frow->{error_code}, $frow->{error_title} ],
          [ 'failed', 131050, $errors[0]{title} ], 'failed: the first error in error_code and title');
is_deeply($json->decode($frow->{errors} // 'null'), \@errors, 'failed: every error kept whole, href included');
is($t->sql_value('SELECT extract(epoch FROM failed_at)::bigint FROM whatsapp_message
                   WHERE provider_message_id = ?', $fid), $now - 30, 'failed: the time it failed');
my $fsnap = snapshot();
post(body(value(statuses => [ st($fid, 'failed', ts => $now - 30, bare => 1, errors => \@errors) ])),
     'the failure redelivered');
post(body(value(statuses => [ st($fid, 'failed', ts => $now - 20, bare => 1, errors => [ $errors[1] ]) ])),
     'a second failure');
is(snapshot() =~ s/"updated_at":"[^"]*"//gr, $fsnap =~ s/"updated_at":"[^"]*"//gr,
   'failed: a redelivered or later failure changes nothing (the first is kept)');

# a message sent to a group: receipts per participant
my $gid = $out[19]{id};
my @g = (st($gid, 'delivered', to => '120363040234567890', ts => $now - 10,
            recipient_type => 'group', recipient_participant_id => '16505551111'),
         st($gid, 'delivered', to => '120363040234567890', ts => $now - 9,
            recipient_type => 'group', recipient_participant_id => '16505552222'),
         st($gid, 'read', to => '120363040234567890', ts => $now - 8,
            recipient_type => 'group', recipient_participant_id => '16505551111'));
post(body(value(statuses => \@g)), 'group receipts');
post(body(value(statuses => \@g)), 'group receipts redelivered');
is_deeply($t->dbh->selectall_arrayref(
              'SELECT participant_id, status, recipient_id, extract(epoch FROM provider_ts)::bigint
                 FROM wa_group_receipt WHERE provider_message_id = ? ORDER BY 1, 2', undef, $gid),
          [ [ '16505551111', 'delivered', '120363040234567890', $now - 10 ],
            [ '16505551111', 'read', '120363040234567890', $now - 8 ],
            [ '16505552222', 'delivered', '120363040234567890', $now - 9 ] ],
          'group: one receipt per participant and status, once');
columns_are($gid, { recipient_type => 'group', status => 'read' }, 'group: the message keeps its recipient type');

# a receipt parked before its message: its pricing applies on arrival
my $late = echo(to => phone(3), id => wamid(), text => 'late');
post(body(value(statuses => [ st($late->{id}, 'delivered', ts => $now - 5) ])), 'a receipt before its message');
is($t->sql_value('SELECT count(*) FROM wa_pending_receipt WHERE provider_message_id = ?', $late->{id}),
   1, 'parked');
post(body(value(message_echoes => [ $late ])), 'its message');
columns_are($late->{id}, $pricing->($late->{id}), 'the parked receipt applied whole on arrival');

# ---- a number change moves the lead -----------------------------------------

my ($old, $new, $other) = (phone(10), phone(11), phone(12));
my $first = { from => $old, id => wamid(), timestamp => '' . ($now - 60), type => 'text',
              text => { body => 'before' } };
post(body(value(contacts => [ { profile => { name => 'Ann' }, wa_id => $old } ],
                messages => [ $first ])), 'a message from the old number');
my $ann = lead_of($first->{id})->{id};
my $sys = { from => $old, id => wamid(), timestamp => '' . ($now - 50), type => 'system',
            system => { body => "User Ann changed from $old to $new", wa_id => $new,
                        type => 'user_changed_number' } };
post(body(value(messages => [ $sys ])), 'user_changed_number');
is_deeply([ @{ lead_of($sys->{id}) }{qw(id phone)} ], [ $ann, $new ],
          'the lead moved to the new number');
is_deeply($t->dbh->selectall_arrayref("SELECT kind, value, new_value, extract(epoch FROM changed_at)::bigint
                                         FROM wa_lead_former_id WHERE lead_id = ?", undef, $ann),
          [ [ 'phone', $old, $new, $now - 50 ] ], 'and keeps the old one');
columns_are($sys->{id}, { body => "User Ann changed from $old to $new", type => 'system' },
            'the system message is a row with its body');

# then a run of 20 from the new number, one late from the old, one from
# someone else: the set path finds the same lead for both numbers
my @after = map { { from => $new, id => wamid(), timestamp => '' . ($now - 40 + $_),
                    type => 'text', text => { body => "after $_" } } } 1 .. 20;
my $stale = { from => $old, id => wamid(), timestamp => '' . ($now - 55), type => 'text',
              text => { body => 'late from the old number' } };
my $x = { from => $other, id => wamid(), timestamp => "$now", type => 'text',
          text => { body => 'someone else' } };
post(body(value(contacts => [ { profile => { name => 'Ann' }, wa_id => $new } ],
                messages => [ @after, $stale, $x ])), 'messages from the new number');
is($t->sql_value('SELECT count(DISTINCT lead_id) FROM whatsapp_message WHERE provider_message_id = ANY (?)',
                 [ map { $_->{id} } @after, $stale ]), 1, 'the new number and the old one: one lead');
is(lead_of($after[0]{id})->{id}, $ann, 'the same lead as before the change');
is($t->sql_value('SELECT count(*) FROM leads WHERE phone IN (?, ?)', $old, $new), 1,
   'no second lead for either number');
isnt(lead_of($x->{id})->{id}, $ann, 'another number still gets its own lead');

# record by record too
my ($old2, $new2) = (phone(20), phone(21));
my $f2 = { from => $old2, id => wamid(), timestamp => '' . ($now - 60), type => 'text', text => { body => 'x' } };
my $s2 = { from => $old2, id => wamid(), timestamp => '' . ($now - 50), type => 'system',
           system => { body => 'changed', wa_id => $new2, type => 'user_changed_number' } };
my $n2 = { from => $new2, id => wamid(), timestamp => '' . ($now - 40), type => 'text', text => { body => 'y' } };
post(body(value(messages => [ $f2, $s2, $n2 ])), 'old number, change, new number in one short body');
is_deeply([ map { lead_of($_->{id})->{id} } $s2, $n2 ], [ (lead_of($f2->{id})->{id}) x 2 ],
          'record by record: one lead');
my $csnap = snapshot();
post(body(value(messages => [ $sys ])), 'the number change redelivered');
post(body(value(messages => [ $f2, $s2, $n2 ])), 'and the short body');
is(snapshot(), $csnap, 'a redelivered number change changes nothing');

# user_changed_user_id: the lead's user id follows, the old one is kept
my ($u1, $u2) = ("US.7001$$", "US.7002$$");
my $um = { from_user_id => $u1, id => wamid(), timestamp => '' . ($now - 30), type => 'text',
           text => { body => 'by user id' } };
post(body(value(contacts => [ { profile => { name => 'Uri' }, user_id => $u1 } ],
                messages => [ $um ])), 'a message from a user id, no phone');
my $uri = lead_of($um->{id})->{id};
my $us = { from_user_id => $u1, id => wamid(), timestamp => '' . ($now - 20), type => 'system',
           system => { body => 'User Uri changed their user id', user_id => $u2,
                       type => 'user_changed_user_id' } };
my $um2 = { from_user_id => $u2, id => wamid(), timestamp => '' . ($now - 10), type => 'text',
            text => { body => 'new id' } };
post(body(value(messages => [ $us, $um2 ])), 'user_changed_user_id, then a message from the new id');
is_deeply([ @{ lead_of($um2->{id}) }{qw(id wa_user_id)} ], [ $uri, $u2 ],
          'the new user id finds the same lead, which has it');
is($t->sql_value("SELECT value FROM wa_lead_former_id WHERE lead_id = ? AND kind = 'wa_user_id'", $uri),
   $u1, 'the old user id kept');

# ---- edits and revokes ------------------------------------------------------

my $p = phone(30);
my $orig = { from => $p, id => wamid(), timestamp => '' . ($now - 100), type => 'text',
             text => { body => 'See you at 5' } };
my $edit = { from => $p, id => wamid(), timestamp => '' . ($now - 90), type => 'edit',
             edit => { original_message_id => $orig->{id},
                       message => { type => 'text', text => { body => 'See you at 6' } } } };
post(body(value(messages => [ $orig ])), 'a message');
post(body(value(messages => [ $edit ])), 'its edit');
columns_are($orig->{id}, { body => 'See you at 6', original_body => 'See you at 5' },
            'the edit applied to the original');
is($t->sql_value('SELECT extract(epoch FROM edited_at)::bigint FROM whatsapp_message
                   WHERE provider_message_id = ?', $orig->{id}), $now - 90, 'edited_at');
columns_are($edit->{id}, { type => 'edit', body => '[edited] See you at 6',
                           target_message_id => $orig->{id} }, 'the edit is a row of its own');
my $rev = { from => $p, id => wamid(), timestamp => '' . ($now - 80), type => 'revoke',
            revoke => { original_message_id => $orig->{id} } };
post(body(value(messages => [ $rev ])), 'its revoke');
is($t->sql_value('SELECT extract(epoch FROM revoked_at)::bigint FROM whatsapp_message
                   WHERE provider_message_id = ?', $orig->{id}), $now - 80, 'revoked_at');
columns_are($rev->{id}, { type => 'revoke', body => '[deleted]', target_message_id => $orig->{id} },
            'the revoke is a row of its own');

# before their original: applied when it arrives; two edits out of order
# leave the latest
my $o2 = { from => $p, id => wamid(), timestamp => '' . ($now - 70), type => 'image',
           image => { caption => 'first', id => 'm1', mime_type => 'image/jpeg', sha256 => $sha } };
my $e2b = { from => $p, id => wamid(), timestamp => '' . ($now - 50), type => 'edit',
            edit => { original_message_id => $o2->{id},
                      message => { type => 'image', image => { caption => 'third' } } } };
my $e2a = { from => $p, id => wamid(), timestamp => '' . ($now - 60), type => 'edit',
            edit => { original_message_id => $o2->{id},
                      message => { type => 'image', image => { caption => 'second' } } } };
my $r2 = { from => $p, id => wamid(), timestamp => '' . ($now - 40), type => 'revoke',
           revoke => { original_message_id => $o2->{id} } };
post(body(value(messages => [ $e2b ])), 'the later edit, before the original');
post(body(value(messages => [ $e2a, $r2 ])), 'the earlier edit and a revoke, before the original');
columns_are($e2b->{id}, { type => 'edit', target_message_id => $o2->{id} }, 'early edits stored as rows');
is($t->sql_value("SELECT count(*) FROM wa_pending_receipt WHERE kind = 'change'
                   AND provider_message_id = ?", $o2->{id}), 1,
   'and their original awaited, once, in wa_pending_receipt');
post(body(value(messages => [ $o2 ])), 'the original');
is($t->sql_value("SELECT count(*) FROM wa_pending_receipt WHERE provider_message_id = ?", $o2->{id}),
   0, 'no longer awaited once it came');
columns_are($o2->{id}, { body => '[image] third', original_body => '[image] first' },
            'the early edits applied on arrival, the latest wins');
is($t->sql_value('SELECT extract(epoch FROM revoked_at)::bigint FROM whatsapp_message
                   WHERE provider_message_id = ?', $o2->{id}), $now - 40, 'the early revoke applied on arrival');

# the same in a run of 16 or more: the original among 20 messages
my $o3 = { from => $p, id => wamid(), timestamp => '' . ($now - 30), type => 'text', text => { body => 'v1' } };
my $e3 = { from => $p, id => wamid(), timestamp => '' . ($now - 20), type => 'edit',
           edit => { original_message_id => $o3->{id}, message => { type => 'text', text => { body => 'v2' } } } };
post(body(value(messages => [ $e3 ])), 'an edit before its original');
post(body(value(messages => [ $o3, map { { from => phone(31), id => wamid(), timestamp => "$now",
                                           type => 'text', text => { body => "filler $_" } } } 1 .. 19 ])),
     'the original in a run');
columns_are($o3->{id}, { body => 'v2', original_body => 'v1' }, 'set path: the early edit applied');

my $esnap = snapshot();
post(body(value(messages => [ $orig, $edit, $rev, $o2, $e2a, $e2b, $r2, $e3 ])), 'edits and revokes redelivered');
is(snapshot(), $esnap, 'a redelivered edit or revoke changes nothing');

is($t->sql_value('SELECT count(*) FROM wa_dead_letter'), 0, 'no dead letter');
unlike($t->writer_log, qr/CRITICAL/, 'no CRITICAL line');

$t->teardown;
done_testing();
