#!/usr/bin/perl
# client_ref across hosts: two nginx "hosts" (each its own ring and writer)
# on one PostgreSQL, both with wa_send_idempotency_db. A key sent to both
# reaches the provider once; the second caller gets the first answer, or
# 409 while the first is in flight; a refused attempt is attempted again
# on the other host under the same id; a holder that died is "unknown"
# for everyone; the database down means 503 and nothing sent for keyed
# sends only; the Idempotency-Key header is the key when the body has none.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Time::HiRes qw(time sleep);
use WaTest;

my $a = WaTest->new;
$a->start_pg;
$a->migrate;
my $mock = $a->start_mock;

# host b: its own nginx, ring and writer; host a's database and mock
my $b = WaTest->new;
$b->{pg_port} = $a->{pg_port};
$b->{mock} = $mock;

my $db = "wa_send_idempotency_db \"host=127.0.0.1 port=$a->{pg_port} "
       . "dbname=postgres user=wa\";\n    wa_send_idempotency_db_timeout 3s;";

# one call per request: the attempts here are the callers' (automatic
# retries are t/46's), but in /send_auto (3 calls, 100 ms apart)
for my $h ($a, $b) {
    $h->start_nginx(http => "$db\n    wa_send_attempts 1;",
                    server => $h->default_locations . <<EOF);
        location /send_auto {
            wa_send;
            ${\ $mock->api_conf }
            wa_channel $WaTest::PHONE_ID business=1 token=$WaTest::TOKEN;
            wa_send_attempts 3;
            wa_send_retry_backoff 100ms;
        }
EOF
    $h->start_writer;
}

my $tag = $$ . int(time * 1000);
my $n = 0;

sub send_to {
    my ($h, $text, %o) = @_;
    my %req = (to => '+972501234567', text => $text);
    $req{client_ref} = $o{ref} if defined $o{ref};
    return $h->send_message(\%req, headers => $o{headers} // {});
}

sub mock_count {
    my ($text) = @_;
    return scalar grep { ($_->{body} // '') =~ /\Q$text\E/ } $mock->requests;
}

sub rows_of {
    my ($ref) = @_;
    return $a->sql('SELECT * FROM whatsapp_message WHERE client_ref = ?', $ref);
}

# ---- the same key on two hosts: one provider call, one answer -------------

{
    my $ref = "k1-$tag";
    my $text = "once-$tag";
    my $r1 = send_to($a, $text, ref => $ref);
    is $r1->{status}, 200, 'host a sends';
    my $r2 = send_to($b, $text, ref => $ref);
    is $r2->{status}, 200, 'host b: 200';
    is $r2->{content}, $r1->{content}, 'host b answers host a\'s answer, byte for byte';
    is mock_count($text), 1, 'the provider got it once';

    my $r3 = send_to($b, $text, ref => $ref);
    is $r3->{content}, $r1->{content}, 'and again, from host b\'s own zone';
    is mock_count($text), 1, 'still once';

    $a->wait_drained(10);
    $b->wait_drained(10);
    my $rows = rows_of($ref);
    is scalar @$rows, 1, 'one row';
    is $rows->[0]{status}, 'sent', 'sent';
    is $rows->[0]{local_id}, $r1->{json}{id}, 'host a\'s send';

    my $claim = $a->sql('SELECT * FROM wa_send_claim WHERE client_ref = ?', $ref)->[0];
    is $claim->{state}, 'answered', 'the claim holds the answer';
    is $claim->{verdict}, 's', 'verdict sent';
    is $claim->{local_id}, $r1->{json}{id}, 'under the first send\'s id';
}

# ---- in flight on one host: 409 on the other --------------------------------

{
    my $ref = "k2-$tag";
    my $text = "SLOW_1500 busy-$tag";
    my $pid = fork // die;
    if ($pid == 0) {
        my $r = send_to($a, $text, ref => $ref);
        POSIX::_exit($r->{status} == 200 ? 0 : 1);
    }
    $a->wait_for(sub { mock_count($text) }, 10, 'the slow send to reach the mock');
    my $r = send_to($b, $text, ref => $ref);
    is $r->{status}, 409, 'host b while host a\'s send is in flight: 409';
    waitpid $pid, 0;
    is $? >> 8, 0, 'host a\'s send: 200';
    $r = send_to($b, $text, ref => $ref);
    is $r->{status}, 200, 'host b once it is answered: 200, replayed' or diag "$r->{status} $r->{content}";
    is mock_count($text), 1, 'the provider got it once';
}

# ---- refused on host a, attempted again on host b, same id -----------------

{
    my $ref = "k3-$tag";
    my $text = "FAILONCE_131000_retry-$tag";
    my $r1 = send_to($a, $text, ref => $ref);
    is $r1->{status}, 502, 'host a: the provider refuses (retryable)';
    ok $r1->{json}{retryable}, 'retryable';
    my $r2 = send_to($b, $text, ref => $ref);
    is $r2->{status}, 200, 'host b attempts it again: 200';
    is $r2->{json}{id}, $r1->{json}{id}, 'under the same id';
    is $r2->{json}{attempt}, 2, 'attempt 2';
    is mock_count($text), 2, 'two provider calls, one per attempt';

    $a->wait_drained(10);
    $b->wait_drained(10);
    my $row = $b->send_row($r1->{json}{id});
    is $row->{status}, 'sent', 'the row: sent'
        or diag explain $a->sql('SELECT local_id, status, attempts, error_title FROM whatsapp_message WHERE client_ref = ?', $ref);
    is scalar @{ rows_of($ref) }, 1, 'one row for both attempts';

    my $r3 = send_to($a, $text, ref => $ref);
    is $r3->{status}, 200, 'host a afterwards: the answer of attempt 2';
    is $r3->{json}{id}, $r1->{json}{id}, 'same id';
    is mock_count($text), 2, 'not sent a third time';
}

# the same, in the worst order two writers can give: attempt 2's records
# before attempt 1's failed outcome, attempt 1's row still pending
{
    my $lid = "wa-order-$tag";
    open my $feed, '|-', "$WaTest::BUILD/wa-feed " . $a->ring . ' >/dev/null'
        or die "feed: $!";
    print $feed join "\n",
        "out_pending local_id=$lid business=1 phone=972501234567 client_ref=ko-$tag",
        "out_pending local_id=$lid business=1 phone=972501234567 client_ref=ko-$tag attempt=2",
        "out_result local_id=$lid business=1 status=sent wamid=wamid.order$tag attempt=2",
        "out_result local_id=$lid business=1 status=failed error_code=131000 retryable=1 attempt=1",
        "wait 10", '';
    close $feed or die "the feed failed\n";
    my $row = $a->send_row($lid);
    is $row->{status}, 'sent', 'attempt 1 failed after attempt 2 was sent: still sent';
    is $row->{attempts}, 2, 'at attempt 2';
    is $row->{provider_message_id}, "wamid.order$tag", 'with its wamid';
}

# ---- retried by nginx on host a, attempted again on host b ----------------

{
    my $ref = "k5-$tag";
    my $text = "FAILTIMES_3_131000_auto-$tag";
    my %req = (to => '+972501234567', text => $text, client_ref => $ref);
    my $r1 = $a->send_message(\%req, path => '/send_auto');
    is $r1->{status}, 502, 'host a: refused 3 times, its own retries included';
    is $r1->{json}{attempt}, 3, 'at attempt 3';
    my $r2 = send_to($b, $text, ref => $ref);
    is $r2->{status}, 200, 'host b attempts it again: 200' or diag "$r2->{status} $r2->{content}";
    is $r2->{json}{attempt}, 4, 'as attempt 4: the claim counted host a\'s retries';
    is mock_count($text), 4, 'four provider calls';
    ok($a->wait_for(sub {
        my $row = rows_of($ref)->[0];
        $row && $row->{status} eq 'sent' && $row->{attempts} == 4 }, 15, 'the row'),
       'the row ends sent, at attempt 4 (not left failed by a stale attempt 2)');
}

# ---- a holder that died: unknown for everyone ----------------------------

{
    my $ref = "k4-$tag";
    my $lid = "wa-dead-$tag";
    $a->sql(q{INSERT INTO wa_send_claim (business_id, client_ref, local_id,
              claimed_at) VALUES (1, ?, ?, now() - interval '1 hour')}, $ref, $lid);
    my $r = send_to($b, "never-$tag", ref => $ref);
    is $r->{status}, 504, 'a claim that outlived its send: 504' or diag "$r->{status} $r->{content}";
    is $r->{json}{status}, 'unknown', 'status unknown';
    is $r->{json}{id}, $lid, 'the holder\'s id';
    is mock_count("never-$tag"), 0, 'not sent';
    my $r2 = send_to($a, "never-$tag", ref => $ref);
    is $r2->{content}, $r->{content}, 'the other host: the same answer';
}

# ---- Idempotency-Key ---------------------------------------------------------

{
    my $key = "hk-$tag";
    my $text = "header-$tag";
    my $r1 = send_to($a, $text, headers => { 'Idempotency-Key' => $key });
    is $r1->{status}, 200, 'Idempotency-Key: sent';
    my $r2 = send_to($b, $text, headers => { 'Idempotency-Key' => $key });
    is $r2->{content}, $r1->{content}, 'the other host replays it';
    is mock_count($text), 1, 'once';
    $a->wait_drained(10);
    is $a->send_row($r1->{json}{id})->{client_ref}, $key, 'recorded as the client_ref';

    my $r3 = send_to($a, "differ-$tag", ref => 'one', headers => { 'Idempotency-Key' => 'two' });
    is $r3->{status}, 400, 'Idempotency-Key and client_ref that differ: 400';
    like $r3->{json}{error}, qr/Idempotency-Key/, 'names the header';
    my $r4 = send_to($a, "spaced-$tag", headers => { 'Idempotency-Key' => "bad key" });
    is $r4->{status}, 400, 'a key with a space: 400';
    is mock_count("differ-$tag") + mock_count("spaced-$tag"), 0, 'neither sent';
}

# ---- the database down: keyed sends 503, the others go ---------------------

{
    $_->stop_writer for $a, $b;
    $a->stop_pg('immediate');
    my $t0 = time;
    my $r = send_to($a, "down-$tag", ref => "k5-$tag");
    is $r->{status}, 503, 'database down: a keyed send gets 503';
    ok $r->{headers}{'retry-after'}, 'with Retry-After';
    cmp_ok time - $t0, "<", 4.5, "within wa_send_idempotency_db_timeout";
    is mock_count("down-$tag"), 0, 'and is not sent';
    my $r2 = send_to($a, "nokey-$tag");
    is $r2->{status}, 200, 'a send without a key still goes';

    $a->start_pg;
    sleep 1.2;              # a connection just found down is retried after 1 s
    my $r3;
    $a->wait_for(sub { $r3 = send_to($a, "back-$tag", ref => "k6-$tag");
                       $r3->{status} == 200 }, 15, 'the database back');
    is $r3->{status}, 200, 'the database back: keyed sends go again';
    like $a->error_log, qr/wa_send_idempotency_db: .*answer 503/,
         'the outage is logged';
    $_->start_writer for $a, $b;
}

# ---- configuration ---------------------------------------------------------

{
    my ($rc, $out) = $a->nginx_t(http => 'wa_send_idempotency_db "host=db.example dbname=x";');
    isnt $rc, 0, 'a host name: nginx -t fails';
    like $out, qr/wa_send_idempotency_db.*blocking/, 'and says why';
    ($rc, $out) = $a->nginx_t(http => 'wa_send_idempotency_db "host=10.0.0.5,/run/postgresql port=5432";');
    is $rc, 0, 'addresses and socket directories are fine' or diag $out;
    ($rc, $out) = $a->nginx_t(http => 'wa_send_idempotency_db "nonsense";');
    isnt $rc, 0, 'not a connection string: nginx -t fails';
}

unlike $a->error_log . $b->error_log, qr/\Q$WaTest::TOKEN\E/, 'no token logged';

done_testing;
