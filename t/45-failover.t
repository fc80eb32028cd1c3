#!/usr/bin/perl
# Database failover on PostgreSQL's own replication: a primary and a
# streaming standby (pg_basebackup -R), the writer on a connection string
# naming both with target_session_attrs=read-write. Mid-flood, every
# process of the primary is killed (-9) and the standby promoted: the
# writer finds the new primary by itself, says what happened, and every
# acknowledged webhook is stored once.
#
# Three times: with asynchronous replication and the writer's
# --hold-until-replicated on (without it, the last commits the primary
# answered may never reach the standby: under load a run lost 35 records);
# with synchronous replication (synchronous_standby_names) and the
# setting off, where in addition every row a reader saw committed on the
# old primary is on the new one; then asynchronous again with the standby
# held behind (the primary's WAL sender stopped a second and a half before
# the primary dies, so the commits of that time never reach the standby):
# the records the writer committed there are still in its ring and written
# again to the new primary.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use POSIX ();
use Time::HiRes qw(time sleep);
use WaTest;
use WaFlood;

sub pg_pids {
    my ($t) = @_;
    my ($pm) = split /\n/, WaTest::slurp("$t->{dir}/pg/postmaster.pid");
    return () unless $pm;
    return ($pm, map { 0 + $_ } grep { /\d/ } split /\s+/, `ps -o pid= --ppid $pm`);
}

sub round {
    my ($mode, $hold) = @_;
    $hold //= $mode eq 'sync' ? 'off' : 'on';

    my $primary = WaTest->new;
    $primary->start_pg;
    $primary->migrate;

    # the standby: a base backup of the primary with its recovery settings
    my $standby = WaTest->new;
    chmod 0700, "$standby->{dir}/pg";    # as PostgreSQL wants its data
    my ($rc, $out) = $standby->run_quiet($standby->as_user("$WaTest::PGBIN/pg_basebackup",
        '-D', "$standby->{dir}/pg", '-R', '-X', 'stream', '-h', '127.0.0.1',
        '-p', $primary->{pg_port}, '-U', 'wa'));
    die "pg_basebackup: $out" if $rc;
    $standby->start_pg;
    ok($standby->sql_value('SELECT pg_is_in_recovery()'), "$mode: the standby is in recovery");

    if ($mode eq 'sync') {
        $primary->dbh->do("ALTER SYSTEM SET synchronous_standby_names = '*'");
        $primary->dbh->do('SELECT pg_reload_conf()');
        ok($primary->wait_for(sub {
            $primary->sql_value("SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'") }, 10),
           "$mode: the standby is synchronous");
    }
    ok($primary->wait_for(sub {
        $primary->sql_value("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'") }, 10),
       "$mode: the standby streams");

    # nginx and the writer: the ring's host; the writer knows both servers
    my $host = WaTest->new(dsn => "host=127.0.0.1,127.0.0.1 port=$primary->{pg_port},$standby->{pg_port}"
                                  . ' dbname=postgres user=wa target_session_attrs=read-write'
                                  . ' connect_timeout=2');
    $host->start_nginx(ring_size => '16m');
    $host->start_writer('--backoff-max-ms', '500', '--hold-until-replicated', $hold);
    ok($host->wait_for(sub { $host->writer_log =~ /connected to PostgreSQL \(host 127\.0\.0\.1 port $primary->{pg_port}\b/ }, 10),
       "$mode: the writer is on the primary");

    my $flood = WaFlood->start($host, clients => 3);
    sleep 2;

    if ($mode eq 'behind') {
        my $sender = $primary->sql_value('SELECT pid FROM pg_stat_replication');
        ok($sender && kill('STOP', $sender), "$mode: the WAL sender stopped: the standby falls behind");
        sleep 1.5;
    }

    # what a reader sees committed on the primary just before it dies
    my $seen = $primary->sql("SELECT provider_message_id AS id FROM whatsapp_message
                               WHERE provider_message_id LIKE 'wamid.flood.%'");
    my @pids = pg_pids($primary);
    ok(@pids > 1, "$mode: the primary's processes: @pids[0 .. 2] ...");
    my $killed_at = time;
    kill 'KILL', @pids;
    delete $primary->{dbh};
    $primary->{pg_up} = 0;
    $primary->wait_for(sub { !grep { kill 0, $_ } @pids }, 10, 'the primary to die');

    # the webhooks go on into the ring, the writer cannot commit them
    sleep 1.5;
    ($rc, $out) = $standby->run_quiet($standby->as_user("$WaTest::PGBIN/pg_ctl", '-D',
                                                         "$standby->{dir}/pg", '-w', 'promote'));
    is($rc, 0, "$mode: the standby is promoted") or diag($out);
    sleep 1.5;
    my $r = $flood->stop;

    # the flood's account, against the new primary
    $host->{pg_port} = $standby->{pg_port};
    delete $host->{dbh};
    ok($host->wait_drained(60), "$mode: the writer drains its ring into the new primary");
    $flood->exactly_once($r, "$mode: after failover", 60);

    my %now = map { $_->{id} => 1 } @{ $host->sql("SELECT provider_message_id AS id FROM whatsapp_message
                                                   WHERE provider_message_id LIKE 'wamid.flood.%'") };
    my @gone = grep { !$now{ $_->{id} } } @$seen;
    is(scalar @gone, 0, "$mode: every row seen committed on the old primary ("
                        . scalar(@$seen) . ") is on the new one") if $mode eq 'sync';
    note("$mode: " . scalar(@gone) . " of " . scalar(@$seen)
         . " rows seen on the old primary were not on the new one after the writer replayed");

    # what the writer said, one line per event
    my $log = $host->writer_log;
    like($log, qr/CRITICAL flush of \d+ records .* failed .*(?:08006|server closed|terminat|connect)/i,
         "$mode: the lost connection is a CRITICAL line (records waiting)");
    like($log, qr/INFO connected to PostgreSQL \(host 127\.0\.0\.1 port $standby->{pg_port}\b/,
         "$mode: the writer says which server it reconnected to");
    like($log, qr/INFO recovered: flush of \d+ records .* committed after \d+ failed attempts over \d+ ms \(host 127\.0\.0\.1 port $standby->{pg_port}\b/,
         "$mode: and that the batch in hand was committed there");
    like($log, qr/WARN the connection was lost with ring \[\d+, \d+\) committed but not known to be on a standby/,
         "$mode: the writer writes again what the standby may lack") if $mode eq 'behind';
    my @fails = $log =~ /(CRITICAL flush of.*)/g;
    note("$mode: " . scalar(@fails) . " failed attempts logged; recovered "
         . sprintf('%.1f', time - $killed_at) . " s after the kill at most");

    $host->teardown;
    $standby->teardown;
    $primary->teardown;
}

round('async');
round('sync');
# WA_FAILOVER_HOLD=off shows what the setting prevents: records lost
round('behind', $ENV{WA_FAILOVER_HOLD});

done_testing();
