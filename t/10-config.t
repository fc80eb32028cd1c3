#!/usr/bin/perl
# The module loads into Debian's nginx, and nginx -t rejects wrong
# configurations with a message naming the directive.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use WaTest;

my $t = WaTest->new;

my ($rc, $out) = $t->nginx_t;
is($rc, 0, 'a valid configuration passes nginx -t') or diag($out);
ok(!-e $t->ring, 'nginx -t does not create the ring');

my @bad = (
    [ 'wa_channel without business=',
      server => 'location /w { wa_webhook; wa_channel 123 token=x; }',
      qr/wa_channel|business=/ ],
    [ 'wa_channel with a non-numeric id',
      server => 'location /w { wa_webhook; wa_channel abc business=1 token=x; }',
      qr/"wa_channel": invalid phone number id "abc"/ ],
    [ 'wa_channel with an unknown parameter',
      server => 'location /w { wa_webhook; wa_channel 1 business=1 token=x foo=1; }',
      qr/wa_channel/ ],
    [ 'duplicate wa_channel',
      server => 'location /w { wa_webhook; wa_channel 1 business=1 token=x; wa_channel 1 business=2 token=y; }',
      qr/duplicate channel/ ],
    [ 'wa_default_business not numeric',
      server => 'location /w { wa_webhook; wa_default_business acme; }',
      qr/wa_default_business/ ],
    [ 'wa_ring with a size that is not a power of two',
      http => '', ring_size => '100k',
      qr/wa_ring|ring size/ ],
    [ 'wa_ring with a tiny size',
      ring_size => '4k',
      qr/ring size/ ],
    [ 'wa_webhook without wa_ring',
      no_ring => 1, server => 'location /w { wa_webhook; }',
      qr/wa_ring/ ],
    [ 'wa_webhook with an argument',
      server => 'location /w { wa_webhook on; }',
      qr/wa_webhook/ ],
    [ 'wa_ring inside a server block',
      server => 'wa_ring /tmp/x; location /w { wa_status; }',
      qr/"wa_ring" directive is not allowed here/ ],
    [ 'wa_ring with an unknown group',
      ring_args => 'group=no-such-group-here',
      qr/"wa_ring": unknown group in "group=no-such-group-here"/ ],
    [ 'wa_ring with an unknown parameter',
      ring_args => 'mode=0666',
      qr/"wa_ring": invalid parameter "mode=0666"/ ],
    [ 'wa_send_key without a key',
      server => 'location /w { wa_send_key; }',
      qr/wa_send_key/ ],
    [ 'wa_webhook_max_body_size invalid',
      server => 'location /w { wa_webhook; wa_webhook_max_body_size lots; }',
      qr/wa_webhook_max_body_size/ ],
);

for my $case (@bad) {
    my ($name, @o) = @$case;
    my $re = pop @o;
    ($rc, $out) = $t->nginx_t(@o);
    isnt($rc, 0, "$name: rejected");
    like($out, $re, "$name: the message names it") or diag($out);
}

# a secret or token never shows up in nginx -t output
($rc, $out) = $t->nginx_t(server =>
    'location /w { wa_webhook; wa_channel 1 business=1 token=SeCrEtToKeN bogus=1; }');
unlike($out, qr/SeCrEtToKeN/, 'a token is not echoed in config errors');

done_testing();
