#!/usr/bin/perl
# Several hosts on one database: each "host" its own nginx, ring and
# wa-writer (a WaTest object of its own, all sharing one PostgreSQL and one
# mock Cloud API). Under concurrent webhooks (the same phones on every
# host, some messages delivered to two hosts), sends, and receipts
# scrambled across hosts (the receipt of a message sent through one host
# posted to another, often before the message is stored): every
# acknowledged record is stored once, linked to the one lead of its phone,
# in its final status, and no receipt stays parked.
#
# Then the same with nginx and the writer of each host in PID namespaces
# of their own, as containers run them.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use List::Util qw(shuffle);
use POSIX ();
use Time::HiRes qw(time sleep);
use WaTest;
use WaFlood;
use WaPayload qw(body value message status);

my $db = WaTest->new;
$db->start_pg;
$db->migrate;
my $mock = $db->start_mock;

# unshare processes, stopped at the end however it ends. unshare blocks
# SIGTERM, and the writer under setpriv loses unshare's --kill-child
# signal (a change of uid clears it): TERM goes to unshare's child, the
# namespace's first process, by its pid out here.
my @ns_pids;
sub stop_namespaces {
    for my $p (@ns_pids) {
        kill 'TERM', map { 0 + $_ } grep { /\d/ } split /\s+/, `ps -o pid= --ppid $p`;
    }
    waitpid $_, 0 for @ns_pids;
    @ns_pids = ();
}
END { stop_namespaces() if @ns_pids; }

# a host on the shared database and mock; in PID namespaces with $ns. Its
# ring is big enough that a writer slowed by a loaded machine does not
# fill it: a full ring refuses sends (503) and loses their outcomes,
# which is another test's subject (t/70)
sub host {
    my ($ns) = @_;
    my $h = WaTest->new;
    $h->{pg_port} = $db->{pg_port};
    $h->{mock} = $mock;
    if (!$ns) {
        $h->start_nginx(workers => 2, ring_size => '32m');
        $h->start_writer;
        return $h;
    }

    # nginx in the foreground as its namespace's first process, the writer
    # in another namespace: each sees pids the other does not. unshare
    # passes SIGTERM on to its child when it ends (--kill-child).
    my $conf = $h->dir . '/nginx.conf';
    WaTest::spew($conf, $h->nginx_conf(workers => 2, main => 'daemon off;', ring_size => '32m'));
    my @cmds = (
        [ 'nginx.out', $h->nginx_cmd, '-p', $h->dir, '-c', $conf ],
        [ 'writer.log', $h->as_user("$WaTest::BUILD/wa-writer", '--ring', $h->ring,
                                    '--db', $h->dsn, '--batch-delay-ms', '5') ]);
    for my $c (@cmds) {
        my ($log, @cmd) = @$c;
        my $pid = fork // die;
        if ($pid == 0) {
            open STDOUT, '>>', $h->dir . "/$log";
            open STDERR, '>>', $h->dir . "/$log";
            { exec 'unshare', '--pid', '--fork', '--mount-proc', '--kill-child=SIGTERM', @cmd }
            POSIX::_exit(127);
        }
        push @ns_pids, $pid;
        $h->wait_for(sub { IO::Socket::INET->new('127.0.0.1:' . $h->port) }, 10, 'nginx port')
            or die 'nginx did not start: ' . WaTest::slurp($h->dir . '/nginx.out');
    }
    return $h;
}

# run the workload on the hosts and check the database; $name names the
# phase in test names and in every id it makes
sub phase {
    my ($name, @hosts) = @_;
    my $tag = $name . $$ . int(time);
    my $n = 40;                           # sends per host
    my $deadlocks = $db->sql_value('SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()');
    my @marks = map { length $_->writer_log } @hosts;

    # the wamid each send will get, chosen by its text (MockGraph)
    my %wamid;
    for my $h (0 .. $#hosts) {
        $wamid{"$h.$_"} = "wamid.mh.$tag.$h.$_" for 1 .. $n;
    }

    my @floods = map { WaFlood->start($_, clients => 2) } @hosts;

    my @kids;
    my $kid = sub {
        my ($file, $code) = @_;
        my $pid = fork // die;
        if ($pid == 0) {
            open my $out, '>', $file or POSIX::_exit(1);
            $out->autoflush(1);
            $code->($out);
            close $out;
            POSIX::_exit(0);
        }
        push @kids, $pid;
    };

    # receipts: every host posts, in a random order, sent, delivered and
    # read for the messages sent through the others, most of them before
    # those are sent or stored
    for my $h (0 .. $#hosts) {
        $kid->($hosts[$h]->dir . "/receipts-$tag", sub {
            my ($out) = @_;
            my @mine = shuffle grep { !/^$h\./ } keys %wamid;
            for my $k (@mine) {
                my $ts = 1764100000 + int(rand 1000);
                my @st = map { status($_->[0], id => $wamid{$k}, timestamp => '' . ($ts + $_->[1])) }
                         ['sent', 0], ['delivered', 1], ['read', 2];
                # one body, or one per status on their own
                my @bodies = rand() < 0.5 ? (body(value(statuses => [ shuffle @st ])))
                                          : map { body(value(statuses => [$_])) } shuffle @st;
                for my $b (@bodies) {
                    my $st = $hosts[$h]->post_webhook($b)->{status};
                    print $out "$st $k\n";
                }
            }
        });
    }

    # sends: each host sends its own, to phones every host shares
    for my $h (0 .. $#hosts) {
        $kid->($hosts[$h]->dir . "/sends-$tag", sub {
            my ($out) = @_;
            for my $i (1 .. $n) {
                my $r = $hosts[$h]->send_message({ to => '97259' . sprintf('%07d', $i % 25),
                                                   text => "WAMID_mh.$tag.$h.$i" });
                print $out "$r->{status} " . ($r->{json}{id} // '-') . " $h.$i\n";
                # and at once its delivered receipt to the next host, whose
                # writer may park it while this one's stores the message
                my $next = $hosts[($h + 1) % @hosts];
                $next->post_webhook(body(value(statuses => [
                    status('delivered', id => "wamid.mh.$tag.$h.$i", timestamp => '1764100500') ])))
                    if @hosts > 1;
            }
        });
    }

    # inbound messages delivered to two hosts at once (a redelivery that
    # the load balancer sent elsewhere)
    my @twice = map { "wamid.twice.$tag.$_" } 1 .. 30;
    for my $h (0 .. $#hosts) {
        $kid->($hosts[$h]->dir . "/twice-$tag", sub {
            my ($out) = @_;
            for my $i (0 .. $#twice) {
                my $w = $twice[$i];
                my $b = body(value(messages => [
                    message('text', id => $w, from => '97258' . sprintf('%07d', $i * 7 % 200),
                            timestamp => '1764100000') ]));
                print $out $hosts[$h]->post_webhook($b)->{status} . " $w\n";
            }
        });
    }

    waitpid $_, 0 for @kids;
    # (stop reads with while (<$fh>): no $_ aliased to @floods around it)
    my @flood;
    for my $f (@floods) { push @flood, $f->stop }

    # what the clients were told
    my (%sent, @send_fail, $receipt_fail, $twice_fail);
    for my $h (0 .. $#hosts) {
        my $d = $hosts[$h]->dir;
        for (split /\n/, WaTest::slurp("$d/sends-$tag")) {
            my ($st, $id, $k) = split / /;
            $st == 200 ? ($sent{$k} = $id) : push @send_fail, $_;
        }
        $receipt_fail += grep { !/^200 / } split /\n/, WaTest::slurp("$d/receipts-$tag");
        $twice_fail += grep { !/^200 / } split /\n/, WaTest::slurp("$d/twice-$tag");
    }
    is(scalar(keys %sent), $n * @hosts, "$name: every send answered 200")
        or diag("@send_fail[0 .. ($#send_fail < 4 ? $#send_fail : 4)]");
    is($receipt_fail, 0, "$name: every receipt acknowledged");
    is($twice_fail, 0, "$name: every doubly delivered message acknowledged");

    ok($_->wait_drained(60), "$name: a writer drained its ring") for @hosts;

    for my $i (0 .. $#hosts) {
        $floods[$i]->exactly_once($flood[$i], "$name: host $i webhooks", 60);
    }

    # the sends: each stored once, in its final status, with its lead
    my @locals = values %sent;
    $db->wait_for(sub {
        $db->sql_value("SELECT count(*) FROM whatsapp_message WHERE local_id = ANY (?) AND status = 'read'",
                       \@locals) == @locals }, 30, 'every send read');
    my $rows = $db->sql("SELECT m.local_id, m.provider_message_id AS wamid, m.status, m.lead_id,
                                l.phone AS lead_phone, m.phone, m.read_at, m.delivered_at, m.sent_at
                           FROM whatsapp_message m LEFT JOIN leads l ON l.id = m.lead_id
                          WHERE m.local_id = ANY (?)", \@locals);
    my %by_local;
    $by_local{ $_->{local_id} }++ for @$rows;
    is(scalar(keys %by_local), scalar @locals, "$name: every send stored");
    is(scalar(grep { $_ > 1 } values %by_local), 0, "$name: none twice");
    my %want = map { $sent{$_} => $wamid{$_} } keys %sent;
    is(scalar(grep { ($_->{wamid} // '') ne $want{ $_->{local_id} } } @$rows), 0,
       "$name: each with its wamid");
    my @notread = grep { $_->{status} ne 'read' } @$rows;
    is(scalar @notread, 0, "$name: each in its final status, read")
        or diag(join ', ', map { "$_->{wamid} $_->{status}" } @notread[0 .. ($#notread < 4 ? $#notread : 4)]);
    is(scalar(grep { !$_->{read_at} || !$_->{delivered_at} || !$_->{sent_at} } @$rows), 0,
       "$name: with every timestamp");
    is(scalar(grep { !$_->{lead_id} || $_->{lead_phone} ne $_->{phone} } @$rows), 0,
       "$name: each linked to the lead of its phone");

    # a receipt stranded by two writers' transactions waits for the next
    # sweep (every second)
    my $parked = sub { $db->sql_value('SELECT count(*) FROM wa_pending_receipt WHERE provider_message_id LIKE ?',
                                      "wamid.mh.$tag.%") };
    $db->wait_for(sub { $parked->() == 0 }, 10, 'the sweeps');
    is($parked->(), 0, "$name: no receipt left parked");

    my $tw = $db->sql("SELECT provider_message_id, count(*) AS n, count(lead_id) AS linked
                         FROM whatsapp_message WHERE provider_message_id = ANY (?) GROUP BY 1", \@twice);
    is(scalar(@$tw), scalar(@twice), "$name: every doubly delivered message stored");
    is(scalar(grep { $_->{n} != 1 || $_->{linked} != 1 } @$tw), 0, "$name: once, with its lead");

    # one lead per phone, whichever host saw it first
    is($db->sql_value('SELECT count(*) FROM (SELECT 1 FROM leads GROUP BY business_id, phone
                                               HAVING count(*) > 1) d'), 0,
       "$name: one lead per phone");
    is($db->sql_value('SELECT count(*) FROM whatsapp_message m JOIN leads l ON l.id = m.lead_id
                        WHERE l.phone IS DISTINCT FROM m.phone'), 0,
       "$name: every message linked to its own phone's lead");

    my @logs = map { substr $hosts[$_]->writer_log, $marks[$_] } 0 .. $#hosts;
    is(scalar(grep { /CRITICAL/ } @logs), 0, "$name: no CRITICAL in any writer's log")
        or diag(join "\n", grep { /CRITICAL/ } map { split /\n/ } @logs);
    my $d = $db->sql_value('SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()')
            - $deadlocks;
    # (a flush's, or a sweep's)
    my $warned = grep { /\bWARN\b.*SQLSTATE 40P01/ } map { split /\n/ } @logs;
    is($warned, $d, "$name: $d deadlocks, each retried with a WARN");
    my $swept = grep { /applied by the sweep/ } map { split /\n/ } @logs;
    note("$name: $d deadlocks, $swept sweeps applied receipts");
}

my @plain = map { host(0) } 1 .. 3;
phase('three-hosts', @plain);

SKIP: {
    skip 'needs root and unshare(1) for PID namespaces', 1
        unless $> == 0 && system('unshare --pid --fork --mount-proc true 2>/dev/null') == 0;

    for my $h (@plain) {
        $h->stop_nginx;
        $h->stop_writer;
    }
    my @ns = map { host(1) } 1 .. 2;
    phase('pid-namespaces', @ns);

    # the writer's pid means nothing out here: it is alive by its heartbeat
    my (undef, $st) = $ns[0]->run_quiet("$WaTest::BUILD/wa-writer", 'status', '--ring', $ns[0]->ring);
    like($st, qr/^writer_pid 1$/m, 'the writer is pid 1 of its namespace');
    like($st, qr/^writer_alive yes$/m, 'and wa-writer status, from another, says it is alive');
}

stop_namespaces();

done_testing();
