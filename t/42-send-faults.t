#!/usr/bin/perl
# The send path when the provider or nginx misbehaves: every send ends with
# the right outcome, none is sent twice, none stays pending, none is stuck.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use JSON::PP;
use POSIX ();
use Time::HiRes qw(time sleep);
use WaTest;

my $t = WaTest->new;
$t->start_pg;
$t->migrate;
my $mock = $t->start_mock;
my $url = $mock->url;
my $phone = '972501234567';
my $closed = WaTest::free_port();     # nobody listens there

# one call per request: these are the answers a refusal gives the caller,
# and the attempts the caller makes again with its client_ref (automatic
# retries are t/46's)
my $locations = "wa_send_attempts 1;\n" . $t->default_locations . <<EOF;
        location /send_short {
            wa_send;
            wa_api_base $url;
            wa_channel $WaTest::PHONE_ID business=1 token=$WaTest::TOKEN;
            wa_send_timeout 1s;
            wa_send_shutdown_timeout 1s;
        }
        location /send_narrow {
            wa_send;
            wa_api_base $url;
            wa_channel $WaTest::PHONE_ID business=1 token=$WaTest::TOKEN;
            wa_send_concurrency 2;
        }
        location /send_unreachable {
            wa_send;
            wa_api_base http://127.0.0.1:$closed;
            wa_channel $WaTest::PHONE_ID business=1 token=$WaTest::TOKEN;
        }
        location /send_exit {
            wa_send;
            wa_api_base $url;
            wa_channel $WaTest::PHONE_ID business=1 token=$WaTest::TOKEN;
            wa_send_timeout 20s;
            wa_send_shutdown_timeout 1s;
        }
EOF
my %nginx = (workers => 1, ring_size => '1m', server => $locations);
$t->start_nginx(%nginx);
$t->start_writer;

sub row { $t->send_row(@_) }

sub row_by_body {
    my ($body) = @_;
    $t->wait_for(sub {
        ($t->sql_value('SELECT status FROM whatsapp_message WHERE body = ?', $body) // 'pending')
            ne 'pending' }, 15, "row '$body'");
    return $t->sql('SELECT * FROM whatsapp_message WHERE body = ?', $body)->[0] // {};
}

sub mock_got { my ($re) = @_; scalar grep { $_->{body} =~ $re } $mock->requests }

# in the background: (pid, file the answer is written to)
sub send_bg {
    my ($req, %o) = @_;
    my $out = $t->dir . '/bg-' . int(rand(1e9));
    my $pid = fork // die;
    if ($pid == 0) {
        $t->{down} = 1;
        my $r = $t->send_message($req, %o);
        open my $fh, '>', $out;
        print $fh encode_json({ status => $r->{status}, json => $r->{json} });
        close $fh;
        POSIX::_exit(0);
    }
    return ($pid, $out);
}

sub bg_answer {
    my ($pid, $out) = @_;
    waitpid $pid, 0;
    open my $fh, '<', $out or return {};
    local $/;
    return decode_json(<$fh>);
}

# ---- 3. a reused connection that dies: the POST is not sent again ------------

my $r = $t->send_message({ to => $phone, text => 'warm the connection' });
is($r->{status}, 200, 'a first send opens a kept-alive connection');
$r = $t->send_message({ to => $phone, text => 'DROP_reused' });
is(mock_got(qr/DROP_reused/), 1,
   'a request whose kept-alive connection died unanswered reached the provider once');
my ($req) = grep { $_->{body} =~ /DROP_reused/ } $mock->requests;
ok($req->{n} > 1, 'and it rode a reused connection');
is($r->{status}, 502, 'answered 502');
is($r->{json}{status}, 'unknown', 'outcome unknown: the provider may have it');
is($r->{json}{retryable}, JSON::PP::false(), 'and nobody is told to retry');
like($r->{json}{error}{title} // '', qr/sending it again was refused/,
     "libcurl's own re-send was refused, and the answer says so");
is(row($r->{json}{id})->{status}, 'unknown', 'the row says unknown');

# ---- 4. the request left, no whole answer: unknown, never failed -------------

for my $case ([ 'DROP_fresh', 'a dropped connection' ],
              [ 'TRUNC_half', 'a truncated 200' ],
              [ 'HUGE_answer', 'an answer over 256 KB' ]) {
    my ($text, $name) = @$case;
    $r = $t->send_message({ to => $phone, text => $text });
    is($r->{status}, 502, "$name: 502");
    is($r->{json}{status}, 'unknown', "$name: outcome unknown");
    is($r->{json}{retryable}, JSON::PP::false(), "$name: not retryable");
    my $row = row($r->{json}{id});
    is($row->{status}, 'unknown', "$name: row unknown");
    ok(!$row->{retryable}, "$name: row not retryable");
    is(mock_got(qr/\Q$text\E/), 1, "$name: sent once");
}

# a connection the provider closed after answering is not reused blindly
$r = $t->send_message({ to => $phone, text => 'CLOSE_AFTER_one' });
is($r->{status}, 200, 'an answer, then the provider closes the connection');
sleep 0.2;
$r = $t->send_message({ to => $phone, text => 'after the close' });
is($r->{status}, 200, 'the next send goes out on a new connection: 200');
is(mock_got(qr/after the close/), 1, 'once');

# nothing left: failed, and safe to retry
$r = $t->send_message({ to => $phone, text => 'nowhere' }, path => '/send_unreachable');
is($r->{status}, 502, 'provider unreachable (connection refused): 502');
is($r->{json}{status}, 'failed', 'failed: no byte of it left');
is($r->{json}{retryable}, JSON::PP::true(), 'and retryable');
is(row($r->{json}{id})->{status}, 'failed', 'the row says failed');

# ---- 6. a provider body that is not JSON: the answer still is ----------------

my $ref = "badjson-$$";
$r = $t->send_message({ to => $phone, text => 'BADJSON_x', client_ref => $ref });
is($r->{status}, 502, 'provider 502 with a body that is not JSON: 502');
ok(eval { decode_json($r->{content}); 1 }, 'the answer is valid JSON')
    or diag($r->{content});
ok(!exists $r->{json}{error}{provider}, 'without the provider body pasted in');
is($r->{json}{status}, 'failed', 'failed (a 5xx refusal)');
my $again = $t->send_message({ to => $phone, text => 'BADJSON_x', client_ref => $ref });
ok(eval { decode_json($again->{content}); 1 }, 'the same client_ref again: valid JSON too');
is($again->{json}{attempt}, 2, 'a refusal may be sent again: its second attempt');

# ---- 8. a client_ref whose send WhatsApp refused may be sent again ----------------

$ref = "again-$$";
my $first = $t->send_message({ to => $phone, text => 'FAILONCE_130429_again', client_ref => $ref });
is($first->{status}, 502, 'refused by the provider (rate limit): 502');
is($first->{json}{retryable}, JSON::PP::true(), 'retryable');
is(row($first->{json}{id})->{status}, 'failed', 'the row says failed');
my $second = $t->send_message({ to => $phone, text => 'FAILONCE_130429_again', client_ref => $ref });
is($second->{status}, 200, 'the same client_ref once the provider is back: sent');
is($second->{json}{id}, $first->{json}{id}, 'as a new attempt of the same send (same id)');
is($second->{json}{attempt}, 2, 'its second attempt');
my $third = $t->send_message({ to => $phone, text => 'FAILONCE_130429_again', client_ref => $ref });
is($third->{status}, 200, 'once accepted, a repeat gets the answer again');
is($third->{json}{wamid}, $second->{json}{wamid}, 'the same wamid');
is(mock_got(qr/FAILONCE_130429_again/), 2, 'two provider calls: the refused one and the accepted one');
ok($t->wait_for(sub {
    my $row = $t->sql('SELECT * FROM whatsapp_message WHERE local_id = ?', $first->{json}{id})->[0];
    $row && $row->{status} eq 'sent' }, 10, 'the row to be sent'), 'the row ends sent');
my $rows = $t->sql('SELECT * FROM whatsapp_message WHERE client_ref = ?', $ref);
is(scalar @$rows, 1, 'one row for the client_ref');
is($rows->[0]{attempts}, 2, 'that counts two attempts');
is($rows->[0]{provider_message_id}, $second->{json}{wamid}, 'with the accepted wamid');
ok(!defined $rows->[0]{error_code}, 'and no error left from the refused attempt');

# an unknown outcome is never attempted again: WhatsApp may have it
$ref = "unknown-$$";
$first = $t->send_message({ to => $phone, text => 'DROP_unknown_ref', client_ref => $ref });
is($first->{json}{status}, 'unknown', 'a dropped connection: unknown');
$second = $t->send_message({ to => $phone, text => 'DROP_unknown_ref', client_ref => $ref });
is($second->{json}{status}, 'unknown', 'the same client_ref again: the unknown answer');
is(mock_got(qr/DROP_unknown_ref/), 1, 'and no second provider call');

# ---- 10. wa_send_concurrency counts the location's own sends --------------------

my @slow = map { [ send_bg({ to => $phone, text => "SLOW_1500 wide $_" }) ] } 1 .. 2;
sleep 0.5;
$r = $t->send_message({ to => $phone, text => 'narrow while /send is busy' },
                      path => '/send_narrow');
is($r->{status}, 200, "another location's sends do not count against wa_send_concurrency");
bg_answer(@$_) for @slow;
@slow = map { [ send_bg({ to => $phone, text => "SLOW_1500 narrow $_" }, path => '/send_narrow') ] } 1 .. 2;
sleep 0.5;
$r = $t->send_message({ to => $phone, text => 'narrow third' }, path => '/send_narrow');
is($r->{status}, 503, 'its own sends do: the third is refused');
bg_answer(@$_) for @slow;

# ---- 7. a worker killed mid-send: its client_ref is not stuck ------------------

$ref = "killed-$$";
my ($kid, $kout) = send_bg({ to => $phone, text => 'SLOW_3000 killed', client_ref => $ref },
                           path => '/send_short');
$t->wait_for(sub { mock_got(qr/SLOW_3000 killed/) }, 5, 'the send reached the mock');
my ($worker) = $t->worker_pids;
kill 'KILL', $worker;
bg_answer($kid, $kout);
$t->wait_for(sub { my @w = $t->worker_pids; @w && $w[0] != $worker }, 10, 'a new worker');
$r = $t->send_message({ to => $phone, text => 'SLOW_3000 killed', client_ref => $ref },
                      path => '/send_short');
is($r->{status}, 409, 'right after: still in flight as far as anyone knows (409)');
$t->wait_for(sub {
    $t->send_message({ to => $phone, text => 'SLOW_3000 killed', client_ref => $ref },
                     path => '/send_short')->{status} != 409 }, 15, 'the entry to expire');
$r = $t->send_message({ to => $phone, text => 'SLOW_3000 killed', client_ref => $ref },
                      path => '/send_short');
is($r->{status}, 504, 'past its longest life the send is known interrupted: 504, not 409 forever');
is($r->{json}{status}, 'unknown', 'outcome unknown');
like($r->{json}{error}{title} // '', qr/interrupted/, 'the answer says why');
is(mock_got(qr/SLOW_3000 killed/), 1, 'and it was not sent again');
is(row($r->{json}{id})->{status}, 'unknown', 'its row is unknown, not pending forever');

# the same for a second attempt: its outcome is that attempt's, not a
# stale first one the writer would ignore
$ref = "killed-again-$$";
$r = $t->send_message({ to => $phone, text => 'FAIL_130429 first', client_ref => $ref },
                      path => '/send_short');
is($r->{json}{status}, 'failed', 'a first attempt refused');
($kid, $kout) = send_bg({ to => $phone, text => 'SLOW_3000 killed again', client_ref => $ref },
                        path => '/send_short');
$t->wait_for(sub { mock_got(qr/SLOW_3000 killed again/) }, 5, 'the second attempt reached the mock');
($worker) = $t->worker_pids;
kill 'KILL', $worker;
bg_answer($kid, $kout);
$t->wait_for(sub { my @w = $t->worker_pids; @w && $w[0] != $worker }, 10, 'a new worker');
$t->wait_for(sub {
    $t->send_message({ to => $phone, text => 'SLOW_3000 killed again', client_ref => $ref },
                     path => '/send_short')->{status} != 409 }, 15, 'the entry to expire');
$r = $t->send_message({ to => $phone, text => 'SLOW_3000 killed again', client_ref => $ref },
                      path => '/send_short');
is($r->{status}, 504, 'a second attempt killed mid-send: 504 once past its life');
ok($t->wait_for(sub {
    ($t->sql_value('SELECT status FROM whatsapp_message WHERE client_ref = ?', $ref) // '')
        eq 'unknown' }, 10, 'row unknown'), 'its row is unknown, not pending forever');
is($t->sql_value('SELECT attempts FROM whatsapp_message WHERE client_ref = ?', $ref), 2,
   'after its second attempt');

# ---- 5. nginx stopping: every send in flight gets an outcome --------------------

# graceful (nginx -s quit, systemctl stop): answered within the shutdown timeout
my ($qpid, $qout) = send_bg({ to => $phone, text => 'SLOW_8000 quit' }, path => '/send_exit');
$t->wait_for(sub { mock_got(qr/SLOW_8000 quit/) }, 5, 'the send reached the mock');
my $master = $t->{nginx_pid};
my $t0 = time;
kill 'QUIT', $master;
my $quit = bg_answer($qpid, $qout);
my $took = time - $t0;
is($quit->{status}, 504, 'graceful stop: the send in flight is answered 504');
is($quit->{json}{status}, 'unknown', 'outcome unknown');
ok($took < 4, sprintf('within wa_send_shutdown_timeout, well before a 5 s kill (%.1f s)', $took));
ok($t->wait_for(sub { !kill 0, $master }, 5, 'nginx exit'), 'and nginx exits');
delete $t->{nginx_pid};
is(row_by_body('SLOW_8000 quit')->{status}, 'unknown', 'its row says unknown');

# fast (nginx -s stop): no answer can go out, the outcome is still recorded
$t->start_nginx(%nginx);
my ($spid, $sout) = send_bg({ to => $phone, text => 'SLOW_8000 stop' }, path => '/send_exit');
$t->wait_for(sub { mock_got(qr/SLOW_8000 stop/) }, 5, 'the send reached the mock');
$master = $t->{nginx_pid};
kill 'TERM', $master;
bg_answer($spid, $sout);
ok($t->wait_for(sub { !kill 0, $master }, 5, 'nginx exit'), 'fast stop: nginx exits');
delete $t->{nginx_pid};
is(row_by_body('SLOW_8000 stop')->{status}, 'unknown',
   'the send in flight is recorded unknown, not left pending');
like($t->error_log, qr/nginx stopped while the provider call was in flight, recorded as unknown/,
     'and the log says so');

# ---- configuration: timeouts, the CA file, the ring's size ----------------------

for my $d ('wa_send_timeout 0;', 'wa_send_connect_timeout 0;') {
    my ($rc, $out) = $t->nginx_t(%nginx, server => $locations . "location /z { wa_send; $d wa_api_base $url; wa_channel 1 business=1 token=x; }");
    my ($name) = $d =~ /^(\S+)/;
    isnt($rc, 0, "nginx -t refuses $d");
    like($out, qr/"\Q$name\E" directive must be greater than 0/, 'naming the directive');
}
my ($rc, $out) = $t->nginx_t(%nginx, http => 'wa_ssl_trusted_certificate /nonexistent/ca.pem;');
isnt($rc, 0, 'nginx -t refuses a CA file it cannot read');
like($out, qr/wa_ssl_trusted_certificate.*nonexistent/, 'naming the directive and the file');

($rc, $out) = $t->nginx_t(%nginx, ring_size => '2m');
isnt($rc, 0, 'nginx -t refuses a wa_ring size= other than the ring file\'s');
like($out, qr/"wa_ring": .*1048576 bytes.*not size=2097152/, 'naming the directive and both sizes');

$t->start_nginx(%nginx);
my @before = $t->worker_pids;
spew_conf(%nginx, ring_size => '2m');
kill 'HUP', $t->{nginx_pid};
sleep 1.5;
is_deeply([ sort { $a <=> $b } $t->worker_pids ], [ sort { $a <=> $b } @before ],
          'a reload to another ring size is refused: the workers stay')
    or diag("master $t->{nginx_pid}: " . `ps -ef | grep nginx | grep -v grep` . WaTest::tail($t->error_log, 6));
like($t->error_log, qr/"wa_ring": .*not size=2097152/, 'and the error log says why');
$r = $t->send_message({ to => $phone, text => 'after the refused reload' });
is($r->{status}, 200, 'sends still work on the running configuration');

sub spew_conf {
    my (%o) = @_;
    open my $fh, '>', $t->dir . '/nginx.conf' or die;
    print $fh $t->nginx_conf(%o);
    close $fh;
}

unlike($t->error_log, qr/signal 11|exited on signal (?!9)/, 'no worker crashed');

done_testing();
