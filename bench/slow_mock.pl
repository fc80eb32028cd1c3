#!/usr/bin/perl
# A Cloud API mock that answers every request after DELAY seconds, holding
# thousands of connections at once in one process (select, no fork): the
# provider a thousand sends wait on.
#
# Usage: perl bench/slow_mock.pl PORT DELAY_SECONDS

use strict;
use warnings;
use IO::Select;
use IO::Socket::INET;
use Time::HiRes qw(time);

my ($port, $delay) = @ARGV;
my $listen = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $port,
                                   Listen => 4096, ReuseAddr => 1)
    or die "listen $port: $!";
$listen->blocking(0);
my $sel = IO::Select->new($listen);
my (%buf, %due);
my $n = 0;

for (;;) {
    my $now = time;
    my ($next) = sort { $a <=> $b } values %due;
    my $wait = defined $next ? ($next > $now ? $next - $now : 0) : 1;
    for my $s ($sel->can_read($wait)) {
        if ($s == $listen) {
            while (my $c = $listen->accept) { $c->blocking(0); $sel->add($c) }
            next;
        }
        my $r = sysread($s, my $chunk, 65536);
        if (!$r) { $sel->remove($s); delete $buf{$s}; delete $due{$s}; close $s; next }
        $buf{$s} .= $chunk;
        if ($buf{$s} =~ /\r\n\r\n/ && !$due{$s}) {
            my ($len) = $buf{$s} =~ /Content-Length: (\d+)/i;
            my $have = length($buf{$s}) - index($buf{$s}, "\r\n\r\n") - 4;
            $due{$s} = time + $delay if $have >= ($len // 0);
        }
    }
    $now = time;
    for my $s (grep { $due{$_} && $due{$_} <= $now } $sel->handles) {
        next unless $due{$s};
        my $body = '{"messaging_product":"whatsapp","contacts":[{"input":"x",'
                 . '"wa_id":"x"}],"messages":[{"id":"wamid.slow.' . $$ . '.'
                 . ++$n . '"}]}';
        syswrite($s, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                   . "Content-Length: " . length($body) . "\r\n\r\n$body");
        delete $due{$s};
        $buf{$s} = '';
    }
}
