#!/usr/bin/perl
# The inbound media suite (t/48-media.t) against the mock reached the way
# Meta is: the lookup at https://graph.wa-mock.test:PORT by host name
# (nss_wrapper), TLS from a test CA, HTTP/2 through a separate nginx front,
# and the download at the url the lookup gives, by the same road.

use strict;
use warnings;
use FindBin;

$ENV{WA_MEDIA_WORLD} = 1;
do "$FindBin::Bin/48-media.t";
die $@ if $@;
