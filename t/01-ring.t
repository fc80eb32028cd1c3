#!/usr/bin/perl
# Unit tests of the shared ring (t/unit/test_ring.c).
use FindBin;
use lib "$FindBin::Bin/lib";
use Unit;
Unit::run('test_ring');
