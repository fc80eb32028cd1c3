#!/usr/bin/perl
# Unit tests of wa_send's pacing arithmetic (t/unit/test_pace_slot.c).
use FindBin;
use lib "$FindBin::Bin/lib";
use Unit;
Unit::run('test_pace_slot');
