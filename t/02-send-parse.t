#!/usr/bin/perl
# Unit tests of the send parser (t/unit/test_send_parse.c).
use FindBin;
use lib "$FindBin::Bin/lib";
use Unit;
Unit::run('test_send_parse');
