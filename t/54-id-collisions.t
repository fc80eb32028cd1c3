#!/usr/bin/perl
# A send's local id seen again is a replay only when it is the same send.
# The same id with another phone or request (ids that collided across
# hosts or containers) is refused and dead-lettered with a CRITICAL line,
# never folded into the first send's row as a replay: that was how 391 of
# 400 sends on two hosts became 201 rows with nothing logged. Checked on
# the per-record path and on the set statement of a long run.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Time::HiRes qw(time);
use WaTest;

my $t = WaTest->new;
$t->start_pg;
$t->migrate;

my $tag = $$ . int(time * 1000);

sub feed {
    my (@lines) = @_;
    open my $feed, '|-', "$WaTest::BUILD/wa-feed " . $t->ring . ' 1048576 >/dev/null'
        or die "feed: $!";
    print $feed join("\n", @lines), "\n";
    close $feed or die "the feed failed\n";
    chown((getpwnam 'nobody')[2, 3], $t->ring) if $> == 0;   # the writer's user
}

sub drain {
    my (@opts) = @_;
    $t->start_writer(@opts);
    ok $t->wait_drained(30), 'drained';
    is $t->stop_writer, 0, 'the writer stops cleanly';
}

sub pending {
    my ($lid, $phone, $text, %o) = @_;
    my $payload = qq({"to":"+$phone","text":"$text"});
    $payload =~ s/([%\s"{}:,+])/sprintf '%%%02x', ord $1/ge;
    return "out_pending local_id=$lid business=1 phone=$phone msg_type=text body=$text"
         . " payload=$payload" . ($o{attempt} ? " attempt=$o{attempt}" : '');
}

sub dead_count {
    return $t->sql_value('SELECT count(*) FROM wa_dead_letter');
}

# ---- one by one ---------------------------------------------------------------

my $lid = "wa-collide-$tag";
feed(pending($lid, '972500000001', 'first'),
     pending($lid, '972500000001', 'first'),            # a replay
     pending($lid, '972500000002', 'another'));         # another send
drain('--runs', 0);

my $row = $t->sql('SELECT * FROM whatsapp_message WHERE local_id = ?', $lid);
is scalar @$row, 1, 'one row for the id';
is $row->[0]{phone}, '972500000001', 'the first send\'s';
is dead_count(), 1, 'the colliding send is a dead letter, the replay is not';
my $dl = $t->sql('SELECT * FROM wa_dead_letter')->[0];
like $dl->{reason}, qr/local id \Q$lid\E collision/, 'its reason names the collision';
like $t->writer_log, qr/CRITICAL.*collision/, 'a CRITICAL line';

# a later attempt of the same id with another request is no collision
feed(pending("$lid-b", '972500000003', 'v1'),
     "out_result local_id=$lid-b business=1 status=failed error_code=131000 retryable=1",
     pending("$lid-b", '972500000003', 'v2', attempt => 2));
drain('--runs', 0);
is dead_count(), 1, 'a new attempt with another body: no collision';
is $t->sql_value('SELECT attempts FROM whatsapp_message WHERE local_id = ?', "$lid-b"), 2,
   'the row is at attempt 2';

# ---- a run written by one set statement ------------------------------------

my @run = map { pending("wa-run-$tag-$_", sprintf('9725100%05d', $_), "run-$_") } 1 .. 20;
feed(@run);
drain('--runs', 2);
is $t->sql_value("SELECT count(*) FROM whatsapp_message WHERE local_id LIKE 'wa-run-$tag-%'"),
   20, 'a run of 20 sends stored';

# the same run again (a replay) and one id of it with another phone
my @again = @run;
$again[7] = pending("wa-run-$tag-8", '972599999999', 'someone-else');
feed(@again);
my $before = dead_count();
drain('--runs', 2);
is dead_count() - $before, 1, 'in a replayed run: only the colliding send is dead-lettered';
is $t->sql_value("SELECT phone FROM whatsapp_message WHERE local_id = 'wa-run-$tag-8'"),
   '9725100' . '00008', 'the stored send is untouched';
is $t->sql_value("SELECT count(*) FROM whatsapp_message WHERE local_id LIKE 'wa-run-$tag-%'"),
   20, 'still 20 rows';

done_testing;
