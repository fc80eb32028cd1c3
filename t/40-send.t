#!/usr/bin/perl
# The send path: recorded before sent, outcome recorded, never blocking.
#
# Against the plain mock (http://127.0.0.1:PORT) by default; with
# WA_SEND_WORLD=1 (t/41-send-world.t) against the mock reached the way
# Meta is: a host name resolved by libcurl's threaded resolver, TLS with
# certificate verification, HTTP/2 (see WaTest::start_mock).

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Time::HiRes qw(time sleep);
use WaTest;
use WaPayload qw(body value message status);

my $t = WaTest->new;
$t->start_pg;
$t->migrate;
my $world = $ENV{WA_SEND_WORLD};
my $mock = $t->start_mock(world => $world);
# wa_api_base, and on the world path the CA to trust
my $api = $mock->api_conf;
# the world path is Meta's: a name (not an address, not localhost), https
like($api, qr{^wa_api_base https://\Q$WaTest::WORLD_HOST\E:\d+;}m,
     'wa_api_base names the provider by host name over https')
    if $world;
my $world_locations = !$world ? '' : do {
    # a name nss_wrapper does not know, and a CA that did not sign the
    # front's certificate
    (my $nowhere = $mock->url) =~ s/^https:\/\/graph\./https:\/\/nowhere./;
    my $other = $t->make_ca('other');
    <<EOF;
        location /send_nowhere {
            wa_send;
            wa_api_base $nowhere;
            wa_ssl_trusted_certificate ${\ $mock->ca };
            wa_channel $WaTest::PHONE_ID business=1 token=$WaTest::TOKEN;
            wa_send_timeout 3s;
        }
        location /send_wrong_ca {
            wa_send;
            wa_api_base ${\ $mock->url };
            wa_ssl_trusted_certificate $other->{ca};
            wa_channel $WaTest::PHONE_ID business=1 token=$WaTest::TOKEN;
            wa_send_timeout 3s;
        }
        location /send_no_verify {
            wa_send;
            wa_api_base ${\ $mock->url };
            wa_ssl_trusted_certificate $other->{ca};
            wa_ssl_verify off;
            wa_channel $WaTest::PHONE_ID business=1 token=$WaTest::TOKEN;
            wa_send_timeout 3s;
        }
EOF
};
$t->start_nginx(workers => 1, ring_size => '64k', server => $t->default_locations
                . $world_locations . <<EOF);
        location /send2 {
            wa_send;
            $api
            wa_channel 111111111 business=2 token=T2;
            wa_channel 222222222 business=3 token=T3;
        }
        location /send_narrow {
            wa_send;
            $api
            wa_channel $WaTest::PHONE_ID business=1 token=$WaTest::TOKEN;
            wa_send_concurrency 2;
        }
EOF
$t->start_writer;

sub row { $t->send_row(@_) }

sub mock_count { scalar(my @r = $mock->requests) }

my $phone = '972501234567';

# ---- explicit lead_id kept ---------------------------------------------------

my $lead = $t->sql_value("INSERT INTO leads (business_id, phone, name) VALUES (1, '972500000042', 'Existing') RETURNING id");
my $r = $t->send_message({ to => '+972500000042', text => 'Hello', lead_id => 0 + $lead,
                           source => 'bot' });
is($r->{status}, 200, 'send accepted: 200');
like($r->{json}{wamid} // '', qr/^wamid\./, 'answer carries the wamid');
is($r->{json}{status}, 'sent', 'status sent');
is($r->{json}{lead_id}, $lead, 'answer carries the lead_id');
my $row = row($r->{json}{id});
is($row->{lead_id}, $lead, 'explicit lead_id kept on the row');
is($row->{status}, 'sent', 'row status sent');
is($row->{provider_message_id}, $r->{json}{wamid}, 'row has the wamid');
is($row->{direction}, 'out', 'direction out');
is($row->{source}, 'bot', 'source bot stored');
is($row->{body}, 'Hello', 'body stored');

my ($req) = grep { $_->{body} =~ /"Hello"/ } $mock->requests;
is($req->{headers}{authorization}, "Bearer $WaTest::TOKEN", 'the channel token reaches the provider');
like($req->{path}, qr{^/$WaTest::PHONE_ID/messages$}, 'POST /{phone_number_id}/messages');
like($req->{body}, qr/"biz_opaque_callback_data":"\Q$r->{json}{id}\E"/,
     'biz_opaque_callback_data is the local id');
like($req->{body}, qr/"to":"972500000042"/, 'to normalised to digits');

# ---- no lead_id: the lead is created by phone ---------------------------------

$r = $t->send_message({ to => "+$phone", text => 'Hi there', source => 'manual' });
is($r->{status}, 200, 'send without lead_id: 200');
$row = row($r->{json}{id});
ok(defined $row->{lead_id}, 'row has a lead');
is($t->sql_value('SELECT phone FROM leads WHERE id = ?', $row->{lead_id}), $phone,
   'lead created by phone');
is($row->{source}, 'manual', 'source manual stored');

# ---- template ----------------------------------------------------------------

$r = $t->send_message({ to => $phone, template => { name => 'hello_world',
                        language => { code => 'en_US' } } });
is($r->{status}, 200, 'template send: 200');
($req) = grep { $_->{body} =~ /hello_world/ } $mock->requests;
like($req->{body}, qr/"type":"template"/, 'template passed to the provider');
is(row($r->{json}{id})->{type}, 'template', 'row type template');

# ---- every message type: the object reaches Meta byte for byte --------------
#
# Sent as raw JSON so key order, spacing and escapes are the caller's own;
# the provider body must be our envelope around exactly those bytes.

my @types = (
    [ text => '{"body":"Object form https://x.example","preview_url":true}',
      'Object form https://x.example' ],
    [ image => '{ "link" : "https://x.example/cat.jpg", "caption":"A \u00e9 cat" }',
      "A \xc3\xa9 cat" ],
    [ video => '{"id":"1122","caption":"clip"}', 'clip' ],
    [ audio => '{"id":"3344"}', '[audio]' ],
    [ document => '{"link":"https://x.example/i.pdf","filename":"invoice.pdf"}',
      'invoice.pdf' ],
    [ sticker => '{"id":"5566"}', '[sticker]' ],
    [ interactive => '{"type":"button","body":{"text":"Confirm?"},"action":{"buttons":['
      . '{"type":"reply","reply":{"id":"y","title":"Yes"}},'
      . '{"type":"reply","reply":{"id":"n","title":"No"}}]}}', "Confirm?\n[Yes] [No]" ],
    [ interactive => '{"type":"list","header":{"type":"text","text":"Menu"},'
      . '"body":{"text":"Pick"},"footer":{"text":"f"},"action":{"button":"Options",'
      . '"sections":[{"title":"A","rows":[{"id":"a1","title":"First","description":"d"},'
      . '{"id":"a2","title":"Second"}]}]}}', "Pick\n[Options] First | Second" ],
    [ interactive => '{"type":"cta_url","body":{"text":"See"},"action":{"name":"cta_url",'
      . '"parameters":{"display_text":"Open","url":"https://x.example/o"}}}',
      "See\n[Open] https://x.example/o" ],
    [ interactive => '{"type":"flow","body":{"text":"Sign up"},"action":{"name":"flow",'
      . '"parameters":{"flow_message_version":"3","flow_name":"signup","flow_cta":"Start"}}}',
      "Sign up\n[Start]" ],
    [ interactive => '{"type":"location_request_message","body":{"text":"Where?"},'
      . '"action":{"name":"send_location"}}', 'Where?' ],
    [ interactive => '{"type":"catalog_message","body":{"text":"Shop"},'
      . '"action":{"name":"catalog_message"}}', 'Shop' ],
    [ interactive => '{"type":"product","action":{"catalog_id":"c1","product_retailer_id":"s1"}}',
      '[interactive]' ],
    [ interactive => '{"type":"product_list","header":{"type":"text","text":"Menu"},'
      . '"body":{"text":"Ours"},"action":{"catalog_id":"c1","sections":[{"title":"Hot",'
      . '"product_items":[{"product_retailer_id":"s1"}]}]}}', 'Ours' ],
    [ location => '{"latitude":32.0853,"longitude":34.781768,"name":"Office","address":"1 Main St"}',
      'Office, 1 Main St' ],
    [ contacts => '[{"name":{"formatted_name":"Ann Lee","first_name":"Ann"},'
      . '"phones":[{"phone":"+1 555 0100","type":"WORK"}]}]', 'Ann Lee' ],
    [ reaction => '{"message_id":"wamid.REACTED","emoji":"\uD83D\uDC4D"}', "\xf0\x9f\x91\x8d" ],
    [ reaction => '{"message_id":"wamid.REACTED","emoji":""}', 'reaction removed' ],
    [ template => '{"name":"hello_world", "language":{"code":"en_US"}}', 'hello_world' ],
);
for my $case (@types) {
    my ($type, $obj, $summary) = @$case;
    my $what = $type eq 'interactive' ? "interactive " . ($obj =~ /"type":"(\w+)"/)[0] : $type;
    $r = $t->send_message(qq({"to":"$phone","type":"$type","$type":$obj,"source":"types"}));
    is($r->{status}, 200, "$what: 200") or diag($r->{content});
    my $id = $r->{json}{id} // 'none';
    ($req) = grep { $_->{body} =~ /"biz_opaque_callback_data":"\Q$id\E"/ } $mock->requests;
    is($req && $req->{body},
       qq({"messaging_product":"whatsapp","recipient_type":"individual","to":"$phone",)
       . qq("biz_opaque_callback_data":"$id","type":"$type","$type":$obj}),
       "$what: the object reached the provider byte for byte");
    $row = row($id);
    is($row->{type}, $type, "$what: row type");
    my $body = $row->{body} // '';
    utf8::encode($body) if utf8::is_utf8($body);
    is($body, $summary, "$what: row body is readable");
}

# a reply: the context travels as sent and stays in the payload
$r = $t->send_message(qq({"to":"$phone","type":"image","image":{"id":"77"},)
                      . qq("context":{ "message_id":"wamid.ORIGINAL" }}));
is($r->{status}, 200, 'a reply: 200');
($req) = grep { $_->{body} =~ /"biz_opaque_callback_data":"\Q$r->{json}{id}\E"/ } $mock->requests;
like($req->{body}, qr/"image":\{"id":"77"\},"context":\{ "message_id":"wamid.ORIGINAL" \}\}$/,
     'a reply: the context reaches the provider as sent');
$row = row($r->{json}{id});
like(ref $row->{payload} ? JSON::PP->new->canonical->encode($row->{payload}) : $row->{payload} // '',
     qr/wamid\.ORIGINAL/, 'a reply: the context is kept in the payload');

# client_ref applies to every type: one provider call, one row
my $tref = "typed-$$-" . int(time * 1000);
my $tbefore = mock_count();
my $t1 = $t->send_message(qq({"to":"$phone","type":"location","location":{"latitude":1,"longitude":2},)
                       . qq("client_ref":"$tref"}));
my $t2 = $t->send_message(qq({"to":"$phone","type":"location","location":{"latitude":1,"longitude":2},)
                       . qq("client_ref":"$tref"}));
is($t1->{status}, 200, 'a location with a client_ref');
is($t2->{json}{wamid}, $t1->{json}{wamid}, 'its repeat answered with the first outcome');
is(mock_count() - $tbefore, 1, 'one provider call');
is(row($t1->{json}{id})->{body}, '1.000000, 2.000000', 'a place without a name: its coordinates');

# ---- provider refusal: 502 and a failed row ----------------------------------

$r = $t->send_message({ to => $phone, text => 'FAIL_131047' });
is($r->{status}, 502, 'provider refusal: 502');
is($r->{json}{error}{code}, 131047, 'answer carries the provider code');
is($r->{json}{retryable}, JSON::PP::false(), 'classified permanent');
ok($r->{json}{error}{provider}, 'and the provider body');
$row = row($r->{json}{id});
is($row->{status}, 'failed', 'row failed');
is($row->{error_code}, 131047, 'row error code');
like($row->{error_title}, qr/131047/, 'row error title');
is($row->{fbtrace_id}, 'AmockTrace131047', 'fbtrace_id kept');
ok(defined $row->{lead_id}, 'failed row has its lead');

$r = $t->send_message({ to => $phone, text => 'FAIL_131056' });
is($r->{json}{retryable}, JSON::PP::true(), '131056 classified retryable');
$r = $t->send_message({ to => $phone, text => 'FAIL_500' });
is($r->{status}, 502, 'provider 500: 502');
is($r->{json}{retryable}, JSON::PP::true(), 'provider 5xx is retryable');

# ---- timeout: 504 and a row ---------------------------------------------------

$r = $t->send_message({ to => $phone, text => 'SLOW_4500' });
is($r->{status}, 504, 'provider slower than wa_send_timeout: 504');
$row = row($r->{json}{id});
is($row->{status}, 'unknown', 'row kept as unknown (it may have been sent)');

# ---- duplicate client_ref: one provider call, one row --------------------------

my $ref = "ref-$$-" . int(time * 1000);
my $before = mock_count();
my $r1 = $t->send_message({ to => $phone, text => 'once', client_ref => $ref });
my $r2 = $t->send_message({ to => $phone, text => 'once', client_ref => $ref });
is($r1->{status}, 200, 'first send with a client_ref');
is($r2->{status}, 200, 'repeat answered with the first outcome');
is($r2->{json}{wamid}, $r1->{json}{wamid}, 'same wamid');
is(mock_count() - $before, 1, 'one provider call');
row($r1->{json}{id});
is($t->sql_value('SELECT count(*) FROM whatsapp_message WHERE client_ref = ?', $ref), 1,
   'one row');

# in flight: 409
my $ref2 = "ref2-$$-" . int(time * 1000);
my $pid = $t->send_in_child({ to => $phone, text => 'SLOW_1500', client_ref => $ref2 });
sleep 0.5;
$r = $t->send_message({ to => $phone, text => 'SLOW_1500', client_ref => $ref2 });
is($r->{status}, 409, 'repeat while the first is in flight: 409');
waitpid $pid, 0;

# ---- connections to the provider are reused ---------------------------------

my %conns;
my @before_reqs = $mock->requests;
for (1 .. 10) {
    $t->send_message({ to => $phone, text => "reuse $_" });
}
my @reqs = $mock->requests;
splice @reqs, 0, scalar @before_reqs;
# on the world path the mock's own connections are the front's upstream
# ones: the module's connections are the front's client connections
$conns{ $world ? $_->{headers}{'x-front-conn'} : $_->{conn} }++ for @reqs;
is(scalar @reqs, 10, '10 sends, 10 provider requests');
ok(keys %conns <= 2, 'over ' . scalar(keys %conns) . ' kept-alive connection(s)');
if ($world) {
    my @h2 = grep { ($_->{headers}{'x-front-proto'} // '') eq 'HTTP/2.0' } $mock->requests;
    is(scalar @h2, scalar(my @all = $mock->requests),
       'every request so far reached the provider over HTTP/2');
}

# ---- several channels: the request names one --------------------------------

$r = $t->send_message({ to => $phone, text => 'which one?' }, path => '/send2');
is($r->{status}, 400, 'several channels and none named: 400');
like($r->{json}{error}, qr/^phone_number_id:/, 'the error names phone_number_id');
$r = $t->send_message({ to => $phone, text => 'channel three', phone_number_id => '222222222' },
                      path => '/send2');
is($r->{status}, 200, 'the named channel sends');
($req) = grep { $_->{body} =~ /channel three/ } $mock->requests;
is($req->{headers}{authorization}, 'Bearer T3', 'with its own token');
like($req->{path}, qr{^/222222222/messages$}, 'from its own number');
is(row($r->{json}{id})->{business_id}, 3, 'recorded under its business');

# ---- the concurrency cap -------------------------------------------------------

my @slow;
for (1 .. 2) {
    push @slow, $t->send_in_child({ to => $phone, text => 'SLOW_1500' }, path => '/send_narrow');
}
sleep 0.5;
$before = mock_count();
$r = $t->send_message({ to => $phone, text => 'third' }, path => '/send_narrow');
is($r->{status}, 503, 'over wa_send_concurrency: 503');
ok($r->{headers}{'retry-after'}, 'with Retry-After');
waitpid $_, 0 for @slow;
is(scalar(grep { $_->{body} =~ /"third"/ } $mock->requests), 0, 'and it was not sent');

# ---- a client that leaves does not lose the outcome ----------------------------

my $ua = HTTP::Tiny->new(timeout => 0.5);
$r = $ua->request('POST', "http://127.0.0.1:" . $t->port . '/send', {
    headers => { 'Content-Type' => 'application/json' },
    content => '{"to":"972501234567","text":"SLOW_1500 left early"}' });
is($r->{status}, 599, 'the client gave up before the provider answered');
ok($t->wait_for(sub {
    $t->sql_value("SELECT status FROM whatsapp_message WHERE body = 'SLOW_1500 left early'")
        // '' eq 'sent' }, 10, 'outcome'),
   'the outcome is still recorded: sent, with its wamid');

# ---- a reload waits for sends in flight ----------------------------------------

my $kid = $t->send_in_child({ to => $phone, text => "SLOW_1500 across a reload" });
sleep 0.4;
$t->reload_nginx;
waitpid $kid, 0;
is($? >> 8, 0, 'a send in flight during a reload still gets its 200');
ok($t->wait_for(sub {
    ($t->sql_value("SELECT status FROM whatsapp_message WHERE body = 'SLOW_1500 across a reload'")
        // '') eq 'sent' }, 10, 'sent row'), 'and its row says sent');

# ---- bad input: 400 naming the field, nothing sent, nothing recorded ----------

my @bad = (
    [ { text => 'x' },                          qr/^to:/,        'missing to' ],
    [ { to => 'abc', text => 'x' },             qr/^to:/,        'to not a number' ],
    [ { to => '123', text => 'x' },             qr/^to:/,        'to too short' ],
    [ { to => $phone },                         qr/text, template/, 'neither text nor template' ],
    [ { to => $phone, text => 'x', template => { name => 'a' } }, qr/text, template/, 'both' ],
    [ { to => $phone, text => '' },             qr/^text:/,      'empty text' ],
    [ { to => $phone, text => 5 },              qr/^text:/,      'text not a string' ],
    [ { to => $phone, template => { x => 1 } }, qr/^template:/,  'template without name' ],
    [ { to => $phone, text => 'x', lead_id => 'abc' }, qr/^lead_id:/, 'lead_id not a number' ],
    [ { to => $phone, text => 'x', lead_id => -3 },    qr/^lead_id:/, 'negative lead_id' ],
    [ { to => $phone, text => 'x', source => 'Bad Source!' }, qr/^source:/, 'bad source' ],
    [ { to => $phone, text => 'x', client_ref => '' }, qr/^client_ref:/, 'empty client_ref' ],
    [ { to => $phone, text => 'x', phone_number_id => '999' }, qr/^phone_number_id:/, 'unknown phone_number_id' ],
    [ '{"to": "972501234567", "text": ',        qr/JSON/,        'not JSON' ],
    [ '[1,2]',                                  qr/JSON object/, 'not an object' ],
    [ '',                                       qr/JSON|body/,   'an empty body' ],
    [ { to => $phone, text => 'x' x 5000 },     qr/^text:/,      'text too long' ],
    # the message types: one refusal of each kind (t/02 has every limit)
    [ { to => $phone, type => 'gif', gif => {} }, qr/^type:/,    'unknown type' ],
    [ { to => $phone, image => { id => '1' } }, qr/^type:/,      'an image without type' ],
    [ { to => $phone, type => 'image' },        qr/^image:/,     'type without its object' ],
    [ { to => $phone, type => 'image', image => { id => '1', link => 'https://x.example/a' } },
      qr/^image: exactly one of/, 'image by id and link' ],
    [ { to => $phone, type => 'image', image => { id => '1', caption => 'c' x 1025 } },
      qr/^image\.caption:/, 'caption too long' ],
    [ { to => $phone, type => 'audio', audio => { id => '1', caption => 'c' } },
      qr/^audio\.caption:/, 'audio with a caption' ],
    [ { to => $phone, type => 'document', document => { link => 'ftp://x.example/a' } },
      qr/^document\.link:/, 'a link not http(s)' ],
    [ { to => $phone, type => 'interactive', interactive => { type => 'button',
        body => { text => 'b' }, action => { buttons => [ map { { type => 'reply',
        reply => { id => "i$_", title => "t$_" } } } 1 .. 4 ] } } },
      qr/^interactive\.action\.buttons\[3\]:/, 'four buttons' ],
    [ { to => $phone, type => 'interactive', interactive => { type => 'button',
        body => { text => 'b' }, action => { buttons => [ { type => 'reply',
        reply => { id => 'i', title => 't' x 21 } } ] } } },
      qr/^interactive\.action\.buttons\[0\]\.reply\.title:/, 'button title too long' ],
    [ { to => $phone, type => 'interactive', interactive => { type => 'list',
        body => { text => 'b' }, action => { button => 'B', sections => [ { rows =>
        [ map { { id => "r$_", title => 't' } } 1 .. 11 ] } ] } } },
      qr/^interactive\.action\.sections\[0\]\.rows\[10\]:/, 'eleven rows' ],
    [ { to => $phone, type => 'interactive', interactive => { type => 'cta_url',
        body => { text => 'b' }, action => { name => 'cta_url', parameters => { display_text => 'Go' } } } },
      qr/^interactive\.action\.parameters\.url:/, 'cta_url without url' ],
    [ { to => $phone, type => 'location', location => { latitude => 91, longitude => 0 } },
      qr/^location\.latitude:/, 'latitude out of range' ],
    [ { to => $phone, type => 'contacts', contacts => [ { name => {} } ] },
      qr/^contacts\[0\]\.name\.formatted_name:/, 'contact without formatted_name' ],
    [ { to => $phone, type => 'reaction', reaction => { message_id => 'wamid.A', emoji => 'ok' } },
      qr/^reaction\.emoji:/, 'reaction not an emoji' ],
    [ { to => $phone, text => 'x', context => { message_id => '' } },
      qr/^context\.message_id:/, 'empty reply context' ],
    [ '{"to":"972501234567","type":"image","image":{"id":"1","id":"2"}}',
      qr/^image\.id: given twice/, 'a key given twice' ],
);
my $rows_before = $t->sql_value('SELECT count(*) FROM whatsapp_message');
$before = mock_count();
for my $case (@bad) {
    my ($req, $re, $name) = @$case;
    $r = $t->send_message($req);
    is($r->{status}, 400, "$name: 400");
    like($r->{json}{error} // '', $re, "$name: the error names the field");
}
$r = $t->send_message({ to => $phone, text => 'x' x 70000 });
is($r->{status}, 413, 'body over wa_send_max_body_size: 413');
$r = $t->send_message({ to => $phone, text => 'x' }, headers => { 'Content-Type' => 'text/plain' });
is($r->{status}, 415, 'wrong Content-Type: 415');
$r = $t->send_message({ to => $phone, text => 'x' }, headers => { 'Content-Type' => 'application/jsonx' });
is($r->{status}, 415, 'application/jsonx is not JSON: 415');
is($t->http('GET', '/send')->{status}, 405, 'GET: 405');
sleep 0.3;
is(mock_count() - $before, 0, 'no bad request reached the provider');
is($t->sql_value('SELECT count(*) FROM whatsapp_message'), $rows_before,
   'no bad request was recorded');

# ---- the world path: resolver and certificate failures ------------------------

if ($world) {
    my @w = $t->worker_pids;
    $before = mock_count();

    # a host name nss_wrapper does not know: libcurl's resolver thread
    # fails, the send fails at once, the worker lives on
    my $t0 = time;
    $r = $t->send_message({ to => $phone, text => 'to nowhere' }, path => '/send_nowhere');
    my $took = time - $t0;
    # the name goes on to the system's resolver: an unreachable DNS makes
    # it a resolve timeout (504) instead of an answer (502); both are a
    # send that never left, ended within wa_send_timeout
    ok($r->{status} == 502 || $r->{status} == 504, "unknown host name: $r->{status}");
    ok($took < 4, sprintf 'and ended within wa_send_timeout (%.2f s)', $took);
    like($r->{json}{error}{title} // '', qr/resolv/i, 'the error says the name did not resolve')
        or diag($r->{content});
    is($r->{json}{retryable}, JSON::PP::true(), 'nothing left: retryable');
    $row = $r->{json}{id} ? row($r->{json}{id}) : {};
    is($row->{status}, 'failed', 'row failed');
    like($row->{error_title} // '', qr/resolv/i, 'row error says so too');

    # the same worker still sends, by a name it knows
    $r = $t->send_message({ to => $phone, text => 'after nowhere' });
    is($r->{status}, 200, 'the next send goes out');
    is_deeply([ $t->worker_pids ], \@w, 'by the same worker: nothing crashed');

    # a CA that did not sign the front's certificate: verification fails
    # before any byte of the request leaves
    $r = $t->send_message({ to => $phone, text => 'wrong CA' }, path => '/send_wrong_ca');
    is($r->{status}, 502, 'certificate from an untrusted CA: 502');
    like($r->{json}{error}{title} // '', qr/certificate/i,
         'the error says certificate verification failed') or diag($r->{content});
    $row = $r->{json}{id} ? row($r->{json}{id}) : {};
    is($row->{status}, 'failed', 'row failed');
    like($row->{error_title} // '', qr/certificate/i, 'row error names the certificate');
    sleep 0.3;
    is(scalar(grep { $_->{body} =~ /wrong CA/ } $mock->requests), 0,
       'the mock received nothing');
    is(mock_count() - $before, 1, 'only the send by a known name reached it');

    # wa_ssl_verify off: the same untrusted certificate is accepted
    $r = $t->send_message({ to => $phone, text => 'no verify' }, path => '/send_no_verify');
    is($r->{status}, 200, 'wa_ssl_verify off: the untrusted certificate is accepted');
    is_deeply([ $t->worker_pids ], \@w, 'still the same worker');
}

# ---- a slow provider does not delay webhooks on the same worker ----------------

sub webhook_time {
    my $t0 = time;
    for (1 .. 20) {
        $t->post_webhook(body(value(messages => [ message('text') ])));
    }
    return (time - $t0) / 20;
}
my $base = webhook_time();
my @kids;
for (1 .. 20) {
    push @kids, $t->send_in_child({ to => $phone, text => 'SLOW_2500' });
}
sleep 0.5;
my $busy = webhook_time();
waitpid $_, 0 for @kids;
my $ratio = $busy / $base;
diag(sprintf 'webhook latency: %.2f ms alone, %.2f ms with 20 slow sends in flight (x%.2f)',
             $base * 1000, $busy * 1000, $ratio);
ok($ratio < 3, 'webhook latency does not rise with slow sends in flight (ratio < 3)');
ok($busy < 1, 'and no webhook waited for the provider');

# ---- ring full: 503 and the provider received nothing ---------------------------

$t->stop_writer;

# a send in flight while webhooks fill the ring: its outcome is recorded
# in the room the ring keeps for outcomes, so its row does not stay pending
my $inflight = $t->send_in_child({ to => $phone, text => 'SLOW_1500 in flight while the ring fills' });
$t->wait_for(sub { grep { $_->{body} =~ /in flight while the ring fills/ } $mock->requests },
             5, 'the slow send to reach the mock');

my $filled = 0;
for my $size (500, 1) {     # then the smallest records, to the last bytes
    for (1 .. 2000) {
        my $st = $t->post_webhook(body(value(messages => [ message('text', text => 'f' x $size) ])))->{status};
        last if $st == 503;
        $filled++;
    }
}
ok($filled > 0, "ring filled by $filled webhooks");
like($t->error_log, qr/ring full \(\d+ byte \w+ record; the last sixteenth is kept for outcomes\)/,
     'the refusal says the last sixteenth is kept');
waitpid $inflight, 0;
is($?, 0, 'the send in flight got its 200');

# the last bytes: sends themselves, until one is refused
my ($refused, $sent) = (undef, 0);
for (1 .. 50) {
    $before = mock_count();
    $r = $t->send_message({ to => $phone, text => "filler $_" });
    if ($r->{status} == 503) { $refused = $r; last }
    $sent++;
}
ok($refused, "send with the ring full: 503 (after $sent more sends)");
like($refused->{content} // '', qr/nothing was sent/, 'the answer says nothing was sent');
sleep 0.3;
is(mock_count() - $before, 0, 'the refused send never reached the provider');
$t->start_writer;
$t->wait_drained(30);
is($t->sql_value(q{SELECT string_agg(status, ',') FROM whatsapp_message
                    WHERE body = 'SLOW_1500 in flight while the ring fills'}),
   'sent', "the send in flight while the ring filled: its outcome recorded, row 'sent'");
unlike($t->error_log, qr/not recorded, the ring refused it/, 'no outcome was refused');

unlike($t->error_log . $t->writer_log, qr/\Q$WaTest::TOKEN\E/, 'the token is in no log');

done_testing();
