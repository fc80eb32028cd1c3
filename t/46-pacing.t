#!/usr/bin/perl
# Per-number pacing and automatic retries of sends: a burst never trips the
# provider's rate limit (also across a reload), a send whose turn is too
# far away gets 503 and never reaches the provider, transient refusals are
# retried inside wa_send_timeout and every attempt is recorded, a send the
# provider may have taken is never retried.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use JSON::PP;
use IO::Select;
use IO::Socket::INET;
use POSIX ();
use Time::HiRes qw(time sleep);
use WaTest;

my $t = WaTest->new;
$t->start_pg;
$t->migrate;
# Meta's throughput limit, at 20 messages a second per number, with a
# bucket of 4 for the network's jitter: the mock forks a process per
# connection, and a send on a new connection arrives up to ~70 ms late,
# behind the next one (a gateway 10% over the rate still empties it in 2 s)
my $mock = $t->start_mock(rate => 20, burst => 4);
my $url = $mock->url;
my $closed = WaTest::free_port();     # nobody listens there
my $T = $WaTest::TOKEN;
my ($A, $B) = ('111111111', '222222222');

my $locations = <<EOF;
        location /send {
            wa_send;
            wa_api_base $url;
            wa_channel $A business=1 token=$T rate=20r/s;
            wa_channel $B business=1 token=$T rate=20r/s;
            wa_send_queue_timeout 20s;
            wa_send_timeout 5s;
        }
        location /send_retry {
            wa_send;
            wa_api_base $url;
            wa_channel 333333333 business=1 token=$T rate=1000r/s;
            wa_send_attempts 3;
            wa_send_retry_backoff 100ms;
            wa_send_timeout 4s;
        }
        location /send_once {
            wa_send;
            wa_api_base $url;
            wa_channel 333333333 business=1 token=$T rate=1000r/s;
            wa_send_attempts 1;
        }
        location /send_slowrate {
            wa_send;
            wa_api_base $url;
            wa_channel 666666666 business=1 token=$T rate=2r/s;
            wa_send_retry_backoff 100ms;
            wa_send_timeout 4s;
        }
        location /send_short {
            wa_send;
            wa_api_base $url;
            wa_channel 333333333 business=1 token=$T rate=1000r/s;
            wa_send_retry_backoff 100ms;
            wa_send_timeout 1s;
        }
        location /send_unreachable {
            wa_send;
            wa_api_base http://127.0.0.1:$closed;
            wa_channel 777777777 business=1 token=$T;
            wa_send_retry_backoff 100ms;
            wa_send_timeout 4s;
        }
        location /send_tight {
            wa_send;
            wa_api_base $url;
            wa_channel 444444444 business=1 token=$T rate=1r/s;
            wa_send_queue_timeout 1500ms;
        }
        location /send_pair {
            wa_send;
            wa_api_base $url;
            wa_channel 555555555 business=1 token=$T rate=1000r/s pair=1s;
        }
        location /send_backoff {
            wa_send;
            wa_api_base $url;
            wa_channel 888888888 business=1 token=$T rate=1000r/s;
            wa_send_retry_backoff 3s;
            wa_send_timeout 10s;
        }
        location /send_stop {
            wa_send;
            wa_api_base $url;
            wa_channel 999999999 business=1 token=$T rate=6r/m;
            wa_send_queue_timeout 15s;
        }
        location /wa_status { wa_status; }
EOF
my %nginx = (workers => 2, ring_size => '4m', server => $locations);
$t->start_nginx(%nginx);
$t->start_writer;

my $json = JSON::PP->new->utf8->canonical;

sub mock_reqs {
    my ($re) = @_;
    my @r = sort { $a->{at} <=> $b->{at} } grep { $_->{body} =~ $re } $mock->requests;
    return @r;
}

sub mock_got { my @r = mock_reqs(@_); return scalar @r }

sub row { $t->send_row(@_) }

# the row once it holds the answer's attempt: between two attempts it
# shows the refused one (failed) until the next one's record comes
sub final_row {
    my ($r) = @_;
    my $n = $r->{json}{attempt} // 1;
    $t->wait_for(sub {
        my $x = $t->sql('SELECT * FROM whatsapp_message WHERE local_id = ?', $r->{json}{id})->[0];
        $x && $x->{status} ne 'pending' && $x->{attempts} == $n }, 15, "row $r->{json}{id} at attempt $n");
    return row($r->{json}{id});
}

sub history {
    my ($id) = @_;
    return $t->sql('SELECT a.* FROM whatsapp_send_attempt a JOIN whatsapp_message m
                     ON m.id = a.message_id WHERE m.local_id = ? ORDER BY a.attempt', $id);
}

# ---- a burst: many sends at once, each on its own connection ----------------

# open a connection per request and write it whole; the answers are read by
# pump()
my (%conn, $sel);
$sel = IO::Select->new;

sub fire {
    my ($path, $req) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1:' . $t->port)
        or die "connect: $!";
    my $body = $json->encode($req);
    my $http = "POST $path HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
             . "Connection: close\r\nContent-Length: " . length($body) . "\r\n\r\n$body";
    syswrite($s, $http) == length($http) or die "write: $!";
    my $e = { s => $s, buf => '', req => $req, sent_at => time };
    $conn{fileno $s} = $e;
    $sel->add($s);
    return $e;
}

sub pump {
    my ($until) = @_;
    while ($sel->count && time < $until) {
        for my $s ($sel->can_read(0.2)) {
            my $e = $conn{fileno $s};
            my $n = sysread $s, my $chunk, 65536;
            if ($n) { $e->{buf} .= $chunk; next }
            $sel->remove($s);
            delete $conn{fileno $s};
            close $s;
            ($e->{status}) = $e->{buf} =~ m{^HTTP/1\.\d (\d+)};
            my ($b) = $e->{buf} =~ /\r\n\r\n(.*)\z/s;
            $e->{json} = eval { $json->decode($b // '') };
            $e->{done_at} = time;
        }
    }
}

# 300 sends now, 150 per number; a reload while they wait; then 200 more
# to the new workers: 250 per number, at 20/s about 12.5 s
my $tag = "burst$$";
my @sends;
my $t0 = time;
for my $i (1 .. 300) {
    push @sends, fire('/send', { to => sprintf('97250%07d', $i), text => "$tag $i",
                                 phone_number_id => $i % 2 ? $A : $B });
}
pump($t0 + 3);
# a reload: new workers start while the old ones still hold their waiting
# sends (WaTest's reload_nginx would wait for those to exit)
my %old = map { $_ => 1 } $t->worker_pids;
kill 'HUP', $t->{nginx_pid};
ok($t->wait_for(sub { grep { !$old{$_} } $t->worker_pids }, 10, 'new workers'),
   'reloaded while the first 300 sends wait their turn');
sleep 0.3;
for my $i (301 .. 500) {
    push @sends, fire('/send', { to => sprintf('97250%07d', $i), text => "$tag $i",
                                 phone_number_id => $i % 2 ? $A : $B });
}
pump($t0 + 60);
my $took = time - $t0;

my @ok = grep { ($_->{status} // 0) == 200 && ($_->{json}{status} // '') eq 'sent' } @sends;
is(scalar @ok, 500, 'every send of the burst answered 200, sent')
    or diag(join ', ', map { ($_->{status} // 'none') . ' ' . ($_->{buf} =~ /\r\n\r\n(.{0,200})/s)[0] }
                       grep { ($_->{status} // 0) != 200 } @sends[0 .. 9]);

my @got = mock_reqs(qr/\Q$tag\E /);
is(scalar @got, 500, 'the provider got each of them once');
is(scalar(grep { $_->{limited} } @got), 0, 'and refused none for its rate (no 130429)');

# the most sends of one number the mock got within any window of w seconds
sub most_within {
    my ($w, @at) = @_;
    my $max = 0;
    for my $i (0 .. $#at) {
        my $n = grep { $_ >= $at[$i] && $_ < $at[$i] + $w } @at[$i .. $#at];
        $max = $n if $n > $max;
    }
    return $max;
}

for my $id ($A, $B) {
    my @at = sort { $a <=> $b } map { $_->{at} } grep { $_->{path} =~ m{/$id/messages} } @got;
    cmp_ok(most_within(1, @at), '<=', 22, "number $id: at most 20 (+2 of network jitter) in any second");
    cmp_ok(most_within(5, @at), '<=', 101, "number $id: at most 100 (+1) in any 5 s");
    cmp_ok($at[-1] - $at[0], '>=', 249 / 20 * 0.95, "number $id: its 250 sends spread over 12 s");
}
diag(sprintf 'the burst took %.1f s', $took);

# the new workers booked after the old ones: sends made by them (asked
# for after the reload) reached the mock only once the turns the old
# workers had booked, 150 per number at 20/s, were over; with a schedule
# of their own they would have gone at once, 3 s in
for my $id ($A, $B) {
    my @mine = grep { $_->{path} =~ m{/$id/messages} } @got;
    my $first = (sort { $a <=> $b } map { $_->{at} } @mine)[0];
    my @late = sort { $a <=> $b } map { $_->{at} } grep { $_->{body} =~ /\Q$tag\E (\d+)/ && $1 > 300 } @mine;
    cmp_ok($late[0] - $first, '>=', 149 / 20 * 0.95,
           "number $id: after the reload, new sends took the turns after those booked before it");
}

ok($t->wait_for(sub {
    $t->sql_value(q{SELECT count(*) FROM whatsapp_message WHERE body LIKE ? AND status = 'sent'},
                  "$tag %") == 500 }, 30, 'the burst stored'), 'every send of the burst stored, sent');
is($t->sql_value('SELECT count(*) FROM whatsapp_message WHERE body LIKE ? AND attempts <> 1',
                 "$tag %"), 0, 'each in one attempt');

my $st = $t->http('GET', '/wa_status');
my $status = eval { $json->decode($st->{content}) } // {};
my $pa = $status->{channels}{$A}{pacing} // {};
is($pa->{sends}, 250, 'wa_status: a channel\'s sends, across the reload');
cmp_ok($pa->{waits} // 0, '>=', 200, 'its waits');
cmp_ok($pa->{waited_ms} // 0, '>', 0, 'how long they waited');
is($pa->{queue}, 0, 'nothing waiting now');
is($pa->{rate_limited}, 0, 'no rate-limit refusal');
is($pa->{rate}, 20, 'its rate');

# ---- retries ------------------------------------------------------------------

my $r = $t->send_message({ to => '972501000001', text => 'FAILTIMES_2_130429_a' }, path => '/send_retry');
is($r->{status}, 200, 'refused twice for the rate (130429), sent at the third attempt');
is($r->{json}{attempt}, 3, 'the answer says which attempt');
my @m = mock_reqs(qr/FAILTIMES_2_130429_a/);
is(scalar @m, 3, 'three calls reached the provider');
cmp_ok($m[1]{at} - $m[0]{at}, '>=', 0.045, 'a backoff before the second');
cmp_ok($m[2]{at} - $m[1]{at}, '>=', 0.095, 'a longer one before the third');
my $row = final_row($r);
is($row->{status}, 'sent', 'the row: sent');
is($row->{attempts}, 3, 'after 3 attempts');
is($row->{provider_message_id}, $r->{json}{wamid}, 'with the wamid');
ok(!defined $row->{error_code}, 'no error left on it');
my $h = history($r->{json}{id});
is(scalar @$h, 2, 'the two refused attempts kept');
is_deeply([ map { [ $_->{attempt}, $_->{status}, $_->{error_code} ] } @$h ],
          [ [ 1, 'failed', 130429 ], [ 2, 'failed', 130429 ] ], 'each with its error');

$r = $t->send_message({ to => '972501000002', text => 'FAIL_131000 always' }, path => '/send_retry');
is($r->{status}, 502, 'refused each time (131000): 502');
is($r->{json}{attempt}, 3, 'after its 3 attempts (wa_send_attempts)');
is($r->{json}{retryable}, JSON::PP::true(), 'still retryable for the caller');
is(mock_got(qr/FAIL_131000 always/), 3, 'three calls, no more');
$row = final_row($r);
is($row->{status}, 'failed', 'the row: failed');
is($row->{attempts}, 3, 'attempts 3');
is($row->{error_code}, 131000, 'the last error');
is(scalar @{ history($r->{json}{id}) }, 2, 'the first two kept');

# the caller's own new attempt of a refused client_ref counts on
my $cref = "after-retries-$$";
$r = $t->send_message({ to => '972501000012', text => 'FAILTIMES_3_131000_g', client_ref => $cref },
                      path => '/send_retry');
is($r->{json}{attempt}, 3, 'a client_ref refused 3 times, automatically');
my $again = $t->send_message({ to => '972501000012', text => 'FAILTIMES_3_131000_g', client_ref => $cref },
                             path => '/send_retry');
is($again->{status}, 200, 'the caller sends it again: accepted');
is($again->{json}{attempt}, 4, 'as its fourth attempt');
is($again->{json}{id}, $r->{json}{id}, 'the same send');
$row = final_row($again);
is($row->{attempts}, 4, 'the row: 4 attempts');
is($row->{status}, 'sent', 'sent');
is(scalar @{ history($again->{json}{id}) }, 3, 'the 3 refused ones kept');

$r = $t->send_message({ to => '972501000003', text => 'FAILTIMES_1_500_b' }, path => '/send_retry');
is($r->{status}, 200, 'a 5xx, then accepted');
is(mock_got(qr/FAILTIMES_1_500_b/), 2, 'two calls');

$r = $t->send_message({ to => '972501000004', text => 'FAILTIMES_1_131056_c' }, path => '/send_retry');
is($r->{status}, 200, 'the pair limit (131056), then accepted');
is(mock_got(qr/FAILTIMES_1_131056_c/), 2, 'two calls');

$r = $t->send_message({ to => '972501000005', text => 'FAIL_131047 permanent' }, path => '/send_retry');
is($r->{status}, 502, 'a permanent refusal (131047)');
is(mock_got(qr/FAIL_131047 permanent/), 1, 'is not retried');
is(final_row($r)->{attempts}, 1, 'one attempt');

$r = $t->send_message({ to => '972501000006', text => 'FAILTIMES_1_130429_d' }, path => '/send_once');
is($r->{status}, 502, 'wa_send_attempts 1: no retry');
is(mock_got(qr/FAILTIMES_1_130429_d/), 1, 'one call');

$r = $t->send_message({ to => '972501000007', text => 'RETRYAFTER_1_e' }, path => '/send_retry');
is($r->{status}, 200, '130429 with Retry-After: 1, then accepted');
@m = mock_reqs(qr/RETRYAFTER_1_e/);
is(scalar @m, 2, 'two calls');
cmp_ok($m[1]{at} - $m[0]{at}, '>=', 0.95, 'the second after the Retry-After, not the 100 ms backoff');

$r = $t->send_message({ to => '972501000008', text => 'FAILTIMES_1_130429_f' }, path => '/send_slowrate');
is($r->{status}, 200, 'a retry on a channel of 2 sends a second');
@m = mock_reqs(qr/FAILTIMES_1_130429_f/);
cmp_ok($m[1]{at} - $m[0]{at}, '>=', 0.45, 'waits its turn of the rate, not only the backoff');

# the request may have reached WhatsApp: never again
$r = $t->send_message({ to => '972501000009', text => 'SLOW_2000 timeout after send' }, path => '/send_short');
is($r->{status}, 504, 'no answer within wa_send_timeout after the request left: 504');
is($r->{json}{status}, 'unknown', 'unknown');
is(mock_got(qr/SLOW_2000 timeout after send/), 1, 'not retried');
$row = final_row($r);
is($row->{status}, 'unknown', 'the row: unknown');
is($row->{attempts}, 1, 'one attempt');

$r = $t->send_message({ to => '972501000010', text => 'DROP_dropped' }, path => '/send_retry');
is($r->{json}{status}, 'unknown', 'a connection dropped after the request left: unknown');
is(mock_got(qr/DROP_dropped/), 1, 'not retried');

# nothing left: a refused connection is retried
$r = $t->send_message({ to => '972501000011', text => 'nobody there' }, path => '/send_unreachable');
is($r->{status}, 502, 'an unreachable provider: 502');
is($r->{json}{status}, 'failed', 'failed');
is($r->{json}{attempt}, 3, 'after 3 attempts, none of which left');
$row = final_row($r);
is($row->{attempts}, 3, 'the row counts them');
is(scalar @{ history($r->{json}{id}) }, 2, 'the first two kept');
like($t->error_log, qr/wa send \Q$r->{json}{id}\E: attempt 1 failed .*attempt 2 in \d+ ms/,
     'the log says each retry and why');

# ---- too far away: 503, never at the provider --------------------------------

$r = $t->send_message({ to => '972502000001', text => 'tight first', client_ref => "tight-a-$$" },
                      path => '/send_tight');
is($r->{status}, 200, 'a channel of 1 send a second: the first goes');
my $bg = $t->dir . '/bg-tight';
my $ref = "tight-b-$$";
my $pid = fork // die;
if ($pid == 0) {
    $t->{down} = 1;
    my $x = $t->send_message({ to => '972502000002', text => 'tight second', client_ref => $ref },
                             path => '/send_tight');
    WaTest::spew($bg, $json->encode({ status => $x->{status}, json => $x->{json} }));
    POSIX::_exit(0);
}
sleep 0.2;
$r = $t->send_message({ to => '972502000002', text => 'tight second', client_ref => $ref },
                      path => '/send_tight');
is($r->{status}, 409, 'the same client_ref while its send waits for its turn: 409');
$r = $t->send_message({ to => '972502000003', text => 'tight third' }, path => '/send_tight');
is($r->{status}, 503, 'a send whose turn is past wa_send_queue_timeout: 503');
cmp_ok($r->{headers}{'retry-after'} // 0, '>=', 1, 'with Retry-After');
waitpid $pid, 0;
my $second = eval { $json->decode(WaTest::slurp($bg)) } // {};
is($second->{status}, 200, 'the waiting send went at its turn');
@m = mock_reqs(qr/tight (first|second)/);
cmp_ok($m[1]{at} - $m[0]{at}, '>=', 0.9, 'a second after the first');
sleep 0.5;
is(mock_got(qr/tight third/), 0, 'the refused one never reached the provider');
$t->wait_drained(10);
is($t->sql_value(q{SELECT count(*) FROM whatsapp_message WHERE body = 'tight third'}), 0,
   'and nothing was recorded for it');

# ---- pair spacing --------------------------------------------------------------

$r = $t->send_message({ to => '972503000001', text => 'pair one' }, path => '/send_pair');
my $t1 = time;
$r = $t->send_message({ to => '972503000001', text => 'pair two' }, path => '/send_pair');
is($r->{status}, 200, 'a second send to the same recipient');
my $t2 = time;
$r = $t->send_message({ to => '972503000002', text => 'pair other' }, path => '/send_pair');
is($r->{status}, 200, 'and one to another');
cmp_ok(time - $t2, '<', 0.5, 'the other recipient does not wait');
@m = mock_reqs(qr/pair (one|two)/);
cmp_ok($m[1]{at} - $m[0]{at}, '>=', 0.95, 'the same recipient waits pair=1s');

# ---- wa_status -------------------------------------------------------------------

$status = eval { $json->decode($t->http('GET', '/wa_status')->{content}) } // {};
is($status->{channels}{333333333}{pacing}{retries}, 9, 'wa_status: retries (2 + 2 + 2 + 1 + 1 + 1 above)');
cmp_ok($status->{channels}{333333333}{pacing}{rate_limited} // 0, '>=', 3, 'rate-limit refusals');
is($status->{channels}{444444444}{pacing}{rejected}, 1, 'sends refused for a too long wait');
is($status->{channels}{555555555}{pacing}{pair_ms}, 1000, 'a pair spacing');
my $prom = $t->http('GET', '/wa_status?format=prometheus')->{content};
like($prom, qr/^wa_send_channel_sends_total\{phone_number_id="$A",business="1"\} 250$/m, 'Prometheus: sends');
like($prom, qr/^wa_send_channel_queue\{phone_number_id="$A",business="1"\} 0$/m, 'the queue');
like($prom, qr/^wa_send_channel_retries_total\{phone_number_id="333333333",business="1"\} \d+$/m, 'retries');
like($prom, qr/^wa_send_channel_rate_limited_total\{phone_number_id="333333333",business="1"\} [1-9]/m,
     'rate-limit refusals');
like($prom, qr/^wa_send_channel_rate\{phone_number_id="$A",business="1"\} 20\.000$/m, 'the rate');

# ---- nginx stops with sends waiting -------------------------------------------

# in the background: (pid, file the answer is written to)
sub send_bg {
    my ($req, %o) = @_;
    my $out = $t->dir . '/bg-' . int(rand(1e9));
    my $pid = fork // die;
    if ($pid == 0) {
        $t->{down} = 1;
        my $x = $t->send_message($req, %o);
        WaTest::spew($out, $json->encode({ status => $x->{status}, json => $x->{json} }));
        POSIX::_exit(0);
    }
    return ($pid, $out);
}

sub bg_answer {
    my ($pid, $out) = @_;
    waitpid $pid, 0;
    return eval { $json->decode(WaTest::slurp($out)) } // {};
}

# a graceful stop (a reload's old workers, nginx -s quit) keeps the sends
# waiting for their turn and makes them at it
$t->send_message({ to => '972504000001', text => 'quit first' }, path => '/send_tight');
my @bg = send_bg({ to => '972504000002', text => 'quit waiting' }, path => '/send_tight');
sleep 0.3;
$t->stop_nginx;
my $quit = bg_answer(@bg);
is($quit->{status}, 200, 'graceful stop: a send waiting for its turn is still made');
is(mock_got(qr/quit waiting/), 1, 'it reached the provider');
is(final_row({ json => $quit->{json} })->{status}, 'sent', 'and its row is sent');

# a fast stop: a send waiting for its first call goes with the worker (not
# recorded, not sent); one waiting for a retry ends as its last attempt
$t->start_nginx(%nginx);
# (6 sends a minute: the second waits 10 s)
$t->send_message({ to => '972504000003', text => 'stop first' }, path => '/send_stop');
my @never = send_bg({ to => '972504000004', text => 'stop waiting' }, path => '/send_stop');
my @retry = send_bg({ to => '972504000005', text => 'FAIL_131000 stop retry' }, path => '/send_backoff');
ok($t->wait_for(sub { mock_got(qr/FAIL_131000 stop retry/) }, 5, 'the first call'),
   'a send refused once waits for its retry (3 s backoff)');
sleep 0.3;
my $master = delete $t->{nginx_pid};
kill 'TERM', $master;
$t->wait_for(sub { !kill 0, $master }, 10, 'nginx to stop');
bg_answer(@never);
bg_answer(@retry);
$t->wait_drained(10);
is(mock_got(qr/stop waiting/), 0, 'fast stop: the send waiting for its first call was not made');
is($t->sql_value(q{SELECT count(*) FROM whatsapp_message WHERE body = 'stop waiting'}), 0,
   'nor recorded');
my $stopped = $t->sql('SELECT * FROM whatsapp_message WHERE body = ?', 'FAIL_131000 stop retry')->[0] // {};
is($stopped->{status}, 'failed', 'the send waiting for its retry: its row ends failed, not pending');
is($stopped->{attempts}, 1, 'as its one attempt made');
is($stopped->{error_code}, 131000, 'with its error');
is(mock_got(qr/FAIL_131000 stop retry/), 1, 'and no second call');
like($t->error_log, qr/nginx stopped before its retry, recorded as its last attempt's "failed"/,
     'the log says so');

# ---- nginx -t -------------------------------------------------------------------

for my $bad ([ 'rate=fast', qr/wa_channel.*rate=fast/ ],
             [ 'rate=0r/s', qr/wa_channel.*rate=0r\/s/ ],
             [ 'pair=0', qr/wa_channel.*pair=0/ ]) {
    my ($rc, $out) = $t->nginx_t(ring_size => '4m', server => "location /s { wa_send; wa_api_base $url;
        wa_channel 1 business=1 token=x $bad->[0]; }");
    isnt($rc, 0, "nginx -t refuses $bad->[0]");
    like($out, $bad->[1], 'naming the directive and the parameter');
}
my ($rc, $out) = $t->nginx_t(ring_size => '4m', server => "location /s { wa_send; wa_api_base $url;
    wa_channel 1 business=1 token=x; wa_send_attempts 0; }");
like($out, qr/wa_send_attempts/, 'nginx -t refuses wa_send_attempts 0, naming it');

done_testing;
