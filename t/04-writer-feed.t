#!/usr/bin/perl
# The producer side the writer relies on (t/unit/test_ring_records.c); the
# feeding tool is tools/wa-feed.c.
use FindBin;
use lib "$FindBin::Bin/lib";
use Unit;
Unit::run('test_ring_records');
