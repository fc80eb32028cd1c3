#!/usr/bin/perl
# A send's local id is no pid: two nginx in their own PID namespaces, as
# identical containers run them, have workers of the same pid; their ids
# must still differ in the part that names the worker. (Same id, same row:
# the second send would be lost in the database while Meta delivered it.)

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use POSIX ();
use WaTest;

plan skip_all => 'needs root and unshare(1) for PID namespaces'
    unless $> == 0 && system('unshare --pid --fork true 2>/dev/null') == 0;

my $h1 = WaTest->new;
my $mock = $h1->start_mock;
my $h2 = WaTest->new;
$h2->{mock} = $mock;

# nginx in the foreground as the namespace's first process; killing
# unshare kills it (--kill-child), and with it the whole namespace
my @ns;
for my $t ($h1, $h2) {
    my $conf = $t->dir . '/nginx.conf';
    open my $fh, '>', $conf or die;
    print $fh $t->nginx_conf(workers => 1, main => 'daemon off;');
    close $fh;
    my $pid = fork // die;
    if ($pid == 0) {
        open STDOUT, '>>', $t->dir . '/unshare.log';
        open STDERR, '>>', $t->dir . '/unshare.log';
        { exec 'unshare', '--pid', '--fork', '--kill-child', $t->nginx_cmd,
               '-p', $t->dir, '-c', $conf }
        POSIX::_exit(127);
    }
    push @ns, $pid;
    ok($t->wait_for(sub { IO::Socket::INET->new('127.0.0.1:' . $t->port) }, 10,
                    'nginx port'), 'nginx up in its own PID namespace');
}

my ($wa) = $h1->error_log =~ /start worker process (\d+)/;
my ($wb) = $h2->error_log =~ /start worker process (\d+)/;
ok(defined $wa && defined $wb && $wa == $wb,
   "both workers have the same pid in their namespaces (" . ($wa // '?') . ')');

my ($ra, $rb) = map { $_->send_message({ to => '972501234567', text => 'same pid' }) } $h1, $h2;
is($ra->{status}, 200, 'a send from the first');
is($rb->{status}, 200, 'a send from the second');

# wa-<ms>-<worker>-<sequence>: the same sequence number, the same pid
my ($wka, $seqa) = ($ra->{json}{id} // '') =~ /^wa-[0-9a-f]+-([0-9a-f]+)-([0-9a-f]+)$/;
my ($wkb, $seqb) = ($rb->{json}{id} // '') =~ /^wa-[0-9a-f]+-([0-9a-f]+)-([0-9a-f]+)$/;
is($seqa, $seqb, 'the same sequence number in both workers');
isnt($wka, $wkb, 'yet the part that names the worker differs')
    or diag("$ra->{json}{id} / $rb->{json}{id}");
my $pidhex = sprintf '%x', $wa // 0;
unlike($wka // '', qr/^0*$pidhex$/, 'and it is not the pid');

# unshare's child dies with it (PR_SET_PDEATHSIG), and the namespace with
# its first process
kill 'KILL', @ns;
waitpid $_, 0 for @ns;

done_testing();
