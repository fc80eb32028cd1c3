#!/usr/bin/perl
# The whole send suite (t/40-send.t) against the mock reached the way
# Meta is: https://graph.wa-mock.test:PORT, a host name that libcurl's
# threaded resolver resolves through nss_wrapper, a certificate from a test
# CA that wa_ssl_trusted_certificate names, HTTP/2 through a separate nginx
# front. Plus what only that path has: a name that does not resolve, and a
# certificate from a CA the module does not trust.

use strict;
use warnings;
use FindBin;

$ENV{WA_SEND_WORLD} = 1;
do "$FindBin::Bin/40-send.t";
die $@ if $@;
