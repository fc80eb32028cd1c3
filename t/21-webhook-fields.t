#!/usr/bin/perl
# Every change of every field is stored: the fields ngx_wa has no structure
# for go to wa_event raw, message echoes become outbound messages, webhook
# errors are stored once however often Meta delivers them. Checked in the
# database, redeliveries included.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Time::HiRes qw(time sleep);
use JSON::PP;
use WaTest;
use WaPayload qw(wamid body value message status encode field_body echo);

my $t = WaTest->new;
$t->start_pg;
$t->migrate;
$t->start_nginx;
$t->start_writer;

my $pnid = $WaTest::PHONE_ID;
my $waba = '102290129340398';
my $json = JSON::PP->new->utf8->canonical;
my $tag = $$ . int(time * 1000);
my $now = int time;

my %meta = (messaging_product => 'whatsapp',
            metadata => { display_phone_number => '15550783881',
                          phone_number_id => $pnid });
my @contacts = (contacts => [ { profile => { name => 'Dana' },
                                wa_id => '16505551234' } ]);

# [field, value, entry time (account level fields carry one), business]
my @cases = (
    [ account_update => { phone_number => '15550783881',
                          event => 'VERIFIED_ACCOUNT', tag => $tag }, $now, 99 ],
    [ message_template_status_update => {
        event => 'APPROVED', message_template_id => 594425479261284,
        message_template_name => "order_confirmation_$tag",
        message_template_language => 'en_US', reason => 'NONE' }, $now, 99 ],
    [ message_template_quality_update => {
        previous_quality_score => 'GREEN', new_quality_score => 'YELLOW',
        message_template_id => 594425479261284,
        message_template_name => "order_confirmation_$tag",
        message_template_language => 'en_US' }, $now, 99 ],
    [ template_category_update => {
        message_template_id => 594425479261284,
        message_template_name => "order_confirmation_$tag",
        message_template_language => 'en_US',
        previous_category => 'UTILITY', new_category => 'MARKETING' }, $now, 99 ],
    [ phone_number_quality_update => {
        display_phone_number => '15550783881', event => 'FLAGGED',
        current_limit => 'TIER_1K', tag => $tag }, $now, 99 ],
    [ phone_number_name_update => {
        display_phone_number => '15550783881', decision => 'APPROVED',
        requested_verified_name => "Acme $tag", rejection_reason => undef },
      $now, 99 ],
    [ business_capability_update => {
        max_daily_conversation_per_phone => 1000,
        max_phone_numbers_per_business => 2, tag => $tag }, $now, 99 ],
    [ security => { display_phone_number => '15550783881',
                    event => 'PIN_CHANGED', requester => "r$tag" }, $now, 99 ],
    [ user_preferences => { %meta, @contacts, user_preferences => [ {
        wa_id => '16505551234', detail => "stop $tag",
        category => 'marketing_messages', value => 'stop',
        timestamp => $now } ] }, undef, 1 ],
    [ calls => { %meta, @contacts, calls => [ {
        id => "wacid.$tag", to => '15550783881', from => '16505551234',
        event => 'connect', timestamp => "$now", direction => 'USER_INITIATED',
        session => { sdp_type => 'offer', sdp => "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n" } } ] },
      undef, 1 ],
    [ history => { %meta, history => [ {
        metadata => { phase => 0, chunk_order => 1, progress => 55 },
        threads => [ { id => '16505551234', messages => [ {
            from => '16505551234', id => wamid(), timestamp => "$now",
            type => 'text', text => { body => "old $tag" },
            history_context => { status => 'READ' } } ] } ] } ] },
      undef, 1 ],
    [ smb_app_state_sync => { %meta, state_sync => [ {
        type => 'contact', action => 'add',
        contact => { full_name => "Dana Levi $tag", first_name => 'Dana',
                     phone_number => '16505551234' },
        metadata => { timestamp => "$now" } } ] }, undef, 1 ],
    [ some_future_field => { anything => [ 1, 'two', { three => 3 } ],
                             tag => $tag }, $now, 99 ],
    [ messages => { %meta, @contacts, tag => $tag }, undef, 1 ],
);

sub events { $t->sql('SELECT * FROM wa_event WHERE field = ? ORDER BY id', $_[0]) }
sub nevents { $t->sql_value('SELECT count(*) FROM wa_event') }

# ---- every field: 200, then a row with its field, business and value --------

my @bodies;
for my $c (@cases) {
    my ($field, $v, $time, $biz) = @$c;
    my $b = field_body($field, $v, time => $time, waba => $waba);
    push @bodies, $b;
    is($t->post_webhook($b)->{status}, 200, "$field: 200");
}

$t->wait_drained(15);

for my $c (@cases) {
    my ($field, $v, $time, $biz) = @$c;
    my $rows = events($field);
    is(scalar @$rows, 1, "$field: one wa_event row");
    my $r = $rows->[0] // {};
    is($r->{business_id}, $biz, "$field: business $biz");
    is($r->{waba_id}, $waba, "$field: WABA id");
    is($r->{phone_number_id}, $biz == 1 ? $pnid : undef,
       "$field: phone_number_id from metadata, when there is one");
    is_deeply($json->decode($r->{payload} // 'null'),
              $json->decode($json->encode($v)), "$field: the value, whole");
    if (defined $time) {
        is($t->sql_value('SELECT extract(epoch FROM event_time)::bigint
                            FROM wa_event WHERE id = ?', $r->{id}), $time,
           "$field: the entry time");
    } else {
        ok(!defined $r->{event_time}, "$field: no entry time, none stored");
    }
    ok(defined $r->{received_at}, "$field: received_at");
}

my $n = nevents();
is($n, scalar @cases, 'one row per change');

# counted by nginx, across workers, in wa_status (JSON and Prometheus)
sub wh_status { decode_json($t->http('GET', '/wa_status')->{content})->{webhook} }
is(wh_status()->{raw_events}, scalar @cases, 'wa_status: webhook.raw_events');
like($t->http('GET', '/wa_status?format=prometheus')->{content},
     qr/^wa_webhook_records_total\{kind="raw_event"\} ${\ scalar @cases}$/m,
     'wa_status, Prometheus: wa_webhook_records_total{kind="raw_event"}');

# ---- redelivery: nothing new; the same value at another time: a new row -----

is($t->post_webhook($_)->{status}, 200, 'redelivered: 200') for @bodies;

# the same body spelled differently: other spacing
(my $spaced = $bodies[0]) =~ s/,/ , /g;
is($t->post_webhook($spaced)->{status}, 200, 'redelivered, respaced: 200');

$t->wait_drained(15);
is(nevents(), $n, 'redeliveries store nothing new');

my $again = field_body(phone_number_quality_update => $cases[4][1],
                       time => $now + 60, waba => $waba);
is($t->post_webhook($again)->{status}, 200, 'the same quality event, later: 200');
$t->wait_drained(15);
is(scalar @{ events('phone_number_quality_update') }, 2,
   'the same value at another entry time is a row of its own');

# ---- several changes of different fields in one body: all of them ----------

my $mixed_m = message('text', from => '16505557777');
my $mixed = encode({ object => 'whatsapp_business_account', entry => [
    { id => $waba, time => $now, changes => [
        { field => 'account_update', value => { event => 'DISABLED_UPDATE', tag => "m$tag" } },
        { field => 'messages', value => value(messages => [ $mixed_m ]) } ] },
    { id => '999888777', time => $now, changes => [
        { field => 'security', value => { event => 'TWO_STEP_DISABLED', tag => "m$tag" } } ] } ] });
is($t->post_webhook($mixed)->{status}, 200, 'fields mixed in one body: 200');
$t->wait_drained(15);
is($t->sql_value("SELECT count(*) FROM wa_event WHERE payload->>'tag' = ?", "m$tag"), 2,
   'both raw changes stored');
is($t->sql_value("SELECT waba_id FROM wa_event WHERE field = 'security' AND payload->>'tag' = ?",
                 "m$tag"), '999888777', 'each with its own entry id');
is($t->sql_value('SELECT count(*) FROM whatsapp_message WHERE provider_message_id = ?',
                 $mixed_m->{id}), 1, 'and the message next to them');

# ---- a message type the parser does not know: a message row, raw ------------

my $odd = message('text', from => '16505558888');
$odd->{type} = 'future_type';
$odd->{future_type} = { anything => 'here' };
delete $odd->{text};
is($t->post_webhook(body(value(messages => [ $odd ])))->{status}, 200,
   'unknown message type: 200');
$t->wait_drained(15);
my $orow = $t->sql('SELECT * FROM whatsapp_message WHERE provider_message_id = ?',
                   $odd->{id})->[0] // {};
is($orow->{type}, 'future_type', 'stored as a message of that type');
like($orow->{payload} // '', qr/"anything": "here"/, 'with its raw object');

# ---- smb_message_echoes: outbound rows of the customer's lead ---------------

my $customer = '97250' . substr($tag, -7);
my $e1 = echo(to => $customer, text => "echo $tag", timestamp => "$now");
my $ebody = field_body(smb_message_echoes => value(message_echoes => [ $e1 ]),
                       waba => $waba);
is($t->post_webhook($ebody)->{status}, 200, 'echo: 200');
$t->wait_drained(15);

my $erow = sub {
    $t->sql('SELECT m.*, l.phone AS lead_phone FROM whatsapp_message m
               LEFT JOIN leads l ON l.id = m.lead_id
              WHERE m.provider_message_id = ?', $_[0]);
};
my $rows = $erow->($e1->{id});
is(scalar @$rows, 1, 'echo: one message row');
my $er = $rows->[0] // {};
is($er->{direction}, 'out', 'echo: outbound');
is($er->{status}, 'sent', 'echo: sent');
is($er->{source}, 'business_app', 'echo: source business_app');
is($er->{phone}, $customer, 'echo: phone is the customer (to), not the business');
is($er->{business_id}, 1, 'echo: business of the phone_number_id');
is($er->{body}, "echo $tag", 'echo: body');
ok(defined $er->{lead_id}, 'echo: a lead');
is($er->{lead_phone}, $customer, "echo: the customer's lead, created");
ok(defined $er->{sent_at}, 'echo: sent_at');

is(wh_status()->{echoes}, 1, 'wa_status: webhook.echoes');

is($t->post_webhook($ebody)->{status}, 200, 'echo redelivered: 200');
$t->wait_drained(15);
is(scalar @{ $erow->($e1->{id}) }, 1, 'echo redelivered: still one row');

# the customer writes back: same lead
my $reply = message('text', from => $customer);
$t->post_webhook(body(value(messages => [ $reply ])));
$t->wait_drained(15);
is($erow->($reply->{id})->[0]{lead_id}, $er->{lead_id},
   "the customer's reply: the echo's lead");

# receipts move it
for my $st (qw(delivered read)) {
    is($t->post_webhook(body(value(statuses => [
        status($st, id => $e1->{id}, to => $customer,
               timestamp => '' . ($now + ($st eq 'read' ? 20 : 10))) ])))->{status},
       200, "echo: $st receipt, 200");
    $t->wait_drained(15);
    is($erow->($e1->{id})->[0]{status}, $st, "echo: now $st");
}
$er = $erow->($e1->{id})->[0];
ok(defined $er->{delivered_at} && defined $er->{read_at}, 'echo: delivered_at and read_at');

# a receipt before its echo waits for it
my $e2 = echo(to => $customer, text => "late $tag");
$t->post_webhook(body(value(statuses => [ status('delivered', id => $e2->{id}, to => $customer) ])));
$t->wait_drained(15);
is($t->post_webhook(field_body(smb_message_echoes => value(message_echoes => [ $e2 ]),
                               waba => $waba))->{status}, 200, 'echo after its receipt: 200');
$t->wait_drained(15);
is($erow->($e2->{id})->[0]{status}, 'delivered', 'the parked receipt applied to the echo');

# ---- errors[]: once per body, however often delivered -----------------------

my $err = { code => 131000, title => "Something went wrong $tag",
            message => 'Something went wrong',
            error_data => { details => "Unknown $tag" } };
my $errbody = body(value(errors => [ $err ]));
my $nerr = sub {
    $t->sql_value("SELECT count(*) FROM wa_webhook_error WHERE error_title = ?", $err->{title});
};
is($t->post_webhook($errbody)->{status}, 200, 'errors[]: 200');
$t->wait_drained(15);
is($nerr->(), 1, 'errors[]: one row');
sleep 0.01;
is($t->post_webhook($errbody)->{status}, 200, 'errors[] redelivered: 200');
$t->wait_drained(15);
is($nerr->(), 1, 'errors[] redelivered: still one row');

my $terr = field_body(messages => value(errors => [ { %$err, title => "timed $tag" } ]),
                      time => $now);
my $terr2 = field_body(messages => value(errors => [ { %$err, title => "timed $tag" } ]),
                       time => $now + 5);
$t->post_webhook($_) for $terr, $terr, $terr2;
$t->wait_drained(15);
is($t->sql_value("SELECT count(*) FROM wa_webhook_error WHERE error_title = ?", "timed $tag"), 2,
   'errors[] with an entry time: a redelivery once, the same error later again');

is($t->sql_value('SELECT count(*) FROM wa_dead_letter'), 0, 'no dead letter');

done_testing();
