#!/usr/bin/perl
# wa_status per channel (sends and their outcomes, webhook messages and
# statuses) and per provider error code, in JSON and Prometheus, kept
# across a reload, bounded (an id that is not a plain token counts under
# "other"); and the example alert rules in conf/wa-alerts.yml, each checked
# against the metrics a real scrape holds (with promtool too when the
# machine has it, Debian's prometheus package: the rules load, and fire on
# the series of t/fixtures/wa-alerts.test.yml).

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use CPAN::Meta::YAML;
use JSON::PP;
use Test::More;
use WaTest;
use WaPayload qw(body value message status);

my $t = WaTest->new;
$t->start_pg;
$t->migrate;
$t->start_mock;
$t->start_writer;
# one call per send: a refusal counted once (automatic retries make a call,
# and count one, each; t/46)
$t->start_nginx(http => 'wa_send_attempts 1;');

my $phone = $WaTest::PHONE_ID;

sub status_json { decode_json($t->http('GET', '/wa_status')->{content}) }
sub scrape { $t->http('GET', '/wa_status?format=prometheus')->{content} }

# ---- traffic: sends of every outcome, webhooks of three channels ----------------

my %want = (200 => 2, 502 => 4);
my %got;
for my $text ('WAMID_t63a', 'WAMID_t63b', 'FAIL_131026', 'FAIL_131026', 'FAIL_131056', 'DROP_t63') {
    my $r = $t->send_message({ to => '972506300001', text => $text });
    $got{$r->{status}}++;
}
is_deeply(\%got, \%want, 'sends: 2 accepted, 3 refused, 1 unknown (502s)');

is($t->post_webhook(body(value(messages => [ message('text'), message('text') ],
                               statuses => [ status('delivered') ])))->{status},
   200, 'a webhook: 2 messages and a receipt');
is($t->post_webhook(body(value(phone_number_id => '999000222',
                               messages => [ message('text') ],
                               statuses => [ status('read'), status('sent') ])))->{status},
   200, 'a webhook for an unknown channel');
is($t->post_webhook(body(value(phone_number_id => 'not "a" token',
                               messages => [ message('text') ])))->{status},
   200, 'a webhook whose phone number id is not a plain token');

# ---- JSON ---------------------------------------------------------------------

my $st = status_json();
my $ch = $st->{channels}{$phone};
ok($ch, 'wa_status has a section per channel') or diag(explain($st));
is($ch->{business}, '1', 'with its business');
is($ch->{sends}, 6, 'sends: 6');
is($ch->{accepted}, 2, 'accepted: 2');
is($ch->{failed}, 3, 'failed: 3');
is($ch->{unknown}, 1, 'unknown: 1');
is($ch->{messages}, 2, 'webhook messages: 2');
is($ch->{statuses}, 1, 'webhook statuses: 1');
is_deeply($ch->{errors}, { 131026 => 2, 131056 => 1 }, 'provider error codes, counted each');

my $other = $st->{channels}{999000222};
is($other->{business}, '99', 'an unknown channel: the default business');
is($other->{messages}, 1, 'its message');
is($other->{statuses}, 2, 'its statuses');
is($other->{sends}, 0, 'no sends');

is($st->{channels}{other}{messages}, 1, 'the odd id is counted under "other"');
is($st->{channels_dropped}{channels}, 1, 'and counted as dropped');
ok(!grep({ /"/ } keys %{ $st->{channels} }), 'no id that needs escaping is a key');

# ---- Prometheus -------------------------------------------------------------------

my $p = scrape();
like($p, qr/^# TYPE wa_channel_sends_total counter$/m, 'a TYPE line per family');
like($p, qr/^wa_channel_sends_total\{phone_number_id="$phone",business="1"\} 6$/m, 'sends by channel');
like($p, qr/^wa_channel_send_outcomes_total\{phone_number_id="$phone",business="1",outcome="accepted"\} 2$/m,
     'accepted');
like($p, qr/^wa_channel_send_outcomes_total\{phone_number_id="$phone",business="1",outcome="failed"\} 3$/m,
     'failed');
like($p, qr/^wa_channel_send_outcomes_total\{phone_number_id="$phone",business="1",outcome="unknown"\} 1$/m,
     'unknown');
like($p, qr/^wa_channel_webhook_records_total\{phone_number_id="$phone",business="1",kind="message"\} 2$/m,
     'webhook messages');
like($p, qr/^wa_channel_webhook_records_total\{phone_number_id="999000222",business="99",kind="status"\} 2$/m,
     'webhook statuses of another channel');
like($p, qr/^wa_channel_provider_errors_total\{phone_number_id="$phone",business="1",code="131026"\} 2$/m,
     'provider errors by code');
like($p, qr/^wa_channel_dropped_total\{table="channels"\} 1$/m, 'dropped channels');
my @types = $p =~ /^# TYPE (\S+) /mg;
my %seen;
is(scalar(grep { $seen{$_}++ } @types), 0, 'each family has one TYPE line');
unlike($p, qr/^[^#\n]+ [^\d.\n]/m, 'every sample is numeric');

# ---- kept across a reload -------------------------------------------------------------

$t->reload_nginx;
$st = status_json();
is($st->{channels}{$phone}{sends}, 6, 'after a reload: the counts are kept');
is($st->{channels}{$phone}{errors}{131026}, 2, 'and the error codes');
$t->send_message({ to => '972506300001', text => 'WAMID_t63c' });
is(status_json()->{channels}{$phone}{accepted}, 3, 'and count on');

# ---- bounded: more channels than the zone holds ---------------------------------

# 300 new phone number ids in one body (one entry each): the table keeps
# 255 channels, the rest count under "other", and no message goes uncounted
my @many = map { [ value(phone_number_id => '' . (770000000 + $_), messages => [ message('text') ]) ] }
           1 .. 300;
is($t->post_webhook(body(@many))->{status}, 200, 'a body naming 300 new channels');
$st = status_json();
my @ids = grep { $_ ne 'other' } keys %{ $st->{channels} };
is(scalar @ids, 255, 'the zone holds 255 channels');
my $sum = 0;
$sum += $_->{messages} for values %{ $st->{channels} };
is($sum, 2 + 1 + 1 + 300, 'every message is counted, in its channel or under "other"');
my $in_other = $st->{channels}{other}{messages} - 1;    # 1: the odd id above
is($st->{channels_dropped}{channels}, 1 + $in_other, 'and each one in "other" counted as dropped');
like(scrape(), qr/^wa_channel_webhook_records_total\{phone_number_id="other",business="",kind="message"\} \d+$/m,
     '"other" in Prometheus too');

# ---- the alert rules, against what a scrape really holds --------------------------

# the census gauges appear once the writer counted the database
ok($t->wait_for(sub { scrape() =~ /^wa_writer_dead_letters_waiting /m }, 15, 'census'),
   'the writer\'s census is in the scrape');
$p = scrape();

my %samples;    # name => [ {labels}, ... ]
for my $line (split /\n/, $p) {
    next if $line =~ /^#/ || $line !~ /\S/;
    my ($name, $labels) = $line =~ /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? \S+$/ or next;
    my %l = ($labels // '') =~ /(\w+)="([^"]*)"/g;
    push @{ $samples{$name} }, \%l;
}

my $file = "$WaTest::TOP/conf/wa-alerts.yml";
my $yaml = eval { CPAN::Meta::YAML->read($file) };
ok($yaml, 'conf/wa-alerts.yml is YAML') or diag($@);
my @rules = map { @{ $_->{rules} // [] } } @{ $yaml->[0]{groups} // [] };
ok(@rules >= 5, scalar(@rules) . ' rules');

for my $rule (@rules) {
    my $expr = $rule->{expr} // '';
    ok($rule->{alert} && $expr, "rule $rule->{alert} has an expression");
    my @used;
    # each selector: metric name and optional {label matchers}
    while ($expr =~ /\b(wa_[a-z0-9_]+)(?:\{([^}]*)\})?/g) {
        my ($name, $matchers) = ($1, $2 // '');
        push @used, $name;
        ok($samples{$name}, "$rule->{alert}: $name is emitted") or next;
        for my $m ($matchers =~ /(\w+\s*=~?\s*"[^"]*")/g) {
            my ($l, $op, $v) = $m =~ /(\w+)\s*(=~?)\s*"([^"]*)"/;
            my $re = $op eq '=~' ? qr/^(?:$v)$/ : qr/^\Q$v\E$/;
            ok(scalar(grep { defined $_->{$l} && $_->{$l} =~ $re } @{ $samples{$name} }),
               "$rule->{alert}: $name has a sample with $l$op\"$v\"");
        }
    }
    ok(@used, "$rule->{alert} names at least one wa_ metric");
}

# what the issue asks the rules to watch
my %alerts = map { $_->{alert} => $_->{expr} } @rules;
like($alerts{WaRingFilling} // '', qr/wa_ring_waiting_bytes/, 'a rule for the ring filling');
like($alerts{WaWriterHeartbeatStale} // '', qr/wa_writer_heartbeat_age_seconds/, 'for a stale writer heartbeat');
like($alerts{WaFlushFailures} // '', qr/wa_writer_flush_failures_total/, 'for flush failures');
like($alerts{WaDeadLetters} // '', qr/wa_writer_dead_letters_waiting/, 'for dead letters');
like($alerts{WaReceiptsWaitingTooLong} // '', qr/wa_writer_receipts_oldest_age_seconds/,
     'for receipts waiting too long');
like($alerts{WaMediaWaitingTooLong} // '', qr/wa_media_waiting/, 'for media waiting too long');

SKIP: {
    my $promtool = (grep { -x } map { "$_/promtool" } split /:/, $ENV{PATH})[0];
    skip 'promtool is not installed (Debian: apt-get install prometheus, or scripts/deps.sh alerts)', 2
        unless $promtool;
    my ($rc, $out) = $t->run_quiet($promtool, 'check', 'rules', $file);
    is($rc, 0, 'promtool check rules accepts conf/wa-alerts.yml') or diag($out);
    # the alerts fire on the series they watch, and only then
    ($rc, $out) = $t->run_quiet($promtool, 'test', 'rules',
                                "$WaTest::TOP/t/fixtures/wa-alerts.test.yml");
    is($rc, 0, 'promtool test rules: the alerts fire when they should') or diag($out);
}

done_testing;
