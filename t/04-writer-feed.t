#!/usr/bin/perl
# The producer side the writer relies on (t/unit/test_writer_feed.c, which
# doubles as a ring feeding tool when given arguments).
use FindBin;
use lib "$FindBin::Bin/lib";
use Unit;
Unit::run('test_writer_feed');
