#!/usr/bin/perl
# N clients at once, each one send request to a wa_send location whose
# provider is slow; prints how many were answered 200.
#
# Usage: perl bench/slow_sends.pl PORT PATH N

use strict;
use warnings;
use IO::Socket::INET;

my ($port, $path, $n) = @ARGV;
my $body = '{"to":"972530000000","text":"waiting on a slow provider"}';
my @socks;

for (1 .. $n) {
    my $c = IO::Socket::INET->new("127.0.0.1:$port") or die "connect: $!";
    print $c "POST $path HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
           . "Content-Length: " . length($body) . "\r\n\r\n$body";
    push @socks, $c;
}

my $ok = 0;
for my $c (@socks) {
    my $status = <$c> // '';
    $ok++ if $status =~ m{^HTTP/1\.1 200 };
}
print "$ok\n";
