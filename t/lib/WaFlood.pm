package WaFlood;

# A flood of uniquely identified, signed webhooks from several client
# processes, each writing down what became of every message id it sent:
# answered 200, answered something else, or no answer at all (the
# connection broke: a killed worker). The fault tests compare that account
# with the database.

use strict;
use warnings;

use Digest::SHA qw(hmac_sha256_hex);
use IO::Socket::INET;
use POSIX ();
use Time::HiRes qw(sleep time);
use WaPayload qw(body value message);

my $seq = 0;

# WaFlood->start($t, clients => 3, rate => 0 (as fast as it goes) or
# requests/s per client)
sub start {
    my ($class, $t, %o) = @_;
    my $tag = sprintf('%d%d', $$, ++$seq);
    my $self = bless { t => $t, tag => $tag, pids => [],
                       stop => $t->dir . "/flood-$tag.stop" }, $class;

    for my $c (1 .. ($o{clients} // 3)) {
        my $file = $t->dir . "/flood-$tag-$c";
        my $pid = fork // die "fork: $!";
        if ($pid == 0) {
            open my $out, '>', $file or POSIX::_exit(1);
            $out->autoflush(1);
            my $sock;
            my $n = 0;
            my $t0 = time;
            my $parent = getppid;
            # stop when told, or when the test is gone (torn down, killed)
            until (-e $self->{stop} || !-d $t->dir || getppid != $parent) {
                my $id = "wamid.flood.$tag.$c." . ++$n;
                my $b = body(value(messages => [
                    message('text', id => $id,
                            from => '97258' . sprintf('%07d', $n % 200)) ]));
                my $st = post($t->port, \$sock, $b);
                print $out "$st $id\n";
                if ($o{rate}) {
                    my $ahead = $t0 + $n / $o{rate} - time;
                    sleep $ahead if $ahead > 0;
                }
            }
            close $out;
            POSIX::_exit(0);
        }
        push @{ $self->{pids} }, $pid;
        push @{ $self->{files} }, $file;
    }
    return $self;
}

# One POST on a kept-alive connection, written in one piece (HTTP::Tiny
# writes headers and body apart, and Nagle's algorithm with delayed ACKs
# then costs 40 ms a request). The status, or 599 when no answer came.
sub post {
    my ($port, $sock, $b) = @_;
    $$sock ||= IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port",
                                     Timeout => 10) or return 599;
    my $req = "POST /webhook HTTP/1.1\r\nHost: localhost\r\n"
        . "Content-Type: application/json\r\nContent-Length: " . length($b)
        . "\r\nX-Hub-Signature-256: sha256="
        . hmac_sha256_hex($b, $WaTest::SECRET) . "\r\n\r\n$b";
    my $s = $$sock;
    my ($head, $buf) = ('', '');
    if (defined syswrite($s, $req)) {
        while ($head !~ /\r\n\r\n/) {
            my $n = sysread($s, $buf, 4096);
            last unless $n;
            $head .= $buf;
        }
    }
    my ($st) = $head =~ m{^HTTP/1\.[01] (\d{3})};
    my ($len) = $head =~ /^Content-Length: (\d+)/mi;
    if (!$st || !defined $len) {
        undef $$sock;
        return 599;
    }
    my $have = length($head) - index($head, "\r\n\r\n") - 4;
    while ($have < $len) {
        my $n = sysread($s, $buf, $len - $have) or last;
        $have += $n;
    }
    undef $$sock if $head =~ /^Connection: close/mi || $have < $len;
    return $st;
}

sub tag { $_[0]{tag} }

# what the clients have seen so far: { 200 => n, 503 => n, ... }
sub answers {
    my ($self) = @_;
    my %n;
    for my $f (@{ $self->{files} }) {
        open my $fh, '<', $f or next;
        while (<$fh>) { $n{$1}++ if /^(\d+) / }
    }
    return \%n;
}

# stop the clients; { acked => [...], refused => [...], unanswered => [...],
# codes => { status => n } }
sub stop {
    my ($self) = @_;
    open my $s, '>', $self->{stop} or die;
    close $s;
    waitpid $_, 0 for @{ $self->{pids} };
    my %r = (acked => [], refused => [], unanswered => [], codes => {});
    for my $f (@{ $self->{files} }) {
        open my $fh, '<', $f or die "$f: $!";
        while (<$fh>) {
            my ($st, $id) = /^(\d+) (\S+)$/ or next;
            $r{codes}{$st}++;
            push @{ $r{ $st == 200 ? 'acked' : $st == 599 ? 'unanswered'
                                   : 'refused' } }, $id;
        }
    }
    return \%r;
}


# The account of a flood ($r from answers) against the database: every
# acknowledged message stored once, with its lead; nothing refused, and
# nothing never sent, stored. Waits up to $secs for the acknowledged rows.
sub exactly_once {
    my ($self, $r, $what, $secs) = @_;
    my $t = $self->{t};
    my $tag = $self->{tag};
    my $rows = sub {
        $t->sql("SELECT provider_message_id AS id, count(*) AS n,
                        count(*) FILTER (WHERE lead_id IS NULL) AS nolead
                   FROM whatsapp_message
                  WHERE provider_message_id LIKE 'wamid.flood.$tag.%'
                  GROUP BY 1");
    };
    my %acked = map { $_ => 1 } @{ $r->{acked} };
    $t->wait_for(sub {
        my %in = map { $_->{id} => 1 } @{ $rows->() };
        !grep { !$in{$_} } keys %acked;
    }, $secs // 60, "$what: acknowledged rows");

    my %row = map { $_->{id} => $_ } @{ $rows->() };
    my @missing = grep { !$row{$_} } @{ $r->{acked} };
    my %known = (%acked, map { $_ => 1 } @{ $r->{unanswered} });

    Test::More::ok(@{ $r->{acked} } > 0, "$what: " . scalar(@{ $r->{acked} })
       . ' acknowledged (' . join(', ', map { "$_: $r->{codes}{$_}" }
                                         sort keys %{ $r->{codes} }) . ')');
    Test::More::is(scalar @missing, 0, "$what: every acknowledged message stored")
        or Test::More::diag("missing: @missing[0 .. ($#missing < 4 ? $#missing : 4)]");
    Test::More::is(scalar(grep { $row{$_}{n} > 1 } keys %row), 0,
                   "$what: none stored twice");
    Test::More::is(scalar(grep { $row{$_} } @{ $r->{refused} }), 0,
                   "$what: none of the refused stored");
    Test::More::is(scalar(grep { !$known{$_} } keys %row), 0,
                   "$what: nothing stored that was never sent");
    Test::More::is(scalar(grep { $row{$_}{nolead} } keys %row), 0,
                   "$what: every row has its lead");
}

1;
