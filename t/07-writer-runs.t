#!/usr/bin/perl
# Runs written by one set statement (--runs 2: every run; "runs on" below)
# leave exactly what one call per record (--runs 0, "runs off") leaves: the
# same leads, filled in the same way, the same messages linked to the same
# leads, the same dead letters. The same script of records is fed once per
# mode, each under its own business, over the same pre-existing leads, and
# the two businesses are compared; the cases the set path treats apart are
# also checked one by one.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use WaTest;

my $t = WaTest->new(pg_settings => [ 'track_functions=pl' ]);
$t->start_pg;
$t->migrate;

# leads the CRM had before: one per case the set path cannot take as is
for my $b (1, 2) {
    $t->dbh->do("INSERT INTO leads (business_id, phone, wa_user_id, name) VALUES
        ($b, '+972500000001', NULL, 'Plus'),          -- a '+' phone
        ($b, NULL, 'U-ONLY', 'No phone yet'),         -- known by wa_user_id alone
        ($b, '972500000002', 'U-HELD', 'Holder'),     -- holds a wa_user_id
        ($b, '972500000003', NULL, NULL),             -- no name yet
        ($b, '972500000015', NULL, 'No uid'),         -- no wa_user_id yet
        ($b, '972500000004', 'U-FULL', 'Full')        -- nothing to fill in");
}

my $P = 'phone_number_id=106540352242922 msg_type=text timestamp=1764037800';

# parts, each drained by a writer started after it is in the ring, so each
# is read as one batch: a refused run makes the rest of its batch go record
# by record, which must not hide the other parts from the set path
sub script {
    my ($b) = @_;
    my $in = sub { "in business=$b $P " . join(' ', @_) . "\n" };
    my $st = sub { "status business=$b phone_number_id=106540352242922 @_\n" };
    my $out = sub { my ($l, $f) = split ' ', $_[0], 2;
                    "out_pending business=$b local_id=$l source=crm msg_type=text body=out.$l $f\n" };
    my $res = sub { my ($l, $f) = split ' ', $_[0], 2; "out_result business=$b local_id=$l $f\n" };
    my $full = $t->sql_value("SELECT id FROM leads WHERE business_id = ? AND phone = '972500000004'", $b);
    my $foreign = $t->sql_value("SELECT id FROM leads WHERE business_id = ? AND phone = '972500000004'", 3 - $b);
    return (join('',
        # a receipt before its message: parked, then cleared by the run
        "status business=$b wamid=w.pending status=read timestamp=1764037800\n",
        $in->('phone=972500000001 wamid=w.plus name=X body=plus'),
        $in->('phone=972500000005 wa_user_id=U-ONLY name=Y wamid=w.uidonly body=a'),
        $in->('phone=972500000006 wa_user_id=U-HELD wamid=w.held body=b'),
        $in->('phone=972500000003 name=Named wamid=w.noname body=c'),
        $in->('phone=972500000015 wa_user_id=U-FILL wamid=w.fill body=c2'),
        $in->('phone=972500000007 wamid=w.new1 body=d'),
        $in->('phone=972500000007 wa_user_id=U-NEW name=Late wamid=w.new2 body=e'),
        $in->('phone=972500000008 name=First wamid=w.first body=f'),
        $in->('phone=972500000008 name=Second wamid=w.second body=g'),
        $in->('wa_user_id=U-NOPHONE name=Hidden wamid=w.nophone body=h'),
        $in->('wa_user_id=U-NOPHONE wamid=w.nophone2 body=h2'),
        $in->('phone=%2B972%2050-000-0009 wamid=w.format body=i'),
        $in->('phone=972500000010 wamid=w.dup body=one'),
        $in->('phone=972500000010 wamid=w.dup body=two'),
        $in->('phone=972500000004 wa_user_id=U-FULL name=Full wamid=w.full body=j'),
        # what a text rendering would have to quote: the bytes go as they are
        $in->('phone=972500000016 wamid=w.quote name=%22Q%22%2C%7B%7D body=%22%7B%7D%2C%5C%27NULL%20%28x%29%0A'),
        $in->('phone=972500000011 wamid=w.pending body=k'),
        "status business=$b wamid=w.plus status=delivered timestamp=1764037801\n"),
        join('',
        # a second run: a replay, and one record PostgreSQL refuses
        $in->('phone=972500000001 wamid=w.plus body=replay'),
        $in->('phone=972500000012 wamid=w.before body=l'),
        $in->('phone=972500000013 wamid=w.bad body=m timestamp=not-a-number'),
        $in->('phone=972500000014 wamid=w.after body=n')),
        # sends and their outcomes (one statement each), for the receipts
        join('', (map {
            "out_pending business=$b local_id=L$_ phone=97250000002$_ source=crm"
          . " msg_type=text body=out$_ received_ms=1764037800000\n"
          . ($_ == 7 ? '' : "out_result business=$b local_id=L$_ status=sent wamid=o.$_"
          . " http_status=200 received_ms=1764037800500\n")
        } 1 .. 7),
        # a new phone
        $out->('L9 phone=972500000029 received_ms=1764037800000')),
        # sends whose leads are known, their outcomes among them: one run
        join('',
        $st->('wamid=o.20 callback_data=L20 status=delivered timestamp=1764037850'),
        $out->("L20 phone=972500000021 lead_id=$full received_ms=1764037800000"),
        $out->('L21 phone=972500000022 client_ref=REF-A received_ms=1764037800000'),
        $res->('L20 status=sent wamid=o.20 received_ms=1764037800600'),
        $out->('L22 phone=972500000023 client_ref=REF-A received_ms=1764037800000'),
        $out->('L1 phone=972500000021 received_ms=1764037800000'),
        # a reply: its context read from the request, in the set statement
        $out->('L23 phone=972500000023 payload=%7B%22context%22%3A%7B%22message_id%22'
               . '%3A%22w.ctx%22%7D%7D received_ms=1764037800000'),
        $res->('L21 status=failed error_code=131047 error_title=Re-engagement'
               . ' error_detail=window fbtrace_id=FB1 retryable=false http_status=400'
               . ' received_ms=1764037800700'),
        $res->('L22 status=sent wamid=o.22 received_ms=1764037800800'),
        $res->('L3 status=sent wamid=o.3 received_ms=1764037800900')),
        # sends to a user id, alone (its lead by the id) or with a phone
        # (the phone's lead learns it): the run goes one by one
        join('',
        $out->('L24 payload=%7B%22recipient%22%3A%22US.24%22%7D received_ms=1764037800000'),
        $out->('L25 phone=972500000025 payload=%7B%22recipient%22%3A%22US.25%22%7D'
               . ' received_ms=1764037800000'),
        $res->('L24 status=sent wamid=o.24 received_ms=1764037801000'),
        $out->('L26 payload=%7B%22recipient%22%3A%22US.24%22%7D received_ms=1764037800000')),
        # a lead_id of another business, a send to a phone stored with a
        # '+', an outcome to park
        join('',
        $out->("L30 phone=972500000021 lead_id=$foreign received_ms=1764037800000"),
        $out->('L8 phone=972500000001 received_ms=1764037800000'),
        $res->('L30 status=sent wamid=o.30 received_ms=1764037801000'),
        $res->('L99 status=sent wamid=o.99r received_ms=1764037801000')),
        # a run of receipts that all find their message: merged in waves
        join('',
        $st->('wamid=o.1 status=delivered timestamp=1764037810'),
        $st->('wamid=o.1 status=read timestamp=1764037820'),
        $st->('wamid=o.2 status=read timestamp=1764037830'),
        $st->('wamid=o.2 status=sent timestamp=1764037801'),
        $st->('wamid=o.3 status=failed timestamp=1764037805 error_code=131026'
              . ' error_title=Undeliverable error_detail=unreachable'),
        $st->('wamid=o.3 status=delivered timestamp=1764037806'),
        $st->('wamid=o.4 status=deleted timestamp=1764037807'),
        $st->('wamid=o.4 status=pending timestamp=1764037807'),
        $st->('wamid=o.5 status=delivered timestamp=1764037808'),
        $st->('wamid=o.5 status=delivered timestamp=1764037809'),
        $st->('wamid=w.plus status=read timestamp=1764037811'),
        $st->('wamid=o.1 status=delivered timestamp=1764037812')),
        # a run with receipts to park or to find by callback data
        join('',
        $st->('wamid=o.6 status=delivered timestamp=1764037840'),
        $st->('wamid=o.99 status=delivered timestamp=1764037841'),
        $st->('wamid=o.7 callback_data=L7 status=sent timestamp=1764037842'),
        $st->('wamid=o.7 status=delivered timestamp=1764037843'),
        $st->('wamid=o.6 status=read timestamp=1764037844')),
        # types with no set statement (a raw event, a message echo) in the
        # middle of runs: they end a run, go one by one, in order, and the
        # receipts after the echo find it
        join('',
        $in->('phone=972500000060 wamid=w.r1 body=r1'),
        $in->('phone=972500000061 wamid=w.r2 body=r2'),
        "event business=$b field=account_update waba_id=W$b timestamp=1764037900"
          . " payload=%7B%22event%22%3A%22VERIFIED_ACCOUNT%22%7D received_ms=1764037900000\n",
        $in->('phone=972500000062 wamid=w.r3 body=r3'),
        $in->('phone=972500000063 wamid=w.r4 body=r4'),
        "echo business=$b phone_number_id=106540352242922 phone=972500000060 wamid=e.1"
          . " msg_type=text body=echo1 timestamp=1764037901 payload=%7B%7D\n",
        $st->('wamid=e.1 status=delivered timestamp=1764037902'),
        $st->('wamid=e.1 status=read timestamp=1764037903'),
        $in->('phone=972500000064 wamid=w.r5 body=r5'),
        $in->('phone=972500000065 wamid=w.r6 body=r6')),
        # a send the provider refused, attempted again under its local id
        # (by runs: the first attempt folded, the second one by one); then
        # a replayed outcome of a first attempt, stale, in a run of first
        # attempts
        join('',
        $out->('L50 phone=972500000050 received_ms=1764037870000'),
        $res->('L50 status=failed error_code=131000 error_title=Busy error_detail=later'
               . ' fbtrace_id=FB50 retryable=true http_status=503 received_ms=1764037870100'),
        $out->('L51 phone=972500000051 received_ms=1764037870000'),
        $res->('L51 status=failed error_code=131000 error_title=Busy retryable=true'
               . ' http_status=503 received_ms=1764037870200')),
        join('',
        $out->('L50 phone=972500000050 attempt=2 received_ms=1764037875000'),
        $res->('L50 status=sent wamid=o.50 fbtrace_id=FB50b http_status=200 attempt=2'
               . ' received_ms=1764037875100'),
        $out->('L51 phone=972500000051 attempt=2 received_ms=1764037875000'),
        $res->('L51 status=sent wamid=o.51 http_status=200 attempt=2 received_ms=1764037875200'),
        $out->('L50 phone=972500000050 attempt=2 received_ms=1764037875000')),
        join('',
        $res->('L51 status=failed error_code=131000 error_title=Busy retryable=true'
               . ' http_status=503 received_ms=1764037870200'),
        $out->('L52 phone=972500000052 received_ms=1764037880000'),
        $res->('L52 status=sent wamid=o.52 received_ms=1764037880100')),
        # sends each followed by its outcome: by runs, each row is inserted
        # with its outcome folded in; but not an outcome before its send,
        # nor that of a send the set INSERT did not write (REF-A is taken)
        join('',
        $out->('L40 phone=972500000040 received_ms=1764037860000'),
        $res->('L40 status=sent wamid=o.40 fbtrace_id=FB40 http_status=200'
               . ' received_ms=1764037860100'),
        $out->('L41 phone=972500000041 received_ms=1764037860000'),
        $res->('L41 status=failed error_code=131026 error_title=Undeliverable'
               . ' error_detail=unreachable fbtrace_id=FB41 retryable=true'
               . ' http_status=400 received_ms=1764037860200'),
        $out->('L42 phone=972500000042 received_ms=1764037860000'),
        $res->('L42 status=unknown error_code=131000 error_title=Busy retryable=true'
               . ' http_status=503 received_ms=1764037860300'),
        $res->('L44 status=sent wamid=o.44 received_ms=1764037860500'),
        $out->('L44 phone=972500000044 received_ms=1764037860000'),
        $out->('L45 phone=972500000045 client_ref=REF-A received_ms=1764037860000'),
        $res->('L45 status=sent wamid=o.45 received_ms=1764037860600'),
        $out->('L46 phone=972500000046 received_ms=1764037860000')));
}

# the tables' statistics so far (a stopped writer's are flushed), by
# table: sequential scans, index scans, row updates
sub table_stats {
    $t->dbh->do('SELECT pg_stat_clear_snapshot()');
    return { map { $_->[0] => { seq => $_->[1], idx => $_->[2], upd => $_->[3] } }
             @{ $t->dbh->selectall_arrayref(
                 "SELECT relname, seq_scan, idx_scan, n_tup_upd FROM pg_stat_user_tables
                   WHERE relname IN ('leads', 'whatsapp_message', 'wa_pending_receipt')") } };
}
sub updates { table_stats()->{whatsapp_message}{upd} }
my %last_part_updates;

sub drain {
    my ($b, $runs) = @_;
    my $log = '';
    my @parts = script($b);
    my $upd;
    for my $part (@parts) {
        $upd = updates() if $part eq $parts[-1];
        open my $feed, '|-', "$WaTest::BUILD/wa-feed " . $t->ring . ' 1048576 >/dev/null'
            or die "feed: $!";
        print $feed $part;
        close $feed or die "the feed failed\n";
        chown((getpwnam 'nobody')[2, 3], $t->ring) if $> == 0;    # the writer's user
        my $mark = length $t->writer_log;
        # no census: its counts read wa_pending_receipt through, which
        # would hide what the runs do
        $t->start_writer('--runs', $runs eq 'on' ? 2 : 0, '--census-ms', 0);
        ok($t->wait_drained(30), "runs $runs: drained");
        is($t->stop_writer, 0, "runs $runs: stopped cleanly");
        # its session flushes its statistics as it ends: wait for that, so
        # the counts read next are the whole part's
        ok($t->wait_for(sub { !$t->sql_value("SELECT count(*) FROM pg_stat_activity
                                               WHERE backend_type = 'client backend'
                                                 AND pid <> pg_backend_pid()") }, 10),
           "runs $runs: the writer's session ended");
        $log .= substr $t->writer_log, $mark;
    }
    $last_part_updates{$runs} = updates() - $upd;
    return $log;
}

sub calls {
    my ($f) = @_;
    $t->dbh->do('SELECT pg_stat_clear_snapshot()');
    return $t->sql_value("SELECT coalesce(sum(calls), 0) FROM pg_stat_user_functions
                           WHERE funcname = ?", $f);
}

my $log_off = drain(1, 'off');    # its session's statistics are flushed
is(calls('wa_ingest_in_messages') + calls('wa_ingest_statuses') + calls('wa_ingest_sends'), 0,
   'runs off: no set statement');
my $sends_off = calls('wa_ingest_out_pending');    # every send, one by one
my $before_on = table_stats();
my $log_on = drain(2, 'on');
my $after_on = table_stats();
# (a call in a transaction rolled back is not counted)
ok($t->wait_for(sub { calls('wa_ingest_in_messages') >= 1 }, 5), 'runs on: inbound messages by runs');
ok($t->wait_for(sub { calls('wa_ingest_statuses') >= 2 }, 5), 'runs on: receipts by runs');
# the same sends, fewer of them through wa_ingest_out_pending: some went
# in one INSERT
ok($t->wait_for(sub { calls('wa_ingest_sends') >= 1
                      && calls('wa_ingest_out_pending') - $sends_off < $sends_off }, 5),
   'runs on: sends went as a set (' . ($sends_off - (calls('wa_ingest_out_pending') - $sends_off))
   . " of $sends_off not one by one)");

# by runs, every row is found by its key: no table is read through
# (the one-by-one rewrite of the refused batch takes the per-record path)
for my $table (sort keys %$after_on) {
    is($after_on->{$table}{seq} - $before_on->{$table}{seq}, 0, "runs on: $table was never scanned");
}

# ---- the two businesses hold the same things ------------------------------

sub leads {
    my ($b) = @_;
    return $t->dbh->selectall_arrayref(
        "SELECT coalesce(phone, '-'), coalesce(wa_user_id, '-'), coalesce(name, '-')
           FROM leads WHERE business_id = ? ORDER BY 1, 2, 3", undef, $b);
}

sub messages {
    my ($b) = @_;
    return $t->dbh->selectall_arrayref(
        "SELECT coalesce(m.provider_message_id, m.local_id), m.body, m.phone, m.status,
                coalesce(l.phone, '-'), coalesce(l.wa_user_id, '-'), coalesce(l.name, '-'),
                m.sent_at::text, m.delivered_at::text, m.read_at::text, m.error_code,
                m.error_title, m.error_detail, m.client_ref, m.fbtrace_id, m.retryable::text,
                m.attempts, m.wa_user_id, m.context_message_id
           FROM whatsapp_message m LEFT JOIN leads l ON l.id = m.lead_id
          WHERE m.business_id = ? ORDER BY 1", undef, $b);
}

sub dead {
    my ($b) = @_;
    return $t->dbh->selectcol_arrayref(
        "SELECT fields->'fields'->>'wamid' FROM wa_dead_letter
          WHERE fields->'fields'->>'business' = ? ORDER BY 1", undef, "$b");
}

is_deeply(leads(2), leads(1), 'the same leads, filled in the same way');
is_deeply(messages(2), messages(1), 'the same messages, linked to the same leads');
# what the sends' requests said, read by both paths
for my $b (1, 2) {
    is($t->sql_value("SELECT context_message_id FROM whatsapp_message WHERE business_id = ?
                         AND local_id = 'L23'", $b), 'w.ctx', "business $b: the reply's context");
    is_deeply($t->dbh->selectall_arrayref(
        "SELECT m.local_id, coalesce(m.phone, '-'), m.wa_user_id, coalesce(l.phone, '-'), l.wa_user_id
           FROM whatsapp_message m JOIN leads l ON l.id = m.lead_id
          WHERE m.business_id = ? AND m.local_id IN ('L24', 'L25', 'L26') ORDER BY 1", undef, $b),
        [ [ 'L24', '-', 'US.24', '-', 'US.24' ], [ 'L25', '972500000025', 'US.25', '972500000025', 'US.25' ],
          [ 'L26', '-', 'US.24', '-', 'US.24' ] ],
        "business $b: sends to user ids, their leads by the id");
    is($t->sql_value("SELECT count(DISTINCT lead_id) FROM whatsapp_message WHERE business_id = ?
                         AND local_id IN ('L24', 'L26')", $b), 1, "business $b: one lead for one user id");
}
is_deeply(dead(2), dead(1), 'the same dead letters');
is_deeply($t->dbh->selectall_arrayref(
              "SELECT field, payload::text, event_time FROM wa_event WHERE business_id = 2"),
          $t->dbh->selectall_arrayref(
              "SELECT field, payload::text, event_time FROM wa_event WHERE business_id = 1"),
          'the same raw events');
is($t->sql_value('SELECT count(*) FROM wa_event WHERE business_id = 2'), 1, 'one raw event each');
is_deeply($t->dbh->selectall_arrayref(
              "SELECT provider_message_id, status FROM wa_pending_receipt WHERE business_id = 2 ORDER BY 1, 2"),
          $t->dbh->selectall_arrayref(
              "SELECT provider_message_id, status FROM wa_pending_receipt WHERE business_id = 1 ORDER BY 1, 2"),
          'the same receipts parked');
is_deeply($t->dbh->selectall_arrayref(
              "SELECT provider_message_id, status FROM wa_pending_receipt WHERE business_id = 2"),
          [ [ 'o.99', 'delivered' ], [ 'o.99r', 'sent' ] ],
          'only the receipt and the outcome of unknown messages are parked');

# ---- and what they hold is right --------------------------------------------

my %lead_of = map { $_->[0] => "$_->[4] $_->[5] $_->[6]" } @{ messages(2) };
is($lead_of{'w.plus'}, '+972500000001 - Plus', "a '+' phone's lead is found, not duplicated");
is($lead_of{'w.uidonly'}, '972500000005 U-ONLY No phone yet', 'a lead known by wa_user_id gets the phone');
is($lead_of{'w.held'}, '972500000006 - -', 'a wa_user_id held by another phone stays there');
is($lead_of{'w.noname'}, '972500000003 - Named', 'a lead without a name gets one');
is($lead_of{'w.fill'}, '972500000015 U-FILL No uid', 'a lead without a wa_user_id gets one');
is($lead_of{'w.new2'}, '972500000007 U-NEW Late', 'a new lead is filled in by a later message');
is($lead_of{'w.new1'}, $lead_of{'w.new2'}, 'both messages of a new phone share its lead');
is($lead_of{'w.second'}, '972500000008 - First', 'the first name given stays');
is($lead_of{'w.nophone2'}, '- U-NOPHONE Hidden', 'a lead without a phone, found again');
is($lead_of{'w.format'}, '972500000009 - -', 'a formatted phone is stored as digits');
is($lead_of{'w.full'}, '972500000004 U-FULL Full', 'a complete lead is found');
is($t->sql_value("SELECT body FROM whatsapp_message WHERE business_id = 2 AND provider_message_id = 'w.quote'"),
   qq{"{},\\'NULL (x)\n}, 'quotes, braces, commas, a backslash and NULL as text arrive as they are');
is($lead_of{'w.quote'}, '972500000016 - "Q",{}', 'and so does a name');

sub at {
    my ($w) = @_;
    return join ' ', map { $_ // '-' } $t->dbh->selectrow_array(
        "SELECT status, extract(epoch FROM sent_at)::bigint, extract(epoch FROM delivered_at)::bigint,
                extract(epoch FROM read_at)::bigint, error_code
           FROM whatsapp_message WHERE business_id = 2 AND provider_message_id = ?", undef, $w);
}
is(at('o.1'), 'read 1764037801 1764037810 1764037820 -', 'receipts of one message in one run, in order');
is(at('o.2'), 'read 1764037801 1764037830 1764037830 -', 'read first sets delivered too; a late sent changes nothing');
is(at('o.3'), 'failed 1764037801 - - 131026', 'failed is terminal and keeps its error');
is(at('o.4'), 'sent 1764037801 - - -', 'deleted and pending receipts move nothing');
is(at('o.5'), 'delivered 1764037801 1764037808 - -', 'a timestamp is set once');
is(at('w.plus'), 'received - - - -', 'an inbound message takes no receipt');
is(at('o.7'), 'delivered 1764037842 1764037843 - -',
   'a receipt found by its callback data gives the row its wamid, for the next one');
is(at('o.6'), 'read 1764037801 1764037840 1764037844 -', 'the run with receipts to park');
is(at('e.1'), 'read 1764037901 1764037902 1764037903 -',
   'an echo between runs, then its receipts by a run: it moves');
is($t->sql_value("SELECT direction || ' ' || source || ' ' || l.phone FROM whatsapp_message m
                    JOIN leads l ON l.id = m.lead_id
                   WHERE m.business_id = 2 AND m.provider_message_id = 'e.1'"),
   'out business_app 972500000060', "the echo: outbound, from the Business app, the customer's lead");

sub send_row {
    my ($l) = @_;
    return join ' ', map { $_ // '-' } $t->dbh->selectrow_array(
        "SELECT m.status, m.provider_message_id, m.client_ref, m.error_code, m.fbtrace_id,
                m.retryable::text, l.phone, extract(epoch FROM m.delivered_at)::bigint
           FROM whatsapp_message m LEFT JOIN leads l ON l.id = m.lead_id
          WHERE m.business_id = 2 AND m.local_id = ?", undef, $l);
}
is(send_row('L20'), 'delivered o.20 - - - - 972500000004 1764037850',
   'a given lead_id is kept; a receipt parked by callback data is applied');
is(send_row('L21'), 'failed - REF-A 131047 FB1 false 972500000022 -', 'a failed outcome keeps its error');
is(send_row('L22'), 'sent o.22 - - - - 972500000023 -', 'a client_ref already taken: stored without it');
is(send_row('L1'), 'read o.1 - - - - 972500000021 1764037810', 'a replayed send changes nothing');
is(send_row('L8'), 'pending - - - - - +972500000001 -', "a send to a '+' phone's lead: found, not duplicated");
is(send_row('L30'), 'sent o.30 - - - - 972500000021 -', 'an unknown lead_id: linked by phone');
is($t->sql_value("SELECT count(*) FROM wa_pending_receipt WHERE business_id = 2 AND local_id = 'L99'"),
   1, 'an outcome without its send is parked');
is(send_row('L40'), 'sent o.40 - - FB40 - 972500000040 -', 'an outcome folded into its send: sent');
is(send_row('L41'), 'failed - - 131026 FB41 true 972500000041 -', 'folded: failed, with its error');
is(send_row('L42'), 'unknown - - - - - 972500000042 -', 'folded: unknown, and an error only counts with failed');
is(send_row('L44'), 'sent o.44 - - - - 972500000044 -', 'an outcome before its send is applied');
is(send_row('L45'), 'sent o.45 - - - - 972500000045 -',
   'the outcome of a send the set INSERT did not write is merged after it');
is(send_row('L46'), 'pending - - - - - 972500000046 -', 'a send without its outcome waits');
is(send_row('L50'), 'sent o.50 - - FB50b - 972500000050 -',
   'a refused send attempted again: sent, without the first attempt\'s error or trace');
is(send_row('L51'), 'sent o.51 - - - - 972500000051 -',
   'a stale outcome of the first attempt changes nothing');
is($t->sql_value("SELECT attempts FROM whatsapp_message WHERE business_id = 2 AND local_id = 'L50'"),
   2, 'the row is the second attempt');
is(send_row('L52'), 'sent o.52 - - - - 972500000052 -', 'the run of the stale outcome is written');
ok($last_part_updates{on} < $last_part_updates{off},
   "folded outcomes are no row updates ($last_part_updates{on} by runs, "
   . "$last_part_updates{off} one by one)");
like($log_on, qr/WARN.*send \(.*L22.*\) repeats the client_ref of another send/,
     'runs on: the taken client_ref is logged');
like($log_on, qr/WARN.*L30.*names lead_id \d+, which is not a lead of its business/,
     'runs on: the unknown lead_id is logged');
is($t->sql_value("SELECT count(*) FROM leads WHERE business_id = 2
                   AND phone IN ('972500000001', '+972500000001', '972500000004')"),
   2, 'no second lead for existing phones');
is($t->sql_value("SELECT body FROM whatsapp_message WHERE business_id = 2 AND provider_message_id = 'w.dup'"),
   'one', 'a wamid twice in a run: stored once, from its first record');
is($t->sql_value("SELECT body FROM whatsapp_message WHERE business_id = 2 AND provider_message_id = 'w.plus'"),
   'plus', 'a replay changes nothing');
is($t->sql_value("SELECT status FROM whatsapp_message WHERE business_id = 2 AND provider_message_id = 'w.pending'"),
   'received', 'an inbound message takes no receipt');
is_deeply(dead(2), ['w.bad'], 'only the refused record is a dead letter');
ok(defined $lead_of{'w.before'} && defined $lead_of{'w.after'},
   'the records around it are stored');
is($t->sql_value('SELECT count(*) FROM whatsapp_message WHERE lead_id IS NULL'), 0,
   'every message has its lead');

like($log_on, qr/WARN.*run of in_message records .* refused as a whole.*record by record/,
     'runs on: the refused run is logged, then written record by record');
unlike($log_off, qr/refused as a whole/, 'runs off: no run to refuse');
like($log_on, qr/CRITICAL.*dead letter.*w\.bad/, 'runs on: the dead letter is CRITICAL');

# a run's leads, known and new: one index probe per phone, never a scan of
# leads, whatever the table's size or statistics (a scan per batch grows
# with the table; an anti join hashed on the business alone compared
# every new phone with every lead)
$t->dbh->do('ANALYZE leads');    # a few dozen rows: a scan would look cheap
# the writer's backend flushes its statistics at most once a second, and
# at exit: gone first, so none of its earlier scans lands in the window
$t->stop_writer;
$t->wait_for(sub { !$t->sql_value("SELECT count(*) FROM pg_stat_activity
                                    WHERE application_name = 'wa-writer'") }, 10,
             "the writer's backend gone");
my $stats0 = table_stats();
{
    # its own connection: a backend's statistics are flushed when it exits
    my $own = DBI->connect("dbi:Pg:host=127.0.0.1;port=$t->{pg_port};dbname=postgres", 'wa', '',
                           { RaiseError => 1, AutoCommit => 1, PrintError => 0 });
    $own->do("SELECT wa_leads_create(ARRAY[3, 3, 3]::bigint[],
                  ARRAY['972500000091', '972500000092', '972500000001'],
                  ARRAY[NULL, NULL, NULL]::text[], ARRAY[NULL, NULL, NULL]::text[],
                  ARRAY[NULL, NULL, NULL]::bigint[])");
    $own->do("SELECT wa_leads_known(ARRAY[3, 3]::bigint[], ARRAY['972500000093', '972500000001'],
                  ARRAY[NULL, 'U-X']::text[], ARRAY['N', NULL]::text[])");
    $own->disconnect;
}
ok($t->wait_for(sub { table_stats()->{leads}{idx} > $stats0->{leads}{idx} }, 5),
   "a run's leads: the index was probed");
is(table_stats()->{leads}{seq}, $stats0->{leads}{seq}, "a run's leads: the table was not scanned");

done_testing;
