#!/usr/bin/perl
# wa_ring ... sync=on: a webhook's 200 and a send's provider call wait
# until the ring file is synced to disk. A preloaded shim
# (t/shim/sync_hook.c) wraps fdatasync/fsync/msync of the ring: it delays
# them, fails them, and writes down each one with its start and end, so
# the test sees that no 200 and no provider call comes before the sync
# that covers it returned, that one sync covers many requests (group
# commit), and that a failed sync answers 503 with CRITICAL and sends
# nothing. Without sync=on, nothing waits and nothing is synced.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use JSON::PP ();
use POSIX ();
use Test::More;
use Time::HiRes qw(sleep time);
use WaTest;
use WaPayload qw(wamid body value message);

my $SHIM = "$WaTest::BUILD/t/sync_hook.so";
-e $SHIM or BAIL_OUT("$SHIM is missing: run make first");

my $t = WaTest->new(preload => [$SHIM]);
$t->start_pg;
$t->migrate;
my $mock = $t->start_mock;
$t->start_writer;

my $hooks = $t->dir . '/sync-hook';
mkdir $hooks;
chmod 0777, $hooks;     # the workers run as nobody under root

sub hook_set {
    my ($name, $value) = @_;
    if (defined $value) {
        WaTest::spew("$hooks/$name.tmp", $value);
        chmod 0644, "$hooks/$name.tmp";
        rename "$hooks/$name.tmp", "$hooks/$name" or die "rename: $!";
    } else {
        unlink "$hooks/$name";
    }
}

# every sync of the ring so far: { pid, tid, start, end (s), err }
sub syncs {
    my @s;
    for (split /\n/, WaTest::slurp("$hooks/syncs")) {
        my ($pid, $tid, $start, $end, $err) = split / /;
        push @s, { pid => $pid, tid => $tid, start => $start / 1e6,
                   end => $end / 1e6, err => $err };
    }
    return @s;
}

sub log_mark { length $t->error_log }
sub log_since { substr($t->error_log, $_[0]) }

sub start_nginx {
    my (%o) = @_;
    $t->stop_nginx;
    $t->start_nginx(workers => $o{workers} // 2, ring_size => '4m',
                    ring_args => $o{ring_args} // 'sync=on',
                    http => $o{http} // '',
                    # the default locations, and these
                    server => $t->default_locations . ($o{server} // ''),
                    main => "env WA_SYNC_HOOK_DIR=$hooks;");
}

sub one_webhook {
    my ($id) = @_;
    my $body = body(value(
        contacts => [ { profile => { name => 'Sync' }, wa_id => '972501230000' } ],
        messages => [ message('text', id => $id, from => '972501230000') ]));
    my $t0 = time;
    my $r = $t->post_webhook($body);
    return ($r, $t0, time);
}

sub row_count {
    my (@ids) = @_;
    return $t->sql_value('SELECT count(*) FROM whatsapp_message
                           WHERE provider_message_id = ANY (?)', \@ids);
}

sub wait_rows {
    my ($n, @ids) = @_;
    $t->wait_for(sub { row_count(@ids) >= $n }, 15, "$n rows");
    return row_count(@ids);
}

my $thread_re = qr/^\d+ (\d+) /;

# ---- the configuration ---------------------------------------------------

{
    my ($rc, $out) = $t->nginx_t(ring_args => 'sync=maybe');
    isnt($rc, 0, 'nginx -t refuses sync=maybe');
    like($out, qr/"wa_ring": invalid parameter "sync=maybe"/, 'naming it');

    ($rc, $out) = $t->nginx_t(ring_args => 'thread_pool=wa');
    isnt($rc, 0, 'nginx -t refuses thread_pool= without sync=on');
    like($out, qr/"wa_ring": "thread_pool=" is only used with "sync=on"/,
         'and says why');

    ($rc, $out) = $t->nginx_t(ring_args => 'sync=on thread_pool=nosuch');
    isnt($rc, 0, 'nginx -t refuses a thread pool that is not declared');
    like($out, qr/unknown thread pool "nosuch"/, 'nginx names the pool');

    ($rc, $out) = $t->nginx_t(ring_args => 'sync=on thread_pool=wa',
                              main => 'thread_pool wa threads=2;');
    is($rc, 0, 'sync=on with a declared thread pool is accepted') or diag $out;

    # a ring in memory survives no power cut, synced or not
    SKIP: {
        my $fs = `stat -f -c %T /dev/shm 2>/dev/null` // '';
        skip '/dev/shm is not a tmpfs here', 3 unless $fs =~ /^tmpfs$/;
        my $shm = "/dev/shm/wa-t73-$$.ring";
        my $m = WaTest->new(ring_path => $shm);
        ($rc, $out) = $m->nginx_t(ring_args => 'sync=on');
        isnt($rc, 0, 'nginx -t refuses sync=on for a ring in /dev/shm');
        like($out, qr/"wa_ring": "sync=on" with the ring "\Q$shm\E" in memory \(tmpfs\): no sync makes it survive a power cut/,
             'and says why');
        ($rc, $out) = $m->nginx_t();
        is($rc, 0, 'the same ring without sync=on is accepted') or diag $out;
        $m->teardown;
        unlink $shm;
    }
}

# ---- (a) the 200 waits for the sync ----------------------------------------

start_nginx();
my @workers = $t->worker_pids;
like(WaTest::slurp("/proc/$workers[0]/maps"), qr/sync_hook\.so/,
     'the shim is mapped in the workers');

my $id = wamid();
my ($r, $t0, $t1) = one_webhook($id);
is($r->{status}, 200, 'sync=on: a webhook gets 200');
my @s = grep { $_->{start} >= $t0 - 0.001 && $_->{end} <= $t1 + 0.001 } syncs();
ok(@s >= 1, 'a sync of the ring ran between the POST and its answer');
is(scalar(grep { $_->{err} } @s), 0, 'and it succeeded');
ok(!grep({ $_->{tid} == $_->{pid} } @s),
   'in a thread of nginx\'s pool, not on the worker\'s event loop');
is(wait_rows(1, $id), 1, 'the message is stored');

hook_set(delay_ms => 400);
$id = wamid();
($r, $t0, $t1) = one_webhook($id);
is($r->{status}, 200, 'a disk that takes 400 ms per sync: 200');
ok($t1 - $t0 >= 0.4, sprintf('the answer took %.0f ms, at least the sync\'s 400',
                             ($t1 - $t0) * 1000));
@s = grep { $_->{start} >= $t0 - 0.001 && $_->{end} <= $t1 + 0.001 } syncs();
ok(@s >= 1 && $s[-1]{end} - $s[-1]{start} >= 0.4,
   'the sync it waited for returned before the answer arrived');

# the worker does not block while its sync runs
{
    my $pid = fork // die;
    if ($pid == 0) {
        one_webhook(wamid());
        POSIX::_exit(0);
    }
    sleep 0.1;
    my $s0 = time;
    my @st;
    # both workers: whichever got the webhook is mid-sync
    push @st, $t->http('GET', '/wa_status')->{status} for 1 .. 4;
    my $took = time - $s0;
    waitpid $pid, 0;
    is_deeply(\@st, [200, 200, 200, 200], 'wa_status answers during a sync');
    ok($took < 0.3, sprintf('4 wa_status requests during a 400 ms sync took '
                            . '%.0f ms: the event loop runs on', $took * 1000));
}

# ---- (b) a send calls the provider only after its record is on disk --------

{
    my $before = () = $mock->requests;
    my $s0 = time;
    my $send = $t->send_message({ to => '+972501234567', text => 'durable' });
    my $s1 = time;
    is($send->{status}, 200, 'sync=on: a send gets 200') or diag $send->{content};
    my @req = $mock->requests;
    is(scalar @req, $before + 1, 'the provider got one request');
    my ($sync) = grep { $_->{start} >= $s0 - 0.001 } syncs();
    ok($sync && $sync->{end} - $sync->{start} >= 0.4,
       'the pending record\'s sync took the shim\'s 400 ms');
    ok($sync && $req[-1]{at} >= $sync->{end},
       sprintf('the provider call came %.0f ms after that sync returned',
               $sync ? ($req[-1]{at} - $sync->{end}) * 1000 : -1));
    ok($s1 - $s0 >= 0.4, 'so the answer took at least 400 ms');
    my $row = $t->send_row($send->{json}{id});
    is($row->{status}, 'sent', 'the row is sent');
}

# ---- (c) group commit: one sync covers every record published meanwhile ---

hook_set(delay_ms => 200);
{
    my $n = 24;
    my $syncs_before = () = syncs();
    my @ids = map { wamid() } 1 .. $n;
    my $res = $t->dir . '/group';
    mkdir $res;
    my $g0 = time;
    my @kids;
    for my $i (0 .. $n - 1) {
        my $pid = fork // die;
        if ($pid == 0) {
            my ($r, $a, $b) = one_webhook($ids[$i]);
            WaTest::spew("$res/$i", "$r->{status} $a $b");
            POSIX::_exit(0);
        }
        push @kids, $pid;
    }
    waitpid $_, 0 for @kids;
    my $g1 = time;
    my @ans = map { [ split / /, WaTest::slurp("$res/$_") ] } 0 .. $n - 1;
    is(scalar(grep { $_->[0] == 200 } @ans), $n, "$n concurrent webhooks: all 200");
    ok(!grep({ $_->[2] - $_->[1] < 0.2 } @ans),
       'none answered before a 200 ms sync could return');
    my @g = (syncs())[$syncs_before .. scalar(syncs()) - 1];
    my $per_worker = 2 * (1 + int(($g1 - $g0) / 0.2));
    ok(@g < $n / 2, sprintf('%d syncs for %d requests in %.0f ms (at most %d '
                            . 'possible with one sync at a time per worker): '
                            . 'group commit', scalar @g, $n, ($g1 - $g0) * 1000,
                            $per_worker));
    ok(@g <= $per_worker, 'never more than one sync at a time per worker');
    is(wait_rows($n, @ids), $n, 'every message stored');
}

# ---- (d) a failed sync: 503, CRITICAL, nothing sent ------------------------

hook_set(delay_ms => undef);
for my $errno (qw(EIO ENOSPC)) {
    hook_set(fail => $errno);
    my $mark = log_mark();
    my $id = wamid();
    my ($r) = one_webhook($id);
    is($r->{status}, 503, "a sync that fails with $errno: the webhook gets 503");
    like(log_since($mark), qr/\[crit\].*CRITICAL: fdatasync failed.*records are not on disk/,
         'and a CRITICAL line');
    my $err = $errno eq 'EIO' ? 'Input/output error' : 'No space left on device';
    like(log_since($mark), qr/\Q$err\E/, "naming the error ($err)");

    my $before = () = $mock->requests;
    my $ref = "sync-fail-$errno-$$";
    my $send = $t->send_message({ to => '+972501234567', text => 'not durable',
                                  client_ref => $ref });
    is($send->{status}, 503, "a send whose record's sync fails ($errno): 503");
    is($send->{json}{status}, 'failed', 'answered failed');
    is($send->{json}{retryable}, JSON::PP::true(), 'and retryable');
    is(scalar(() = $mock->requests), $before, 'the provider was not called');
    my $row = $t->send_row($send->{json}{id});
    is($row->{status}, 'failed', 'the row ends failed, not pending');
    like($row->{error_title}, qr/not sent: the ring could not be synced/,
         'saying it was not sent');

    hook_set(fail => undef);
    $send = $t->send_message({ to => '+972501234567', text => 'not durable',
                               client_ref => $ref });
    is($send->{status}, 200, 'the disk is back: the same client_ref is sent');
    is($send->{json}{attempt}, 2, 'as its second attempt');
    is(scalar(() = $mock->requests), $before + 1, 'once');
    ($r) = one_webhook(wamid());
    is($r->{status}, 200, 'and webhooks get 200 again');
}

# ---- (e) the ring file deleted while its records wait for their sync -------

# One worker: the second request waits for the sync after the first's;
# meanwhile the ring is deleted and the worker's 1 s check detaches it.
# The record is in the deleted file, which wa-writer drains before it lets
# go: the worker syncs that file for it, and it gets its 200.
start_nginx(workers => 1);
hook_set(delay_ms => 1500);
{
    my $mark = log_mark();
    my ($a, $b) = (wamid(), wamid());
    my $res = $t->dir . '/deleted';
    mkdir $res;
    my @kids;
    for my $id ($a, $b) {
        my $pid = fork // die;
        if ($pid == 0) {
            my ($r) = one_webhook($id);
            WaTest::spew("$res/$id", $r->{status});
            POSIX::_exit(0);
        }
        push @kids, $pid;
        sleep 0.2;
    }
    unlink $t->ring;
    waitpid $_, 0 for @kids;
    like(log_since($mark), qr/wa_ring .* (deleted|changed)/,
         'the worker saw the ring deleted while the sync ran');
    is(WaTest::slurp("$res/$a"), 200, 'the request whose sync was running: 200');
    is(WaTest::slurp("$res/$b"), 200, 'the one waiting for the next sync: 200, '
       . 'its file synced although detached');
    is(wait_rows(2, $a, $b), 2, 'both stored: the writer drained the deleted file');
}
hook_set(delay_ms => undef);

# ---- (f) off by default: nothing waits, nothing syncs ----------------------

start_nginx(ring_args => '');
hook_set(delay_ms => 400);
{
    my $before = () = syncs();
    my $id = wamid();
    my ($r, $t0, $t1) = one_webhook($id);
    is($r->{status}, 200, 'without sync=on: 200');
    ok($t1 - $t0 < 0.3, sprintf('at once (%.0f ms), not after a 400 ms sync',
                                ($t1 - $t0) * 1000));
    my $send = $t->send_message({ to => '+972501234567', text => 'fast' });
    is($send->{status}, 200, 'a send too');
    is(scalar(() = syncs()), $before, 'and the ring was never synced');
    is(wait_rows(1, $id), 1, 'stored all the same');
}
hook_set(delay_ms => undef);

# ---- (g) two hosts sharing client_refs (wa_send_idempotency_db) ------------

# Host b's sync fails: its send is not attempted, and the claim in
# PostgreSQL learns that it failed, so host a sends the same client_ref as
# its next attempt.
{
    my $db = "wa_send_idempotency_db \"host=127.0.0.1 port=$t->{pg_port} "
           . "dbname=postgres user=wa\";";
    start_nginx(http => $db);
    my $b = WaTest->new(preload => [$SHIM]);
    $b->{pg_port} = $t->{pg_port};
    $b->{mock} = $mock;
    $b->start_nginx(ring_size => '4m', ring_args => 'sync=on', http => $db,
                    main => "env WA_SYNC_HOOK_DIR=$hooks;");
    $b->start_writer;

    my $ref = "sync-claim-$$";
    my $before = () = $mock->requests;
    hook_set(fail => 'EIO');
    my $send = $b->send_message({ to => '+972501234567', text => 'two hosts',
                                  client_ref => $ref });
    hook_set(fail => undef);
    is($send->{status}, 503, 'host b, its sync failing: 503');
    is(scalar(() = $mock->requests), $before, 'nothing sent');
    my $again = $t->send_message({ to => '+972501234567', text => 'two hosts',
                                   client_ref => $ref });
    is($again->{status}, 200, 'host a sends the same client_ref') or diag $again->{content};
    is($again->{json}{attempt}, 2, 'as its second attempt');
    is($again->{json}{id}, $send->{json}{id}, 'under the same id');
    is(scalar(() = $mock->requests), $before + 1, 'the provider got it once');
    # two rings, two writers: host b's outcome for attempt 1 may be
    # written before or after host a's attempt 2; the row ends sent
    my $q = 'SELECT status, attempts FROM whatsapp_message WHERE local_id = ?';
    $t->wait_for(sub {
        my $r = $t->sql($q, $again->{json}{id});
        @$r == 1 && $r->[0]{status} eq 'sent';
    }, 15, 'the row sent');
    my $rows = $t->sql($q, $again->{json}{id});
    is(scalar @$rows, 1, 'one row');
    is($rows->[0]{status}, 'sent', 'sent');
    is($rows->[0]{attempts}, 2, 'its attempts: 2');
    delete $b->{mock};      # the mock is host a's, which goes on
    $b->teardown;
}

# ---- (h) nginx -s quit while a request waits for its sync -----------------

# The worker shuts down gracefully: the sync in flight keeps it alive (its
# timer is not cancelable), and the request still gets its 200.
start_nginx();
hook_set(delay_ms => 1000);
{
    my $id = wamid();
    my $res = $t->dir . '/quit';
    my $pid = fork // die;
    if ($pid == 0) {
        my ($r) = one_webhook($id);
        WaTest::spew($res, $r->{status});
        POSIX::_exit(0);
    }
    sleep 0.3;
    my $master = delete $t->{nginx_pid};
    kill 'QUIT', $master;
    waitpid $pid, 0;
    is(WaTest::slurp($res), 200, 'nginx -s quit during the sync: the waiting '
       . 'webhook still gets its 200');
    ok($t->wait_for(sub { !kill 0, $master }, 10, 'nginx exit'),
       'and nginx exits after it');
    is(wait_rows(1, $id), 1, 'stored');
}
hook_set(delay_ms => undef);

# ---- (i) a media upload, as a send: the POST only once its record is on disk

{
    start_nginx(workers => 1, server => <<EOF);
        location /upload {
            wa_media_upload;
            ${\ $mock->api_conf }
            wa_channel $WaTest::PHONE_ID business=1 token=$WaTest::TOKEN;
        }
EOF
    my $file = $t->dir . '/sync-upload.pdf';
    WaTest::spew($file, "%PDF-1.4\n" . ('x' x 5000));
    my $upload = sub {
        my $out = $t->dir . '/upload-answer';
        my $code = qx{curl -s -o $out -w '%{http_code}' -X POST -H 'Content-Type: application/pdf' -H 'Expect:' --data-binary \@$file 'http://127.0.0.1:${\ $t->port }/upload?filename=offer.pdf'};
        return ($code, eval { JSON::PP::decode_json(WaTest::slurp($out)) } // {});
    };
    my $is_upload = sub { $_[0]{method} eq 'POST' && $_[0]{path} =~ m{/media$} };
    my $uploads = sub { scalar grep { $is_upload->($_) } $mock->requests };
    my $row = sub {
        my ($id) = @_;
        my $r;
        $t->wait_for(sub {
            $r = $t->sql('SELECT * FROM wa_media_upload WHERE local_id = ?', $id)->[0];
            $r && $r->{status} ne 'pending' }, 15, "upload row $id");
        return $r;
    };

    hook_set(delay_ms => 400);
    my $before = $uploads->();
    my $s0 = time;
    my ($code, $a) = $upload->();
    is($code, 200, 'sync=on: an upload gets 200') or diag explain $a;
    is($uploads->(), $before + 1, 'the provider got the file');
    my ($sync) = grep { $_->{start} >= $s0 - 0.001 } syncs();
    my ($req) = grep { $is_upload->($_) } reverse $mock->requests;
    ok($sync && $req && $req->{at} >= $sync->{end},
       sprintf('the upload came %.0f ms after its record\'s sync returned',
               $sync && $req ? ($req->{at} - $sync->{end}) * 1000 : -1));
    is($row->($a->{id})->{status}, 'uploaded', 'the row is uploaded');

    hook_set(delay_ms => undef);
    hook_set(fail => 'EIO');
    $before = $uploads->();
    ($code, $a) = $upload->();
    is($code, 503, "an upload whose record's sync fails: 503") or diag explain $a;
    is($a->{status}, 'failed', 'answered failed');
    is($a->{retryable}, JSON::PP::true(), 'and retryable');
    is($uploads->(), $before, 'the provider was not called');
    my $r = $row->($a->{id});
    is($r->{status}, 'failed', 'the row ends failed, not pending');
    like($r->{error_title} // '', qr/not uploaded: the ring could not be synced/,
         'saying it was not uploaded');
    hook_set(fail => undef);
}

# ---- (j) a paced channel's calls stay an interval apart after a slow sync --
# the sends took their turns 100 ms apart, then waited for their records'
# syncs; a sync releases every send it covered at once

{
    start_nginx(workers => 1, server => <<EOF);
        location /send_paced {
            wa_send;
            ${\ $mock->api_conf }
            wa_channel $WaTest::PHONE_ID business=1 token=$WaTest::TOKEN rate=10r/s;
        }
EOF
    hook_set(delay_ms => 400);
    my $tag = 'paced-' . int(time * 1000);
    my @kids = map { $t->send_in_child({ to => '+972501234567', text => "$tag $_" },
                                        path => '/send_paced') } 1 .. 4;
    my $ok = 0;
    for (@kids) { waitpid $_, 0; $ok++ if $? == 0 }
    hook_set(delay_ms => undef);
    is($ok, 4, 'four sends at once on a channel of 10/s, each waiting for a 400 ms sync: 200');
    my @at = sort { $a <=> $b } map { $_->{at} }
             grep { ($_->{body} // '') =~ /\Q$tag\E/ } $mock->requests;
    is(scalar @at, 4, 'the provider got the four');
    my @gaps = map { $at[$_] - $at[$_ - 1] } 1 .. $#at;
    my ($closest) = sort { $a <=> $b } @gaps;
    ok(defined $closest && $closest >= 0.09,
       sprintf('an interval (100 ms) apart at the provider, although a sync released '
               . 'several at once: gaps %s ms', join ' ', map { sprintf '%.0f', $_ * 1000 } @gaps));
    ok(2 <= grep({ $_->{start} >= $at[0] - 1.5 } syncs()) ,
       'the sends waited for more than one sync') or diag scalar syncs();
}

done_testing;
