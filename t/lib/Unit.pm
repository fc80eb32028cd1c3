package Unit;

# Runs a C unit test binary from build/t/ (or $WA_BUILD/t/) in place of the .t file, so its
# TAP goes straight to prove. A missing binary fails: a test that was never
# built must not pass by being skipped.

use strict;
use warnings;
use FindBin;

sub run {
    my ($name) = @_;
    my $bin = ($ENV{WA_BUILD} // "$FindBin::Bin/../build") . "/t/$name";

    if (!-x $bin) {
        print "1..0 # SKIP $bin not built\n" and exit 0 if $ENV{WA_ALLOW_SKIP};
        print "Bail out! $bin is missing: run make first\n";
        exit 255;
    }

    exec $bin or die "exec $bin: $!";
}

1;
