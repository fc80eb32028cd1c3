#!/usr/bin/perl
# The webhook fields with a structured home (schema 013), each posted
# through nginx in Meta's shapes and checked in the database: history
# messages and the sync's progress, contact syncs, marketing preferences,
# calls, templates and phone numbers. Every body is redelivered at the end:
# nothing new is stored and nothing moves; events older than what a row
# holds, arriving later, change nothing.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Time::HiRes qw(time);
use WaTest;
use WaPayload qw(wamid body value encode field_body echo status);

my $t = WaTest->new;
$t->start_pg;
$t->migrate;
$t->start_nginx;
$t->start_writer;

my $pnid = $WaTest::PHONE_ID;
my $display = '15550783881';
my $waba = '102290129340398';
my $now = int time;
my $T = $now - 86400;            # the events' own times, in the past

my %meta = (messaging_product => 'whatsapp',
            metadata => { display_phone_number => $display,
                          phone_number_id => $pnid });

my @posted;                      # every body, for the redelivery at the end

sub post {
    my ($name, $body) = @_;
    push @posted, $body;
    is($t->post_webhook($body)->{status}, 200, "$name: 200");
    $t->wait_drained(15);
}

sub row { $t->sql($_[0], @_[1 .. $#_])->[0] // {} }
sub val { $t->sql_value(@_) }
sub lead_of { val('SELECT id FROM leads WHERE business_id = 1 AND phone = ?', $_[0]) }
sub msg { row('SELECT *, extract(epoch FROM provider_ts)::bigint AS ts
                 FROM whatsapp_message WHERE provider_message_id = ?', $_[0]) }
sub epoch { val("SELECT extract(epoch FROM $_[0])::bigint FROM $_[1]", @_[2 .. $#_]) }

# ---- history -----------------------------------------------------------------

my ($cA, $cB) = ('972521000001', '972521000002');

# the CRM knows customer A already; a message of A was echoed live
$t->dbh->do(q{INSERT INTO leads (business_id, phone, name) VALUES (1, ?, 'Ann (CRM)')},
            undef, $cA);
my $leadA = lead_of($cA);
my $live = echo(to => $cA, text => 'sent live', timestamp => $T - 100);
post('a live echo', field_body(smb_message_echoes => value(message_echoes => [ $live ])));

my %h = map { $_ => wamid() } qw(out1 in1 media fail out2 bout from_me);
my $chunk1 = field_body(history => { %meta, history => [ {
    metadata => { phase => 0, chunk_order => 1, progress => 40 },
    threads => [
      { id => $cA, messages => [
          { from => $display, id => $h{out1}, timestamp => '' . ($T - 300),
            type => 'text', text => { body => 'Here is the info' },
            history_context => { status => 'READ' } },
          { from => $cA, id => $h{in1}, timestamp => '' . ($T - 290),
            type => 'text', text => { body => 'Thanks!' },
            history_context => { status => 'READ' } },
          { from => $display, id => $h{media}, timestamp => '' . ($T - 280),
            type => 'media_placeholder',
            history_context => { status => 'PLAYED' } },
          { from => $display, id => $h{fail}, timestamp => '' . ($T - 270),
            type => 'text', text => { body => 'never arrived' },
            history_context => { status => 'ERROR' } },
          { from => $display, id => $live->{id}, timestamp => '' . ($T - 100),
            type => 'text', text => { body => 'sent live' },
            history_context => { status => 'DELIVERED' } } ] },
      { id => $cB, messages => [
          { from => $display, id => $h{bout}, timestamp => '' . ($T - 200),
            type => 'text', text => { body => 'Your order shipped' },
            history_context => { status => 'DELIVERED' } } ] } ] } ] },
    waba => $waba);
post('history chunk 1', $chunk1);

# a later chunk overlaps the first (the same wamids, one of them with an
# older status) and adds a message marked from_me, as some senders do
my $chunk2 = field_body(history => { %meta, history => [ {
    metadata => { phase => 1, chunk_order => 1, progress => 100 },
    threads => [ { id => $cA, messages => [
        { from => $display, id => $h{out1}, timestamp => '' . ($T - 300),
          type => 'text', text => { body => 'Here is the info' },
          history_context => { status => 'DELIVERED' } },
        { from => $cA, id => $h{in1}, timestamp => '' . ($T - 290),
          type => 'text', text => { body => 'Thanks!' },
          history_context => { status => 'READ' } },
        { from => '972500000000', id => $h{from_me}, timestamp => '' . ($T - 250),
          type => 'text', text => { body => 'from another device' },
          history_context => { from_me => JSON::PP::true, status => 'sent' } } ] } ] } ] },
    waba => $waba);
post('history chunk 2', $chunk2);

# the contents of the media message, sent apart
post('history media contents', field_body(history => { %meta, messages => [ {
    from => $cA, id => $h{media}, timestamp => '' . ($T - 280), type => 'image',
    image => { caption => 'the brochure', mime_type => 'image/jpeg',
               sha256 => 'aa' x 32, id => '24230790383178626' } } ] },
    waba => $waba));

# a thread named by a business-scoped user id rather than a phone (not in
# Meta's examples: kept off any phone's lead all the same)
my $uthread = wamid();
post('history: a thread of a user id', field_body(history => { %meta, history => [ {
    metadata => { phase => 2, chunk_order => 7, progress => 100 },
    threads => [ { id => 'US.13491208655302741918', messages => [
        { from => 'US.13491208655302741918', id => $uthread, timestamp => '' . ($T - 50),
          type => 'text', text => { body => 'hi' },
          history_context => { status => 'READ' } } ] } ] } ] }, waba => $waba));
is(val('SELECT l.wa_user_id FROM whatsapp_message m JOIN leads l ON l.id = m.lead_id
         WHERE m.provider_message_id = ?', $uthread), 'US.13491208655302741918',
   'history: a user-id thread: the lead of that user id');
is(msg($uthread)->{direction}, 'in', 'history: a user-id thread: inbound from the user');
ok(!defined msg($uthread)->{phone}, 'history: a user-id thread: no phone made up');

# another number's business declined to share its history
post('history declined', field_body(history => { %meta, history => [ { errors => [ {
    code => 2593109,
    title => 'History sync is turned off by the business from the WhatsApp Business App',
    message => 'History sync is turned off by the business from the WhatsApp Business App',
    error_data => { details => 'History sharing is turned off by the business' } } ] } ] },
    waba => $waba));

my $m = msg($h{out1});
is($m->{direction}, 'out', 'history: from the business: outbound');
is($m->{source}, 'history', 'history: source history');
is($m->{ts}, $T - 300, 'history: its original timestamp');
is($m->{status}, 'read', 'history: READ applied; the older DELIVERED of chunk 2 did not undo it');
is($m->{lead_id}, $leadA, "history: the CRM's lead of the thread's customer");
is($m->{phone}, $cA, 'history: phone is the customer');
is($m->{body}, 'Here is the info', 'history: body');
ok(!defined $m->{read_at}, 'history: no read time invented');

$m = msg($h{in1});
is($m->{direction}, 'in', 'history: from the customer: inbound');
is($m->{status}, 'received', 'history: inbound received');
is($m->{ts}, $T - 290, 'history: inbound timestamp');
is($m->{lead_id}, $leadA, 'history: inbound on the same lead');

$m = msg($h{media});
is($m->{type}, 'image', 'history: placeholder replaced by the media contents');
is($m->{body}, 'the brochure', 'history: media caption as body');
like($m->{payload}, qr/24230790383178626/, 'history: the media id in payload');
is($m->{direction}, 'out', 'history: the placeholder keeps its direction');
is($m->{status}, 'played', 'history: PLAYED');
is(val('SELECT media_id FROM wa_media WHERE message_id = ?', $m->{id}), '24230790383178626',
   'history: the completed placeholder queues its media for the fetcher');

is(msg($h{fail})->{status}, 'failed', 'history: ERROR is failed');
is(msg($h{from_me})->{direction}, 'out', 'history: from_me is outbound');
is(msg($h{from_me})->{lead_id}, $leadA, 'history: from_me on the thread customer');

$m = msg($live->{id});
is($m->{status}, 'delivered', 'history: moves a message stored live');
is($m->{source}, 'business_app', 'history: a live row keeps its source');
is(val('SELECT count(*) FROM whatsapp_message WHERE provider_message_id = ?', $live->{id}),
   1, 'history: a live message is not stored twice');

my $leadB = lead_of($cB);
ok($leadB, 'history: a lead created for a new customer');
is(msg($h{bout})->{lead_id}, $leadB, "history: linked to that lead");
is(val('SELECT count(*) FROM leads WHERE phone IN (?, ?)', $cA, $cB), 2,
   'history: no duplicate leads');
is(val(q{SELECT count(*) FROM whatsapp_message WHERE source = 'history'}), 7,
   'history: seven messages across chunks, each once');

my $sync = $t->sql('SELECT phase, chunk_order, progress, messages, errors
                      FROM wa_history_sync WHERE phone_number_id = ? AND business_id = 1
                     ORDER BY phase, chunk_order', $pnid);
is(scalar @$sync, 4, 'history: one progress row per chunk');
is_deeply([ map { [ @$_{qw(phase chunk_order progress messages)} ] } @$sync ],
          [ [ -1, -1, undef, 0 ], [ 0, 1, 40, 6 ], [ 1, 1, 100, 3 ], [ 2, 7, 100, 1 ] ],
          'history: phase, chunk_order, progress and messages of each chunk');
like($sync->[0]{errors} // '', qr/2593109/, 'history: the refusal recorded with its code');

# ---- smb_app_state_sync --------------------------------------------------------

my ($p1, $p2, $p3) = ('16505550001', '16505550002', '16505550003');
$t->dbh->do(q{INSERT INTO leads (business_id, phone, name) VALUES (1, ?, 'Set by CRM')},
            undef, $p1);

sub contact {
    my ($action, $phone, $ts, $full) = @_;
    return { type => 'contact', action => $action,
             contact => { phone_number => $phone,
                          $full ? (full_name => $full,
                                   first_name => (split / /, $full)[0]) : () },
             metadata => { timestamp => "$ts" } };
}
sub sync_body { field_body(smb_app_state_sync => { %meta, state_sync => [ @_ ] }, waba => $waba) }

post('state sync: adds and a remove', sync_body(
    contact(add => $p1, $T, 'Pablo Morales'),
    contact(add => $p2, $T, 'Dana Levi'),
    contact(remove => $p3, $T)));

my $l1 = row('SELECT * FROM leads WHERE phone = ?', $p1);
is($l1->{name}, 'Set by CRM', 'state sync: a name the CRM set stays');
is($l1->{contact_name}, 'Pablo Morales', "state sync: the business's name for the contact");
my $l2 = row('SELECT * FROM leads WHERE phone = ?', $p2);
is($l2->{name}, 'Dana Levi', 'state sync: a new lead, named');
is($l2->{contact_name}, 'Dana Levi', 'state sync: its contact name');
is(val('SELECT count(*) FROM leads WHERE phone = ?', $p3), 0,
   'state sync: a remove creates no lead');
is(val(q{SELECT count(*) FROM wa_contact_sync WHERE phone = ? AND action = 'remove'
           AND lead_id IS NULL}, $p3), 1, 'state sync: the remove recorded');

post('state sync: an edit', sync_body(contact(add => $p2, $T + 10, 'Dana L.')));
post('state sync: an older edit, later', sync_body(contact(add => $p2, $T + 5, 'Old Dana')));
$l2 = row('SELECT * FROM leads WHERE phone = ?', $p2);
is($l2->{contact_name}, 'Dana L.', 'state sync: the newest edit wins; an older one arriving later does not');
is($l2->{name}, 'Dana Levi', 'state sync: the lead name is not overwritten');

post('state sync: removed', sync_body(contact(remove => $p2, $T + 20)));
$l2 = row('SELECT * FROM leads WHERE phone = ?', $p2);
ok($l2->{id}, 'state sync: a removed contact keeps its lead');
ok(!defined $l2->{contact_name}, 'state sync: and no contact name');
is(val('SELECT count(*) FROM leads WHERE phone = ?', $p2), 1, 'state sync: one lead per phone');
is(val('SELECT count(*) FROM wa_contact_sync WHERE lead_id = ?', $l2->{id}), 4,
   'state sync: every add, edit and remove of the lead recorded');

# ---- user_preferences -------------------------------------------------------------

my $p4 = '16505550004';
sub pref_body {
    my ($value, $ts) = @_;
    return field_body(user_preferences => { %meta,
        contacts => [ { profile => { name => 'Sheena' }, wa_id => $p4 } ],
        user_preferences => [ { wa_id => $p4, detail => "User requested to $value marketing messages",
                                category => 'marketing_messages', value => $value,
                                timestamp => $ts } ] }, waba => $waba);
}
post('preference: stop', pref_body(stop => $T));
my $l4 = row('SELECT * FROM leads WHERE phone = ?', $p4);
is($l4->{marketing_preference}, 'stop', 'preference: the lead shows stop');
is($l4->{name}, 'Sheena', 'preference: a new lead, named from contacts');
post('preference: resume', pref_body(resume => $T + 60));
post('preference: an older stop, later', pref_body(stop => $T + 30));
$l4 = row('SELECT * FROM leads WHERE phone = ?', $p4);
is($l4->{marketing_preference}, 'resume', 'preference: the latest by event time wins');
is(epoch('marketing_preference_at', 'leads WHERE id = ?', $l4->{id}), $T + 60,
   'preference: with its time');
is_deeply($t->dbh->selectcol_arrayref(
    'SELECT value FROM wa_lead_preference WHERE lead_id = ? ORDER BY event_time', undef, $l4->{id}),
    [ qw(stop stop resume) ], 'preference: every event kept, by time');

# ---- calls ----------------------------------------------------------------------

my ($p5, $p6, $p7) = ('16505550005', '16505550006', '16505550007');
my ($c1, $c2, $c3) = map { "wacid.HBgLMTY1MDUwNzY1MjAVAgARGBI$_$$" } qw(A B C);
sub calls_body { field_body(calls => { %meta, @_ }, waba => $waba) }

post('call: a customer calls', calls_body(
    contacts => [ { profile => { name => 'Caller' }, wa_id => $p5 } ],
    calls => [ { id => $c1, from => $p5, to => $display, event => 'connect',
                 timestamp => '' . $T, direction => 'USER_INITIATED',
                 session => { sdp_type => 'offer', sdp => "v=0\r\n" } } ]));
post('call: it ends', calls_body(calls => [ {
    id => $c1, from => $p5, to => $display, event => 'terminate',
    timestamp => '' . ($T + 65), direction => 'USER_INITIATED', status => 'COMPLETED',
    start_time => '' . ($T + 5), end_time => '' . ($T + 65), duration => 60 } ]));

my $call = row('SELECT *, extract(epoch FROM started_at)::bigint AS s,
                       extract(epoch FROM ended_at)::bigint AS e,
                       extract(epoch FROM connected_at)::bigint AS c
                  FROM wa_call WHERE call_id = ?', $c1);
is($call->{business_id}, 1, 'call: business of the number');
is($call->{direction}, 'in', 'call: user initiated is inbound');
is($call->{status}, 'COMPLETED', 'call: completed');
is($call->{lead_id}, lead_of($p5), "call: the caller's lead");
is(val('SELECT name FROM leads WHERE phone = ?', $p5), 'Caller', "call: lead named from contacts");
is_deeply([ @$call{qw(c s e duration)} ], [ $T, $T + 5, $T + 65, 60 ],
          'call: connected, start, end, duration');

sub cstatus { { id => $c2, type => 'call', status => $_[0], timestamp => '' . $_[1],
                recipient_id => $p6, biz_opaque_callback_data => 'crm-call-7' } }
post('call: ringing', calls_body(statuses => [ cstatus(RINGING => $T + 1) ]));
post('call: accepted', calls_body(statuses => [ cstatus(ACCEPTED => $T + 3) ]));
post('call: business call ends', calls_body(calls => [ {
    id => $c2, from => $display, to => $p6, event => 'terminate',
    timestamp => '' . ($T + 70), direction => 'BUSINESS_INITIATED', status => 'COMPLETED',
    start_time => '' . ($T + 3), end_time => '' . ($T + 70), duration => 67 } ]));
post('call: a late RINGING', calls_body(statuses => [ cstatus(RINGING => $T + 2) ]));

$call = row('SELECT * FROM wa_call WHERE call_id = ?', $c2);
is($call->{status}, 'COMPLETED', 'call: a late RINGING does not undo COMPLETED');
is($call->{direction}, 'out', 'call: the business called');
is($call->{lead_id}, lead_of($p6), "call: the callee's lead");
is($call->{callback_data}, 'crm-call-7', 'call: biz_opaque_callback_data');
is($call->{duration}, 67, 'call: duration');
is_deeply($t->dbh->selectcol_arrayref(
    'SELECT coalesce(status, kind) FROM wa_call_event WHERE call_row_id = ? ORDER BY id',
    undef, $call->{id}), [ qw(RINGING ACCEPTED COMPLETED RINGING) ],
    'call: every event kept, in arrival order');
is(val(q{SELECT count(*) FROM wa_pending_receipt WHERE provider_message_id LIKE 'wacid.%'}), 0,
   'call: its statuses are not parked as message receipts');

post('call: rejected, then failed with errors', calls_body(
    statuses => [ { id => $c3, type => 'call', status => 'REJECTED',
                    timestamp => '' . ($T + 1), recipient_id => $p7 } ]));
post('call: terminate with errors', calls_body(
    calls => [ { id => $c3, from => $display, to => $p7, event => 'terminate',
                 timestamp => '' . ($T + 2), direction => 'BUSINESS_INITIATED',
                 status => 'FAILED' } ],
    errors => [ { code => 138006, title => 'Lack of call permission',
                  message => 'Lack of call permission' } ]));
$call = row('SELECT * FROM wa_call WHERE call_id = ?', $c3);
is($call->{status}, 'REJECTED', 'call: the first final status stays');
like($call->{errors} // '', qr/138006/, "call: the call's errors on its row");
is(val(q{SELECT count(*) FROM wa_event WHERE field = 'calls'}), 8,
   'call: every calls change in wa_event too');

# ---- templates --------------------------------------------------------------------

my $tid = 594425479261284;
my %tpl = (message_template_id => $tid, message_template_name => 'order_confirmation',
           message_template_language => 'en_US');
sub acct { my ($field, $time, %v) = @_; field_body($field => { %v }, time => $time, waba => $waba) }

post('template approved', acct(message_template_status_update => $T,
     %tpl, event => 'APPROVED', reason => 'NONE', message_template_category => 'UTILITY'));
post('template quality', acct(message_template_quality_update => $T + 10,
     %tpl, previous_quality_score => 'GREEN', new_quality_score => 'YELLOW'));
post('template category', acct(template_category_update => $T + 20,
     %tpl, previous_category => 'UTILITY', new_category => 'MARKETING'));
post('template paused', acct(message_template_status_update => $T + 30,
     %tpl, event => 'PAUSED', reason => 'QUALITY'));
post('template: an older REJECTED, later', acct(message_template_status_update => $T + 5,
     %tpl, event => 'REJECTED', reason => 'INVALID_FORMAT'));
post('template: an older category, later', acct(template_category_update => $T + 15,
     %tpl, previous_category => 'MARKETING', new_category => 'AUTHENTICATION'));
post('the same template in another language', acct(message_template_status_update => $T,
     %tpl, message_template_language => 'he', event => 'PENDING', reason => undef));

my $tp = row(q{SELECT *, extract(epoch FROM status_at)::bigint AS sat FROM wa_template
                WHERE template_id = ? AND language = 'en_US'}, $tid);
is($tp->{waba_id}, $waba, 'template: its WABA');
is($tp->{name}, 'order_confirmation', 'template: its name');
is($tp->{status}, 'PAUSED', 'template: the newest status; an older REJECTED arriving later does not undo it');
is($tp->{sat}, $T + 30, 'template: status time');
is($tp->{quality}, 'YELLOW', 'template: quality');
is($tp->{category}, 'MARKETING', 'template: the newest category');
is(val('SELECT count(*) FROM wa_template WHERE template_id = ?', $tid), 2,
   'template: one row per language');
is(val(q{SELECT status FROM wa_template WHERE template_id = ? AND language = 'he'}, $tid),
   'PENDING', 'template: the other language has its own status');

# ---- phone numbers ------------------------------------------------------------------

post('number flagged', acct(phone_number_quality_update => $T,
     display_phone_number => $display, event => 'FLAGGED', current_limit => 'TIER_1K'));
post('number unflagged, upgraded', acct(phone_number_quality_update => $T + 10,
     display_phone_number => $display, event => 'UPGRADE', old_limit => 'TIER_1K',
     current_limit => 'TIER_10K', max_daily_conversations_per_business => 'TIER_10K'));
post('number: an older downgrade, later', acct(phone_number_quality_update => $T + 5,
     display_phone_number => $display, event => 'DOWNGRADE', current_limit => 'TIER_250'));
post('number name approved', acct(phone_number_name_update => $T,
     display_phone_number => $display, decision => 'APPROVED',
     requested_verified_name => 'Acme Shoes', rejection_reason => undef));

my $pn = row('SELECT * FROM wa_phone_number WHERE display_phone_number = ?', $display);
is($pn->{phone_number_id}, $pnid, 'number: its id, learnt from a value that names both');
is($pn->{quality_event}, 'UPGRADE', 'number: the newest quality event');
is($pn->{messaging_limit}, 'TIER_10K', 'number: the newest messaging limit');
is($pn->{name_decision}, 'APPROVED', 'number: the name decision');
is($pn->{requested_name}, 'Acme Shoes', 'number: the requested name');

# ---- a value PostgreSQL refuses: kept raw, loudly; the rest of the chunk stored ---------

my $huge = 'wamid.' . join '', map { sprintf '%08x', int rand 2**32 } 1 .. 2500;
my $fine = wamid();
post('history: a message PostgreSQL cannot index', field_body(history => { %meta, history => [ {
    metadata => { phase => 2, chunk_order => 8, progress => 100 },
    threads => [ { id => $cB, messages => [
        { from => $cB, id => $huge, timestamp => '' . $T, type => 'text', text => { body => 'x' } },
        { from => $cB, id => $fine, timestamp => '' . $T, type => 'text', text => { body => 'ok' } } ] } ] } ] },
    waba => $waba));
is(msg($fine)->{lead_id}, $leadB, 'refused: the other message of the chunk is stored');
is(val('SELECT count(*) FROM whatsapp_message WHERE length(provider_message_id) > 10000'), 0,
   'refused: the message PostgreSQL cannot index is not');
is(val(q{SELECT count(*) FROM wa_event WHERE payload::text LIKE '%' || ? || '%'}, substr($huge, 0, 64)), 1,
   'refused: it is in wa_event');
like($t->writer_log, qr/WARN .*history message wamid\.[0-9a-f]+ of number $pnid kept in wa_event only/,
     'refused: a WARN line names it');

my $huge_tpl = join '', map { sprintf '%08x', int rand 2**32 } 1 .. 2500;
post('template: an id PostgreSQL cannot index', acct(message_template_status_update => $T,
     %tpl, message_template_id => $huge_tpl, event => 'APPROVED'));
is(val(q{SELECT count(*) FROM wa_event WHERE field = 'message_template_status_update'
           AND payload->>'message_template_id' = ?}, $huge_tpl), 1, 'refused: the event kept raw');
is(val('SELECT count(*) FROM wa_template WHERE length(template_id) > 1000'), 0,
   'refused: no template row');
like($t->writer_log, qr/WARN .*webhook event of field message_template_status_update .* kept raw in wa_event, not structured/,
     'refused: a WARN line says so');

# ---- a redelivery of everything: nothing new, nothing moves ----------------------------

my @tables = qw(whatsapp_message leads wa_event wa_history_sync wa_contact_sync
                wa_lead_preference wa_call wa_call_event wa_template wa_phone_number
                wa_pending_receipt wa_webhook_error wa_media);
sub digest {
    return { map { $_ => val("SELECT count(*) || ' ' || coalesce(md5(string_agg(x::text, '|'
                                 ORDER BY x::text)), '') FROM $_ x") } @tables };
}
my $before = digest();
is($t->post_webhook($_)->{status}, 200, 'redelivered: 200') for @posted;
$t->wait_drained(30);
is_deeply(digest(), $before, 'a redelivery of every body changes no row of any table');

# ---- events stored raw before 013: applied again, in order ---------------------------

my $old_call = "wacid.before013$$";
$t->dbh->do(q{INSERT INTO wa_event (business_id, phone_number_id, waba_id, field, payload,
                                    event_time, received_at, dedupe_key)
              VALUES (1, ?, ?, 'calls', ?, NULL, now(), 'before013-' || ?)},
            undef, $pnid, $waba,
            encode({ %meta, calls => [ { id => $old_call, from => $p7, to => $display,
                     event => 'terminate', timestamp => '' . $T, direction => 'USER_INITIATED',
                     status => 'COMPLETED', duration => 9 } ] }), $$);
my $reapply = q{SELECT count(wa_event_apply(business_id, phone_number_id, waba_id, field,
                        payload, extract(epoch FROM event_time)::bigint::text,
                        (extract(epoch FROM received_at) * 1000)::bigint::text))
                  FROM (SELECT * FROM wa_event ORDER BY id) e};
$before = digest();
$t->dbh->do('SET client_min_messages = error');   # the refused ones warn again
$t->sql_value($reapply);
my $after = digest();
is(val('SELECT duration FROM wa_call WHERE call_id = ?', $old_call), 9,
   'before 013: a raw event applied again is structured');
delete $_->{wa_call}, delete $_->{wa_call_event} for $before, $after;
is_deeply($after, $before, 'and applying every other event again changes nothing');

is(val('SELECT count(*) FROM wa_dead_letter'), 0, 'no dead letter');
unlike($t->writer_log, qr/\b(ERROR|CRITICAL)\b/, 'the writer logged no error');

done_testing();
