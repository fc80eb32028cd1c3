#!/usr/bin/perl
# Unit tests of the webhook parser (t/unit/test_webhook_parse.c).
use FindBin;
use lib "$FindBin::Bin/lib";
use Unit;
Unit::run('test_webhook_parse');
