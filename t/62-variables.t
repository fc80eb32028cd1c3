#!/usr/bin/perl
# The $wa_* variables in nginx's own directives: a log_format that writes
# them for webhooks and sends (records published, local id, wamid, the
# provider's error code, outcome, channel, business), a map over one, and
# limit_req keyed by $wa_channel.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use WaTest;
use WaPayload qw(body value message status);

my $t = WaTest->new;
$t->start_pg;
$t->migrate;
$t->start_mock;
$t->start_writer;

my $d = $t->dir;
my $phone = $WaTest::PHONE_ID;
my $api = $t->mock->api_conf;

my $http = <<EOF;
    log_format wa 'req=\$request_uri status=\$status records=\$wa_records local_id=\$wa_local_id '
                  'wamid=\$wa_wamid code=\$wa_error_code outcome=\$wa_send_status '
                  'channel=\$wa_channel business=\$wa_business class=\$wa_class';
    map \$wa_error_code \$wa_class {
        default   refused;
        ''        none;
        ~^1310    recipient;
    }
    limit_req_zone \$wa_channel zone=per_channel:1m rate=1r/m;
    access_log $d/wa.log wa;
EOF

my $server = $t->default_locations . <<EOF;
        location /send-limited {
            wa_send;
            $api
            wa_channel $phone business=1 token=$WaTest::TOKEN;
            limit_req zone=per_channel;
            limit_req_status 429;
        }
        location /send-two {
            wa_send;
            $api
            wa_channel $phone business=1 token=$WaTest::TOKEN;
            wa_channel 2222 business=2 token=$WaTest::TOKEN;
            limit_req zone=per_channel;
            limit_req_status 429;
        }
EOF

$t->start_nginx(http => $http, server => $server);

# the log line of the request whose URI was exactly $req (each request of
# this test has its own ?t=...: workers write their lines in any order)
sub line {
    my ($req) = @_;
    my $l;
    $t->wait_for(sub {
        ($l) = grep { /^req=\Q$req\E / } split /\n/, WaTest::slurp("$d/wa.log");
        defined $l;
    }, 10, "the log line of $req");
    return $l // '';
}

sub field {
    my ($line, $k) = @_;
    return $line =~ /(?:^| )\Q$k\E=(\S*)/ ? $1 : undef;
}

# ---- a webhook: records published, its channel and business ---------------------

my $r = $t->post_webhook(body(value(messages => [ message('text'), message('text') ],
                                    statuses => [ status('delivered') ])),
                         path => '/webhook?t=wh1');
is($r->{status}, 200, 'a webhook with 2 messages and a receipt');
$r = $t->post_webhook(body(value(phone_number_id => '999000111',
                                 messages => [ message('text') ])),
                      path => '/webhook?t=wh2');
is($r->{status}, 200, 'a webhook for an unknown channel');
is($t->post_webhook('{"object":"nope"}', path => '/webhook?t=wh3')->{status}, 400,
   'a body refused');

# ---- sends: accepted, refused ----------------------------------------------

my $ok = $t->send_message({ to => '972506200001', text => 'WAMID_t62ok' },
                          path => '/send?t=s1');
is($ok->{status}, 200, 'a send accepted');
my $bad = $t->send_message({ to => '972506200002', text => 'FAIL_131026' },
                           path => '/send?t=s2');
is($bad->{status}, 502, 'a send refused with 131026');
my $bad2 = $t->send_message({ to => '972506200003', text => 'FAIL_500' },
                            path => '/send?t=s3');
is($bad2->{status}, 502, 'a send refused with a 5xx');
is($t->send_message({ to => 'x' }, path => '/send?t=s4')->{status}, 400,
   'a send refused by validation');

my @wh = map { line("/webhook?t=wh$_") } 1 .. 3;
my @send = map { line("/send?t=s$_") } 1 .. 4;
ok(!grep({ $_ eq '' } @wh, @send), 'a log line per request') or diag(WaTest::slurp("$d/wa.log"));

is(field($wh[0], 'records'), 3, '$wa_records: 3 records published');
is(field($wh[0], 'channel'), $phone, '$wa_channel: the phone number id');
is(field($wh[0], 'business'), 1, '$wa_business: its business');
is(field($wh[0], 'local_id'), '-', '$wa_local_id: none for a webhook');
is(field($wh[1], 'channel'), '999000111', 'an unknown channel is still named');
is(field($wh[1], 'business'), 99, 'with the default business');
is(field($wh[1], 'records'), 1, 'one record');
is(field($wh[2], 'records'), 0, 'a refused body published none');

is(field($send[0], 'records'), 2, 'a send: its pending record and its outcome');
is(field($send[0], 'local_id'), $ok->{json}{id}, '$wa_local_id');
is(field($send[0], 'wamid'), 'wamid.t62ok', '$wa_wamid');
is(field($send[0], 'outcome'), 'sent', '$wa_send_status');
is(field($send[0], 'code'), '-', 'no error code');
is(field($send[0], 'class'), 'none', 'map over $wa_error_code: none');
is(field($send[0], 'channel'), $phone, '$wa_channel of the send');
is(field($send[0], 'business'), 1, '$wa_business of the send');

is(field($send[1], 'code'), '131026', '$wa_error_code: the provider\'s code');
is(field($send[1], 'outcome'), 'failed', 'outcome failed');
is(field($send[1], 'wamid'), '-', 'no wamid');
is(field($send[1], 'local_id'), $bad->{json}{id}, 'its local id');
is(field($send[1], 'class'), 'recipient', 'map: 1310xx is the recipient\'s');
is(field($send[2], 'class'), 'refused', 'map: another code');
is(field($send[3], 'records'), 0, 'a send refused by validation published nothing');
is(field($send[3], 'local_id'), '-', 'and has no local id');

# the row is the one the variables name
my $row = $t->send_row($bad->{json}{id});
is($row->{error_code}, 131026, 'the row of $wa_local_id has $wa_error_code');

# ---- a client_ref: a second attempt keeps its id, a replayed answer sends nothing

my $try1 = $t->send_message({ to => '972506200006', text => 'FAILONCE_131026_t62',
                              client_ref => "t62-retry-$$" }, path => '/send?t=s5');
is($try1->{status}, 502, 'a client_ref refused once');
my $try2 = $t->send_message({ to => '972506200006', text => 'FAILONCE_131026_t62',
                              client_ref => "t62-retry-$$" }, path => '/send?t=s6');
is($try2->{status}, 200, 'accepted at its second attempt');
is($try2->{json}{id}, $try1->{json}{id}, 'under the same id');
my $again = $t->send_message({ to => '972506200006', text => 'FAILONCE_131026_t62',
                               client_ref => "t62-retry-$$" }, path => '/send?t=s7');
is($again->{status}, 200, 'a third call is answered from memory');
push @send, map { line("/send?t=s$_") } 5 .. 7;
is(field($send[4], 'code'), '131026', 'attempt 1: its error code');
is(field($send[5], 'local_id'), $try1->{json}{id}, 'attempt 2: $wa_local_id is the send\'s id');
is(field($send[5], 'wamid'), $try2->{json}{wamid}, 'with its wamid');
is(field($send[5], 'records'), 2, 'and its two records');
is(field($send[6], 'records'), 0, 'the answer from memory published nothing');
is(field($send[6], 'local_id'), '-', 'and names no new id');

# ---- limit_req keyed by $wa_channel ------------------------------------------

is($t->send_message({ to => '972506200004', text => 'one' }, path => '/send-limited')->{status},
   200, 'limit_req by $wa_channel: the first send passes');
my $second = $t->send_message({ to => '972506200005', text => 'two' }, path => '/send-limited');
is($second->{status}, 429, 'the second within the minute is limited: the location\'s channel is the key');
is(scalar(grep { $_->{body} =~ /"972506200005"/ } $t->mock->requests), 0,
   'and never reached the provider');

# several channels: the channel is in the body, unknown before it: not keyed
for my $i (1 .. 2) {
    is($t->send_message({ to => "97250620001$i", text => "multi $i",
                          phone_number_id => $phone }, path => "/send-two?t=m$i")->{status},
       200, "several channels: send $i is not limited (no key before the body)");
}
is(field(line('/send-two?t=m2'), 'channel'), $phone,
   'but its log line names the channel of the body');

done_testing;
