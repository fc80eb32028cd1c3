#!/usr/bin/perl
# make deb's packages, as an admin gets them: installed with apt on this
# machine, the distribution's nginx loading the module through the
# package's modules-enabled file, the packaged wa-writer run as its unit
# runs it (its user, its settings file, its command line); a send and a
# webhook end in the database, and the packaged media fetcher, run as its
# unit runs it, fetches an image into the packaged media directory; then
# removed and purged: no process and no file left.
#
# Needs root (it installs packages); CI runs it as root on Debian 12.
# WA_DEB_DIR=DIR takes the packages from DIR instead of running make deb.
# Packages of these names already installed are purged first, and the
# test's are purged at the end, however it ends.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use Digest::SHA qw(sha256_hex);
use Test::More;
use Time::HiRes qw(time sleep);
use WaTest;
use MockGraph;
use WaPayload qw(body value message);

plan skip_all => 'installing packages needs root' if $> != 0;
plan skip_all => 'no dpkg or apt-get: not a Debian system'
    unless -x '/usr/bin/dpkg' && -x '/usr/bin/apt-get';

my @PKGS = qw(libnginx-mod-http-wa wa-writer);
my $MOD_SO = '/usr/lib/nginx/modules/ngx_http_wa_module.so';
my $MOD_CONF = '/usr/share/nginx/modules-available/mod-http-wa.conf';
my $MOD_LINK = '/etc/nginx/modules-enabled/50-mod-http-wa.conf';
my $WRITER = '/usr/bin/wa-writer';
my $UNIT = '/lib/systemd/system/wa-writer.service';
my $MEDIA_UNIT = '/lib/systemd/system/wa-media.service';
my $MEDIA_DIR = '/var/lib/ngx_wa/media';
# Debian's nginx runs its workers as www-data
my $NGINX_USER = 'www-data';
my $SETTINGS = '/etc/default/wa-writer';
my $USER = 'wa-writer';
my $DROPIN = '/run/systemd/system/wa-writer.service.d';

sub run {
    my $out = `@_ 2>&1 < /dev/null`;
    return ($? >> 8, $out);
}

sub installed {
    my ($pkg) = @_;
    my (undef, $s) = run("dpkg-query -W -f '\${Status}' $pkg");
    return $s =~ /\binstalled$/ || $s =~ /config-files/;
}

# no point going on: say why, and end (END still purges what was installed)
sub stop {
    diag(@_);
    done_testing();
    exit 1;
}

# through apt, which waits for dpkg's lock (a concurrent apt-get elsewhere
# on the machine) where dpkg itself gives up at once
sub apt {
    local $ENV{DEBIAN_FRONTEND} = 'noninteractive';
    return run("apt-get -y -q -o DPkg::Lock::Timeout=120 @_");
}

sub purge { apt('purge', @PKGS) }

# ---- the packages --------------------------------------------------------

my $debs = $ENV{WA_DEB_DIR};
if (!$debs) {
    my $t0 = time;
    my ($rc, $out) = run("make -C $WaTest::TOP BUILD=$WaTest::BUILD deb");
    is($rc, 0, 'make deb builds the packages, lintian finds no error')
        or stop("make deb failed:\n" . WaTest::tail($out, 40));
    diag(sprintf 'make deb: %.0f s', time - $t0);
    $debs = "$WaTest::BUILD/deb";
}
my ($mod_deb) = glob("$debs/libnginx-mod-http-wa_*.deb");
my ($writer_deb) = glob("$debs/wa-writer_*.deb");
ok($mod_deb && $writer_deb, "both packages are in $debs")
    or stop('no packages to install');

SKIP: {
    skip 'lintian is not installed (make deb-deps installs it)', 1
        unless -x '/usr/bin/lintian';
    my ($rc, $out) = run("lintian --fail-on error $mod_deb $writer_deb");
    is($rc, 0, 'lintian: no error in either package') or diag($out);
}

# ---- installed with apt ----------------------------------------------------

for my $p (@PKGS) {
    diag("$p was installed: purging it first") if installed($p);
}
purge();
ok(!installed($_), "$_ is not installed before the test") for @PKGS;

my $installed = 1;
my ($t, $media_file);

# the file the test fetched, and its directory: media files are data, which
# a purge keeps (nothing else of the test's is in a packaged directory)
sub remove_media_file {
    return unless $media_file;
    unlink $media_file;
    rmdir($media_file =~ s{/[^/]+$}{}r);
    undef $media_file;
}
END {
    my $rc = $?;
    if ($installed) {
        # the daemons first: nothing of the packages may stay running
        $t->teardown if $t;
        remove_media_file();
        purge();
        if (-d $DROPIN) {
            system('rm', '-rf', $DROPIN);
            run('systemctl daemon-reload');
        }
    }
    $? = $rc;
}

{
    my $t0 = time;
    my ($rc, $out) = apt('install', '--no-install-recommends', $mod_deb, $writer_deb);
    is($rc, 0, 'apt-get installs both packages') or stop($out);
    diag(sprintf 'apt-get install: %.1f s', time - $t0);
}
ok(installed($_), "$_ is installed") for @PKGS;

# every path the packages hold, to look for after the purge
my @files = map { my (undef, $l) = run("dpkg -L $_"); grep { m{^/.} } split /\n/, $l } @PKGS;

# the module, as Debian's libnginx-mod-* packages have it
ok(-f $MOD_SO, "the module is in nginx's module directory");
is(WaTest::slurp($MOD_CONF), "load_module modules/ngx_http_wa_module.so;\n",
   'mod-http-wa.conf loads it');
is(readlink($MOD_LINK), $MOD_CONF, 'postinst enabled it in modules-enabled');
my (undef, $abi) = run('sed -n "s/^nginx:abi=//p" /usr/share/nginx/src/debian/libnginx-mod.abisubstvars');
chomp $abi;
like($abi, qr/^nginx-abi-[\d.]+-\d+$/, "nginx-dev names its ABI ($abi)");
my (undef, $deps) = run("dpkg-query -W -f '\${Depends}' libnginx-mod-http-wa");
like($deps, qr/(?:^|, )\Q$abi\E(?:,|$)/, "the module depends on $abi");
my (undef, $provides) = run(q{dpkg-query -W -f '${Package} ${Provides}\n'});
like($provides, qr/^nginx .*\b\Q$abi\E\b/m, "the installed nginx provides $abi");

# the writer: binary, its user, its settings (a conffile), its unit
ok(-x $WRITER, 'wa-writer is installed');
my @pw = getpwnam($USER);
ok(@pw, "postinst created the user $USER");
cmp_ok($pw[2] // 1e9, '<', 1000, "$USER is a system user");
like($pw[8] // '', qr{/(?:usr/sbin/)?nologin$|/bin/false$}, "$USER has no login shell");
is((getgrgid($pw[3] // -1))[0], $USER, "$USER has its own group");
my (undef, $conffiles) = run("dpkg-query -W -f '\${Conffiles}' wa-writer");
like($conffiles, qr{^ \Q$SETTINGS\E [0-9a-f]{32}$}m, "$SETTINGS is a conffile");

sub unit { map { /^(\w+)=(.*)$/ ? ($1 => $2) : () } split /\n/, WaTest::slurp($_[0]) }
my %unit = unit($UNIT);
is($unit{User}, $USER, "the unit runs as $USER");
is($unit{Group}, $USER, "in the group $USER");
is($unit{EnvironmentFile}, "-$SETTINGS", "with its settings from $SETTINGS");
like($unit{ExecStart} // '', qr{^\Q$WRITER\E run }, "it runs $WRITER run");
my %media_unit = unit($MEDIA_UNIT);
is($media_unit{User}, $USER, "the media fetcher's unit runs as $USER too");
is($media_unit{SupplementaryGroups}, $NGINX_USER, "in the group of nginx's workers");
is($media_unit{EnvironmentFile}, "-$SETTINGS", "with the same settings");
like($media_unit{ExecStart} // '', qr{^\Q$WRITER\E media }, "it runs $WRITER media");
SKIP: {
    skip 'no systemd-analyze', 1 unless -x '/usr/bin/systemd-analyze';
    my ($rc, $out) = run("systemd-analyze verify $UNIT $MEDIA_UNIT");
    is($rc, 0, 'systemd-analyze verify finds nothing wrong in the units') or diag($out);
}
for my $d ($MEDIA_DIR, "$MEDIA_DIR/tmp") {
    my @s = stat $d;
    is(sprintf('%o %s:%s', ($s[2] // 0) & 07777, scalar getpwuid($s[4] // -1) // '?',
               scalar getgrgid($s[5] // -1) // '?'),
       "2770 $USER:$NGINX_USER", "$d is the fetcher's and nginx's workers' group's");
}
ok(-f '/usr/share/man/man1/wa-writer.1.gz', 'wa-writer has its manual page');
my (undef, $enabled) = run('systemctl is-enabled wa-writer wa-media 2>/dev/null || true');
unlike($enabled, qr/^enabled/m, 'the units are not enabled before they are configured');

# systemd's EnvironmentFile: NAME=VALUE lines, quotes around the value
my %settings;
for (split /\n/, WaTest::slurp($SETTINGS)) {
    next unless /^\s*([A-Za-z_]\w*)=(.*)$/;
    my ($k, $v) = ($1, $2);
    $v =~ s/^"(.*)"$/$1/ or $v =~ s/^'(.*)'$/$1/;
    $settings{$k} = $v;
}
is($settings{WA_RING}, '/var/lib/ngx_wa/ring', 'the settings name the ring in /var/lib/ngx_wa');
ok(-d '/var/lib/ngx_wa', 'which the package made');
like($settings{WA_DB} // '', qr/dbname=/, 'the settings name a database');

# ExecStart= as systemd expands it: $NAME splits at spaces, ${NAME} is one
# word, an unset name is nothing
sub exec_start {
    my ($line, $env) = @_;
    return map {
        /^\$(\w+)$/ ? split(' ', $env->{$1} // '')
      : /^\$\{(\w+)\}$/ ? ($env->{$1} // '')
      : $_
    } split ' ', $line;
}

# ---- at work: the distribution's nginx, the packaged writer ---------------

$t = WaTest->new(writer_bin => $WRITER, nginx_user => "$NGINX_USER $NGINX_USER",
                 load_module => "include $MOD_LINK;");
# the prefix's modules/ is Debian's (/usr/share/nginx/modules), so the
# packaged conf's relative path resolves as it does for the system nginx
symlink('/usr/share/nginx/modules', $t->dir . '/modules') or die "symlink: $!";
$t->start_pg;
$t->migrate;
cmp_ok($t->sql_value('SELECT count(*) FROM wa_schema_migrations'), '>', 0,
       'the packaged wa-writer migrated the database with its embedded migrations');
my $mock = $t->start_mock;
my $MEDIA_KEY = 'media-key-90';
$t->start_nginx(workers => 1, ring_size => '1m', ring_args => "group=$USER",
                server => $t->default_locations . <<EOF);
        location /wa-media-fetch {
            wa_media_fetch;
            wa_media_path $MEDIA_DIR;
            ${\ $mock->api_conf }
            wa_channel $WaTest::PHONE_ID business=1 token=$WaTest::TOKEN;
            wa_send_key $MEDIA_KEY;
            allow 127.0.0.1;
            deny all;
        }
        location /media/ {
            wa_media_serve;
            wa_media_path $MEDIA_DIR;
            wa_send_key $MEDIA_KEY;
        }
EOF

my @st = stat $t->ring;
is(sprintf('%o', $st[2] & 07777), '660', 'nginx made the ring 0660');
is($st[5], $pw[3], "of the group $USER");

my @workers = $t->worker_pids;
ok(@workers, 'nginx runs');
ok((grep { WaTest::slurp("/proc/$_/maps") =~ /\Q$MOD_SO\E/ } @workers) == @workers,
   'its workers run the packaged module');

# the writer as the unit runs it, by hand: systemd need not be running
my %env = (%settings, WA_RING => $t->ring, WA_DB => $t->dsn,
           WA_BATCH_DELAY_MS => 5, PATH => '/usr/sbin:/usr/bin:/sbin:/bin');
my @cmd = exec_start($unit{ExecStart}, \%env);
my $wpid = $t->start_writer_exec('setpriv', "--reuid=$unit{User}",
    "--regid=$unit{Group}", '--clear-groups', '/usr/bin/env', '-i',
    map({ "$_=$env{$_}" } sort keys %env), @cmd);

sub check_round {
    my ($how) = @_;

    my $r = $t->send_message({ to => '+972501234567', text => "Hello ($how)",
                               source => 'bot' });
    is($r->{status}, 200, "$how: a send is accepted") or diag($r->{content});
    my $row = $t->send_row($r->{json}{id} // '');
    is($row->{status}, 'sent', "$how: its row is sent");
    is($row->{provider_message_id}, $r->{json}{wamid}, "$how: with the wamid");
    is($row->{body}, "Hello ($how)", "$how: and the body");
    ok(scalar(grep { $_->{body} =~ /\Q($how)\E/ } $mock->requests),
       "$how: the mock Cloud API got it");

    my $m = message('text', from => '972509876543', text => "Hi ($how)");
    $r = $t->post_webhook(body(value(
        contacts => [ { profile => { name => 'Dana' }, wa_id => '972509876543' } ],
        messages => [ $m ])));
    is($r->{status}, 200, "$how: a webhook is accepted");
    my $q = 'SELECT m.direction, m.body, l.phone FROM whatsapp_message m
               JOIN leads l ON l.id = m.lead_id WHERE m.provider_message_id = ?';
    $t->wait_for(sub { @{ $t->sql($q, $m->{id}) } }, 15, "the $how webhook's row");
    is_deeply($t->sql($q, $m->{id}),
              [ { direction => 'in', body => "Hi ($how)", phone => '972509876543' } ],
              "$how: the webhook's message is stored with its lead");
}

check_round('by hand');

# inbound media, fetched by the packaged fetcher as its unit runs it, into
# the packaged directory, served back by nginx
my %menv = (%settings, WA_DB => $t->dsn, WA_MEDIA_KEY => $MEDIA_KEY,
            WA_MEDIA_URL => 'http://127.0.0.1:' . $t->port . '/wa-media-fetch',
            PATH => '/usr/sbin:/usr/bin:/sbin:/bin');
is($menv{WA_MEDIA_DIR}, $MEDIA_DIR, "the settings name $MEDIA_DIR");
my $mpid = $t->start_media_exec('setpriv', "--reuid=$media_unit{User}",
    "--regid=$media_unit{Group}", "--groups=$media_unit{SupplementaryGroups}",
    '/usr/bin/env', '-i', map({ "$_=$menv{$_}" } sort keys %menv),
    exec_start($media_unit{ExecStart}, \%menv));
my $media_id = "IMG_pkg_$$" . int(time * 1000);
my $m = message('image', from => '972509876543');
$m->{image}{id} = $media_id;
my $r = $t->post_webhook(body(value(messages => [ $m ],
    contacts => [ { profile => { name => 'Dana' }, wa_id => '972509876543' } ])));
is($r->{status}, 200, 'a webhook with an image is accepted');
my $mq = 'SELECT state, path, sha256 FROM wa_media WHERE media_id = ?';
$t->wait_for(sub { my $x = $t->sql($mq, $media_id)->[0]; $x && $x->{state} eq 'fetched' },
             30, 'the image fetched');
my $media = $t->sql($mq, $media_id)->[0] // {};
my $bytes = MockGraph::media_bytes($media_id);
is($media->{state}, 'fetched', 'the fetcher fetched it') or diag($t->media_log);
is($media->{sha256}, sha256_hex($bytes), 'its row has the sha256 of the bytes');
my $file = "$MEDIA_DIR/" . ($media->{path} // 'none');
is(sha256_hex(WaTest::slurp($file)), sha256_hex($bytes), "the file is in $MEDIA_DIR");
$r = $t->http('GET', "/media/$media->{path}", { 'X-WA-Key' => $MEDIA_KEY })
    if $media->{path};
is($r->{status}, 200, "nginx's workers serve it");
is(sha256_hex($r->{content}), sha256_hex($bytes), 'the bytes fetched');
my ($muid, $mgroups) = WaTest::slurp("/proc/$mpid/status") =~ /^Uid:\s+(\d+).*^Groups:\s*([\d ]*)$/ms;
is($muid, $pw[2], "the fetcher ran as $USER");
like(" $mgroups ", qr/ ${\ scalar getgrnam($NGINX_USER) } /, "in the group $NGINX_USER");
is($t->stop_media, 0, 'the fetcher stops cleanly on SIGTERM');
unlike($t->media_log, qr/CRITICAL|ERROR/, 'and logged no error') or diag($t->media_log);
# the test's own file: the packaged directories must be empty for the purge
$media_file = $file if $media->{path};
remove_media_file();

my ($uid) = WaTest::slurp("/proc/$wpid/status") =~ /^Uid:\s+(\d+)/m;
is($uid, $pw[2], "the writer ran as $USER");
is(readlink("/proc/$wpid/exe"), $WRITER, 'the writer is the packaged binary');
is($t->stop_writer, 0, 'the writer stops cleanly on SIGTERM');
unlike($t->writer_log, qr/CRITICAL|ERROR/, 'and logged no error') or diag($t->writer_log);

# ---- the unit itself, where systemd runs -----------------------------------

SKIP: {
    my $init = WaTest::slurp('/proc/1/comm');
    chomp $init;
    skip "systemd is not running (PID 1 is $init): the unit's command line, "
         . 'user and settings were run by hand above', 10
        unless -d '/run/systemd/system';

    # the test's ring and database in a runtime drop-in, removed at the
    # end: a second EnvironmentFile= (a later file overrides an earlier
    # one, and both override Environment=); the ring is in /tmp, which the
    # unit keeps private
    WaTest::spew($t->dir . '/writer.env', join '', map { "$_\n" }
        'WA_RING=' . $t->ring, 'WA_DB="' . $t->dsn . '"', 'WA_BATCH_DELAY_MS=5');
    system('mkdir', '-p', $DROPIN);
    WaTest::spew("$DROPIN/90-test.conf", <<EOF);
[Service]
EnvironmentFile=${\ $t->dir}/writer.env
PrivateTmp=no
ReadWritePaths=${\ $t->dir}
EOF
    run('systemctl daemon-reload');
    my ($rc, $out) = run('systemctl start wa-writer');
    is($rc, 0, 'systemctl start wa-writer') or diag($out);
    check_round('under systemd');
    (undef, $out) = run('systemctl show -p MainPID --value wa-writer');
    my ($suid) = WaTest::slurp("/proc/" . (0 + $out) . "/status") =~ /^Uid:\s+(\d+)/m;
    is($suid, $pw[2], "systemd runs it as $USER");
    ($rc, $out) = run('systemctl stop wa-writer');
    is($rc, 0, 'systemctl stop wa-writer') or diag($out);
    system('rm', '-rf', $DROPIN);
    run('systemctl daemon-reload');
}

$t->stop_nginx;

# ---- removed, then purged --------------------------------------------------

# removed: the binaries go, the admin's settings and the module's disabled
# link stay, for a reinstall to find them
my ($rc, $out) = apt('remove', @PKGS);
is($rc, 0, 'apt-get remove removes both packages') or diag($out);
ok(!-e $MOD_SO && !-e $WRITER, 'the module and the writer are gone');
ok(!-l $MOD_LINK && -l "$MOD_LINK.removed",
   'the modules-enabled link is set aside as .removed, as Debian does');
ok(-f $SETTINGS, "the conffile $SETTINGS stays until the purge");

($rc, $out) = purge();
is($rc, 0, 'apt-get purge purges both packages') or diag($out);
$installed = 0;
ok(!installed($_), "$_ is gone") for @PKGS;

sub leftovers {
    my @p;
    for my $d (glob '/proc/[0-9]*') {
        my $exe = readlink("$d/exe") // next;
        my ($u) = WaTest::slurp("$d/status") =~ /^Uid:\s+(\d+)/m;
        push @p, $d if $exe =~ /^\Q$WRITER\E/ || (defined $u && $u == $pw[2])
            || WaTest::slurp("$d/maps") =~ /\Q$MOD_SO\E/;
    }
    return @p;
}
$t->wait_for(sub { !leftovers() }, 10, 'no process of the packages');
is_deeply([ leftovers() ], [], 'no process runs the writer, as its user, or with the module');

# what may stay: directories other packages still hold (dpkg -S finds
# them) and the merged-/usr links (/lib -> usr/lib)
my @left = grep {
    (-e $_ || -l $_)
        && !(-d $_ && (-l $_ || (run("dpkg -S '$_'"))[0] == 0))
} grep({ $_ ne '/.' } @files), $MOD_LINK, "$MOD_LINK.removed", $SETTINGS;
is_deeply(\@left, [], 'no file of the packages is left') or diag("@left");
my (undef, $dsh) = run('ls /var/lib/systemd/deb-systemd-helper-enabled /var/lib/systemd/deb-systemd-helper-masked 2>/dev/null');
unlike($dsh, qr/wa-writer/, 'no systemd state of the unit is left');
# Debian does not remove system users on purge: a file may still be theirs
ok(scalar getpwnam($USER), "the system user $USER stays, as Debian leaves system users");

done_testing();
