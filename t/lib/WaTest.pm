package WaTest;

# The integration harness: a private PostgreSQL, nginx with the built
# module, wa-writer and (for sends) a mock Cloud API, all on loopback, in a
# temporary directory; torn down when the test ends, however it ends.
#
# Daemons run unprivileged, as in production: under root, PostgreSQL (which
# refuses root), the writer and nginx's workers run as nobody.

use strict;
use warnings;

use Cwd qw(abs_path);
use DBI;
use Digest::SHA qw(hmac_sha256_hex);
use File::Spec;
use File::Temp qw(tempdir);
use FindBin;
use HTTP::Tiny;
use IO::Socket::INET;
use POSIX qw(:sys_wait_h);
use Test::More;
use Time::HiRes qw(sleep time);

our $TOP = abs_path("$FindBin::Bin/..");
# make test-asan points these at the sanitizer build
our $BUILD = $ENV{WA_BUILD} // "$TOP/build";
our @NGINX = ('/usr/sbin/nginx');
@NGINX = ('env', "LD_PRELOAD=$ENV{WA_PRELOAD}",
          # nginx's own allocations are not ours to leak-check
          "ASAN_OPTIONS=detect_leaks=0:log_path=$ENV{WA_SAN_REPORTS}/asan",
          @NGINX) if $ENV{WA_PRELOAD};
our $PGBIN = '/usr/lib/postgresql/15/bin';
# the made-up host name the world-like mock answers on (start_mock(world => 1))
our $WORLD_HOST = 'graph.wa-mock.test';
our $SECRET = 'test-app-secret';
our $VERIFY = 'test-verify-token';
our $TOKEN = 'TEST-TOKEN-do-not-log';
our $PHONE_ID = '106540352242922';

my @live;

# where test directories go: the system's temporary directory, unless it
# is in memory (a tmpfs /tmp), where nginx refuses wa_ring ... sync=on and
# the ring's disk behaviour is not what the tests are after: /var/tmp then
my $TEST_TMP;
sub test_tmp {
    return $TEST_TMP //= do {
        my $tmp = File::Spec->tmpdir;
        my $fs = `stat -f -c %T \Q$tmp\E 2>/dev/null` // '';
        ($fs =~ /^(tmpfs|ramfs)$/ && -d '/var/tmp') ? '/var/tmp' : $tmp;
    };
}

# new(%o): writer_bin => PATH runs another wa-writer (an installed one),
# load_module => LINES loads the module another way (an installed
# package's modules-enabled file) than the built .so
sub new {
    my ($class, %o) = @_;

    for my $f ($o{load_module} ? () : "$BUILD/nginx/ngx_http_wa_module.so",
               $o{writer_bin} // "$BUILD/wa-writer") {
        die "$f is missing: run make first\n" unless -e $f;
    }

    my $dir = tempdir('ngx_wa_t.XXXXXX', DIR => test_tmp(), CLEANUP => 0);
    chmod 0755, $dir;

    my $self = bless {
        dir       => $dir,
        root      => $> == 0,
        port      => free_port(),
        pg_port   => free_port(),
        writer    => undef,
        nginx_pid => undef,
        owner     => $$,
        %o,
    }, $class;

    mkdir "$dir/pg";
    if ($self->{root}) {
        my ($uid, $gid) = (getpwnam('nobody'))[2, 3];
        chown $uid, $gid, "$dir/pg";
    }

    push @live, $self;
    $SIG{INT} = $SIG{TERM} = sub { teardown_all(); exit 130 };

    return $self;
}

sub dir  { $_[0]{dir} }
sub writer_bin { $_[0]{writer_bin} // "$BUILD/wa-writer" }
sub port { $_[0]{port} }
# the ring file: in the test's directory unless set (bench/sync.pl puts
# it in /dev/shm too)
sub ring { $_[0]{ring_path} // "$_[0]{dir}/ring" }

sub free_port {
    my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                  Proto => 'tcp', Listen => 1, ReuseAddr => 1)
        or die "no free port: $!";
    my $p = $s->sockport;
    close $s;
    return $p;
}

# a command line run as the unprivileged user when we are root; setpriv
# execs in place, so signals reach the daemon itself
sub as_user {
    my ($self, @cmd) = @_;
    # the sanitizers' settings survive --reset-env
    my @san = map { "$_=$ENV{$_}" } grep { $ENV{$_} } qw(ASAN_OPTIONS UBSAN_OPTIONS);
    return $self->{root}
        ? ('setpriv', '--reuid=nobody', '--regid=nogroup', '--clear-groups',
           '--reset-env', @san ? ('env', @san) : (), @cmd)
        : @cmd;
}

sub run_quiet {
    my ($self, @cmd) = @_;
    my $out = `@{[ join ' ', map { quote($_) } @cmd ]} 2>&1`;
    return ($? >> 8, $out);
}

sub quote { my $s = shift; $s =~ s/'/'\\''/g; return "'$s'" }

# ---- PostgreSQL -----------------------------------------------------------

sub start_pg {
    my ($self) = @_;
    my $data = "$self->{dir}/pg";

    if (!-e "$data/PG_VERSION") {
        my ($rc, $out) = $self->run_quiet($self->as_user("$PGBIN/initdb",
            '-D', $data, '-A', 'trust', '-U', 'wa', '-E', 'UTF8',
            '--locale=C.UTF-8'));
        die "initdb failed: $out" if $rc;
    }

    my ($rc, $out) = $self->run_quiet($self->as_user("$PGBIN/pg_ctl",
        '-D', $data, '-l', "$data/postgresql.log", '-w', '-t', '60',
        '-o', "-p $self->{pg_port} -k $data -c listen_addresses=127.0.0.1"
              . " -c fsync=off -c full_page_writes=off"
              . join('', map { " -c $_" } @{ $self->{pg_settings} // [] }),
        'start'));
    die "pg_ctl start failed: $out" if $rc;

    $self->{pg_up} = 1;
}

sub stop_pg {
    my ($self, $mode) = @_;
    return unless $self->{pg_up};
    delete $self->{dbh};
    $self->run_quiet($self->as_user("$PGBIN/pg_ctl", '-D', "$self->{dir}/pg",
                                    '-m', $mode // 'fast', '-w', 'stop'));
    $self->{pg_up} = 0;
}

# the writer's connection string; new(dsn => ...) sets another (several
# hosts, say)
sub dsn {
    my ($self) = @_;
    return $self->{dsn} // "host=127.0.0.1 port=$self->{pg_port} dbname=postgres user=wa";
}

sub dbh {
    my ($self) = @_;
    return $self->{dbh} if $self->{dbh} && $self->{dbh}->ping;
    $self->{dbh} = DBI->connect(
        "dbi:Pg:host=127.0.0.1;port=$self->{pg_port};dbname=postgres", 'wa', '',
        { RaiseError => 1, AutoCommit => 1, PrintError => 0 });
    return $self->{dbh};
}

sub sql {
    my ($self, $q, @bind) = @_;
    return $self->dbh->selectall_arrayref($q, { Slice => {} }, @bind);
}

sub sql_value {
    my ($self, $q, @bind) = @_;
    return ($self->dbh->selectrow_array($q, undef, @bind))[0];
}

# the row of a send once its outcome is in (not pending), by local id
sub send_row {
    my ($self, $local_id) = @_;
    my $q = 'SELECT * FROM whatsapp_message WHERE local_id = ?';
    $self->wait_for(sub {
        my $r = $self->sql($q, $local_id);
        @$r && $r->[0]{status} ne 'pending';
    }, 15, "row $local_id");
    return $self->sql($q, $local_id)->[0];
}

sub migrate {
    my ($self) = @_;
    my ($rc, $out) = $self->run_quiet($self->writer_bin, 'migrate',
                                      '--db', $self->dsn);
    die "migrate failed: $out" if $rc;
    return $out;
}

# ---- wa-writer ------------------------------------------------------------

sub start_writer {
    my ($self, @extra) = @_;
    return $self->start_writer_exec($self->as_user(
        @{ $self->{writer_prefix} // [] }, $self->writer_bin,
        '--ring', $self->ring, '--db', $self->dsn, '--batch-delay-ms', '5',
        @extra));
}

# the writer as a whole command line of the caller's (another user, its
# settings from the environment), logging and stopped as start_writer's
sub start_writer_exec {
    my ($self, @cmd) = @_;
    die "writer already running" if $self->{writer};

    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        open STDOUT, '>>', "$self->{dir}/writer.log" or die;
        open STDERR, '>>', "$self->{dir}/writer.log" or die;
        { exec @cmd }
        print STDERR "exec $cmd[0]: $!\n";
        POSIX::_exit(127);
    }
    $self->{writer} = $pid;
    return $pid;
}

# wa-writer media, the fetcher of inbound media, logging to media.log
sub start_media {
    my ($self, @args) = @_;
    return $self->start_media_exec($self->as_user($self->writer_bin, 'media',
                                                  '--db', $self->dsn, @args));
}

# the fetcher as a whole command line of the caller's
sub start_media_exec {
    my ($self, @cmd) = @_;
    die "fetcher already running" if $self->{media_pid};
    my $pid = fork // die "fork: $!";
    if ($pid == 0) {
        open STDOUT, '>>', "$self->{dir}/media.log" or die;
        open STDERR, '>>', "$self->{dir}/media.log" or die;
        { exec @cmd }
        print STDERR "exec $cmd[0]: $!\n";
        POSIX::_exit(127);
    }
    return $self->{media_pid} = $pid;
}

sub stop_media {
    my ($self, $sig) = @_;
    my $pid = delete $self->{media_pid} or return;
    kill $sig // 'TERM', $pid;
    waitpid $pid, 0;
    return $?;
}

sub media_log { slurp("$_[0]{dir}/media.log") }

# the writer under a wrapper command (valgrind, ...)
sub start_writer_cmd {
    my ($self, @prefix) = @_;
    local $self->{writer_prefix} = \@prefix;
    return $self->start_writer;
}

sub stop_writer {
    my ($self, $sig) = @_;
    my $pid = delete $self->{writer} or return;
    kill $sig // 'TERM', $pid;
    my $t = time + 15;
    while (time < $t) {
        return $? if waitpid($pid, WNOHANG) == $pid;
        sleep 0.05;
    }
    kill 'KILL', $pid;
    waitpid $pid, 0;
    return $?;
}

sub kill_writer { $_[0]->stop_writer('KILL') }

sub writer_log { slurp("$_[0]{dir}/writer.log") }

# wait until the writer has committed everything in the ring
sub wait_drained {
    my ($self, $timeout) = @_;
    return $self->wait_for(sub {
        my (undef, $out) = $self->run_quiet($self->writer_bin, 'status',
                                            '--ring', $self->ring);
        $out =~ /^bytes_waiting 0$/m;
    }, $timeout, 'the writer to drain the ring');
}

# ---- nginx ----------------------------------------------------------------

sub nginx_conf {
    my ($self, %o) = @_;
    my $d = $self->{dir};
    # new(nginx_user => 'USER GROUP'): workers as another user than nobody
    my $user = $self->{root}
        ? 'user ' . ($self->{nginx_user} // 'nobody nogroup') . ';' : '';
    my $workers = $o{workers} // 2;
    my $size = $o{ring_size} // '1m';
    $o{ring_args} //= '';
    # WA_RING_SYNC=1 runs any test with wa_ring ... sync=on
    $o{ring_args} .= ' sync=on'
        if $ENV{WA_RING_SYNC} && $o{ring_args} !~ /\bsync=/;
    my $http = $o{http} // '';
    my $server = $o{server} // $self->default_locations;
    my $ring = $o{no_ring} ? '' : "wa_ring ${\ $self->ring } size=$size $o{ring_args};";
    my $level = $o{log_level} // 'info';
    my $main = $o{main} // '';
    # nginx gives its workers an empty environment but for TZ and what
    # `env` names: nss_wrapper reads its variables at lookup time, in the
    # worker's resolver thread, so they must survive into the workers
    $main .= join '', map { "\nenv $_;" } sort keys %{ $self->{nss_env} // {} };
    my $conns = $o{worker_connections} // 1024;

    my $paths = files_in($d);

    my $load = $self->{load_module}
        // "load_module $BUILD/nginx/ngx_http_wa_module.so;";

    return <<EOF;
$load
$user
worker_processes $workers;
pid $d/nginx.pid;
error_log $d/error.log $level;
$main
events { worker_connections $conns; }
http {
$paths
    $ring
    $http
    server {
        listen 127.0.0.1:$self->{port};
        $server
    }
}
EOF
}

# The mock Cloud API. Plain: HTTP/1.1 on http://127.0.0.1:PORT. With
# world => 1, reached the way Meta is: by host name ($WORLD_HOST, resolved
# by nss_wrapper in the nginx under test only), over TLS with a certificate
# from a test CA, over HTTP/2, through a separate nginx front that proxies
# to the same Perl mock. Either way ->requests lists what the mock got;
# ->url is what wa_api_base takes and ->api_conf the directives a send
# location needs (wa_api_base, and on the world path the CA to trust).
sub start_mock {
    my ($self, %o) = @_;
    require MockGraph;
    # rate/burst: the mock enforces Meta's per-number throughput
    my $mock = MockGraph->start(dir => "$self->{dir}/mock",
                                map { $_ => $o{$_} } grep { $o{$_} } qw(rate burst));
    $self->{mock} = $mock;
    return $mock unless $o{world};

    $self->{world} = 1;
    my $tls = $self->make_ca('ca', $WORLD_HOST);
    $self->setup_nss_wrapper;
    my $port = $self->start_front($tls, $mock->port);
    $mock->{url} = "https://$WORLD_HOST:$port";
    $mock->{ca} = $tls->{ca};
    $mock->{front_port} = $port;
    $mock->{front_log} = "$self->{dir}/front/error.log";
    return $mock;
}

sub mock { $_[0]{mock} }
sub world { $_[0]{world} }

# a fresh test CA under tls/NAME/ (ca.pem, ca.key) and, given host names,
# a server key and certificate for them (server.key, server.pem) signed by
# it with the names as DNS subjectAltNames; returns the paths. EC P-256
# keys: a few ms each, so make test does not notice.
sub make_ca {
    my ($self, $name, @hosts) = @_;
    my $d = "$self->{dir}/tls/$name";
    system('mkdir', '-p', $d) == 0 or die "mkdir $d";
    my %f = (dir => $d, ca => "$d/ca.pem", ca_key => "$d/ca.key");

    spew("$d/ca.cnf", <<EOF);
[req]
distinguished_name = dn
prompt = no
x509_extensions = v3_ca
[dn]
CN = ngx_wa test CA $name
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
EOF
    my @ec = ('-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes');
    my ($rc, $out) = $self->run_quiet('openssl', 'req', '-x509', @ec,
        '-config', "$d/ca.cnf", '-keyout', $f{ca_key}, '-out', $f{ca},
        '-days', '30');
    die "openssl: the test CA: $out" if $rc;
    chmod 0755, "$self->{dir}/tls", $d;
    chmod 0644, $f{ca};
    return \%f unless @hosts;

    spew("$d/server.cnf", <<EOF);
[req]
distinguished_name = dn
prompt = no
[dn]
CN = $hosts[0]
EOF
    spew("$d/server.ext", join("\n",
        'basicConstraints = CA:FALSE',
        'keyUsage = critical,digitalSignature,keyEncipherment',
        'extendedKeyUsage = serverAuth',
        'subjectKeyIdentifier = hash',
        'authorityKeyIdentifier = keyid',
        'subjectAltName = ' . join(',', map { "DNS:$_" } @hosts), ''));
    @f{qw(key csr cert)} = ("$d/server.key", "$d/server.csr", "$d/server.pem");
    ($rc, $out) = $self->run_quiet('openssl', 'req', '-new', @ec,
        '-config', "$d/server.cnf", '-keyout', $f{key}, '-out', $f{csr});
    die "openssl: the server key and CSR: $out" if $rc;
    ($rc, $out) = $self->run_quiet('openssl', 'x509', '-req', '-in', $f{csr},
        '-CA', $f{ca}, '-CAkey', $f{ca_key}, '-CAcreateserial',
        '-extfile', "$d/server.ext", '-out', $f{cert}, '-days', '30');
    die "openssl: signing the server certificate: $out" if $rc;
    return \%f;
}

# where Debian's libnss-wrapper put its library
sub nss_wrapper_lib {
    my @l = grep { m{/libnss_wrapper\.so$} } split /\n/, `dpkg -L libnss-wrapper 2>/dev/null`;
    @l = glob('/usr/lib/*/libnss_wrapper.so') unless @l;
    return $l[0] // die "libnss_wrapper.so not found: make deps (libnss-wrapper)\n";
}

# the names the nginx under test may resolve, and the environment that
# makes it resolve them through nss_wrapper: only hosts of our own (a name
# not in the file does not resolve at all), passwd and group copied from
# the system's so `user nobody nogroup` still works
sub setup_nss_wrapper {
    my ($self, %hosts) = @_;
    my $d = "$self->{dir}/nss";
    mkdir $d;
    chmod 0755, $d;
    %hosts = ($WORLD_HOST => '127.0.0.1') unless %hosts;
    spew("$d/hosts", join('', map { "$hosts{$_} $_\n" } sort keys %hosts));
    system('cp', '/etc/passwd', "$d/passwd") == 0 or die 'cp passwd';
    system('cp', '/etc/group', "$d/group") == 0 or die 'cp group';
    chmod 0644, map { "$d/$_" } qw(hosts passwd group);
    $self->{nss_env} = {
        NSS_WRAPPER_HOSTS  => "$d/hosts",
        NSS_WRAPPER_PASSWD => "$d/passwd",
        NSS_WRAPPER_GROUP  => "$d/group",
    };
    $self->{nss_lib} = nss_wrapper_lib();
}

# the command line that starts the nginx under test: the sanitizer runtime
# first when make test-asan asks for it, then nss_wrapper on the world path
# The nginx under test: LD_PRELOAD holds ASan's runtime first (make
# test-asan), then nss_wrapper (the world mock), then the test shims given
# to new(preload => [...]).
sub nginx_cmd {
    my ($self) = @_;
    my @pre = (grep({ $_ } $ENV{WA_PRELOAD}, $self->{nss_lib}),
               @{ $self->{preload} // [] });
    return @NGINX unless @pre;
    my $e = $self->{nss_env} // {};
    return ('env', 'LD_PRELOAD=' . join(':', @pre),
            $ENV{WA_PRELOAD}
                ? "ASAN_OPTIONS=detect_leaks=0:log_path=$ENV{WA_SAN_REPORTS}/asan" : (),
            map({ "$_=$e->{$_}" } sort keys %$e), '/usr/sbin/nginx');
}

# The TLS + HTTP/2 front: a separate nginx (not the one under test: its own
# conf, pid and logs under front/, no module, no nss_wrapper) on its own
# port with the server certificate, proxying to the Perl mock over kept-
# alive HTTP/1.1. X-Front-Conn and X-Front-Proto tell the mock which
# client connection, and which protocol, carried each request.
#
# What a client sees of the mock's answers through it: DROP_ (the mock
# hangs up) becomes a reset stream (444 on the front's own 502), TRUNC_ a
# stream reset after half the body, BADJSON_ and the rest pass through;
# CLOSE_AFTER_ closes only the front's upstream connection, the client's
# HTTP/2 connection stays up.
# an nginx's access log and temporary files, all in its own directory
sub files_in {
    my ($d) = @_;
    return join "\n", map { "    $_;" } "access_log $d/access.log",
        "client_body_temp_path $d/body",
        map { "${_}_temp_path $d/$_" } qw(proxy fastcgi uwsgi scgi);
}

sub front_conf {
    my ($self, $tls, $port, $mock_port) = @_;
    my $d = "$self->{dir}/front";
    my $user = $self->{root} ? 'user nobody nogroup;' : '';
    my $paths = files_in($d);
    return <<EOF;
$user
worker_processes 1;
pid $d/nginx.pid;
error_log $d/error.log info;
events { worker_connections 1024; }
http {
$paths
    # Meta's media endpoint takes documents of 100 MB (t/47 uploads 50)
    client_max_body_size 101m;

    upstream mock_graph {
        server 127.0.0.1:$mock_port;
        keepalive 32;
    }

    server {
        listen 127.0.0.1:$port ssl http2;
        server_name $WORLD_HOST;
        ssl_certificate $tls->{cert};
        ssl_certificate_key $tls->{key};
        keepalive_timeout 300s;
        keepalive_requests 100000;

        location / {
            proxy_pass http://mock_graph;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Front-Conn \$connection;
            proxy_set_header X-Front-Proto \$server_protocol;
            # the name and port the client used: links the mock hands out
            # (media downloads) lead back through the front
            proxy_set_header X-Front-Host \$http_host;
            proxy_read_timeout 60s;
            # the mock hung up without answering: hang up on the client
            # too (a reset stream), not a 502 page the mock never sent
            error_page 502 = \@drop;
        }
        location \@drop { return 444; }
    }
}
EOF
}

sub start_front {
    my ($self, $tls, $mock_port) = @_;
    my $d = "$self->{dir}/front";
    mkdir $d;
    my $port = free_port();
    spew("$d/nginx.conf", $self->front_conf($tls, $port, $mock_port));
    my ($rc, $out) = $self->run_quiet('/usr/sbin/nginx', '-p', $d, '-c', "$d/nginx.conf");
    die "front nginx failed to start: $out" . slurp("$d/error.log") if $rc;
    $self->wait_for(sub { -s "$d/nginx.pid" }, 10, 'front nginx pid')
        or die "no front nginx pid file";
    $self->{front_pid} = 0 + slurp("$d/nginx.pid");
    $self->wait_for(sub {
        IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port")
    }, 10, 'front nginx port') or die "front nginx does not listen";
    return $port;
}

sub stop_front {
    my ($self) = @_;
    my $pid = delete $self->{front_pid} or return;
    kill 'QUIT', $pid;
    $self->wait_for(sub { !kill 0, $pid }, 10, 'front nginx exit') or kill 'KILL', $pid;
}

sub default_locations {
    my ($self) = @_;
    my $send = !$self->{mock} ? '' : <<EOF;
        location /send {
            wa_send;
            ${\ $self->{mock}->api_conf }
            wa_channel $PHONE_ID business=1 token=$TOKEN;
            wa_send_timeout 3s;
        }
EOF
    return $send . <<EOF;
        location /webhook {
            wa_webhook;
            wa_verify_token $VERIFY;
            wa_app_secret $SECRET;
            wa_channel $PHONE_ID business=1 token=$TOKEN;
            wa_default_business 99;
        }
        location /wa_status { wa_status; }
EOF
}

# nginx's command line, with the libraries of WaTest->new(preload =>
# [...]) preloaded after ASan's runtime (make test-asan), which must stay
# first
sub start_nginx {
    my ($self, %o) = @_;
    my $conf = "$self->{dir}/nginx.conf";
    spew($conf, $self->nginx_conf(%o));

    my ($rc, $out) = $self->run_quiet($self->nginx_cmd, '-p', $self->{dir},
                                      '-c', $conf);
    die "nginx failed to start: $out" . $self->error_log if $rc;

    $self->wait_for(sub { -s "$self->{dir}/nginx.pid" }, 10, 'nginx pid')
        or die "no nginx pid file";
    $self->{nginx_pid} = 0 + slurp("$self->{dir}/nginx.pid");
    $self->wait_for(sub {
        IO::Socket::INET->new(PeerAddr => "127.0.0.1:$self->{port}")
    }, 10, 'nginx port') or die "nginx does not listen";
}

sub worker_pids {
    my ($self) = @_;
    my $m = $self->{nginx_pid} or return ();
    return map { 0 + $_ } grep { /\d/ } split /\s+/, `ps -o pid= --ppid $m`;
}

sub reload_nginx {
    my ($self) = @_;
    my %old = map { $_ => 1 } $self->worker_pids;
    kill 'HUP', $self->{nginx_pid};
    $self->wait_for(sub {
        my @w = $self->worker_pids;
        @w && !grep { $old{$_} } @w;
    }, 20, 'new workers');
}

sub stop_nginx {
    my ($self) = @_;
    my $pid = delete $self->{nginx_pid} or return;
    kill 'QUIT', $pid;
    $self->wait_for(sub { !kill 0, $pid }, 10, 'nginx exit') or kill 'KILL', $pid;
}

sub error_log { slurp("$_[0]{dir}/error.log") }

# nginx -t on a configuration; (exit code, output)
sub nginx_t {
    my ($self, %o) = @_;
    my $conf = "$self->{dir}/test.conf";
    spew($conf, $o{raw} // $self->nginx_conf(%o));
    return $self->run_quiet($self->nginx_cmd, '-t', '-p', $self->{dir},
                            '-c', $conf);
}

# ---- HTTP -----------------------------------------------------------------

sub http {
    my ($self, $method, $path, $headers, $body) = @_;
    my $ua = HTTP::Tiny->new(timeout => 30, keep_alive => 0);
    my $r = $ua->request($method, "http://127.0.0.1:$self->{port}$path", {
        headers => $headers // {},
        defined $body ? (content => $body) : (),
    });
    return $r;
}

sub post_webhook {
    my ($self, $body, %o) = @_;
    my $secret = exists $o{secret} ? $o{secret} : $SECRET;
    my %h = ('Content-Type' => 'application/json', %{ $o{headers} // {} });
    $h{'X-Hub-Signature-256'} = 'sha256=' . hmac_sha256_hex($body, $secret)
        if defined $secret;
    return $self->http('POST', $o{path} // '/webhook', \%h, $body);
}

# POST /send with a JSON body (a hashref, or raw text)
sub send_message {
    my ($self, $req, %o) = @_;
    require JSON::PP;
    my $body = ref $req ? JSON::PP->new->utf8->canonical->encode($req) : $req;
    my $r = $self->http('POST', $o{path} // '/send',
                        { 'Content-Type' => 'application/json',
                          %{ $o{headers} // {} } }, $body);
    $r->{json} = eval { JSON::PP->new->utf8->decode($r->{content}) };
    return $r;
}

# a send made by a child process, so that several are in flight at once:
# its pid, which exits 0 on a 200
sub send_in_child {
    my ($self, $req, %o) = @_;
    my $k = fork // die "fork: $!";
    return $k if $k;
    $self->{down} = 1;          # the child tears nothing down
    my $r = $self->send_message($req, %o);
    POSIX::_exit($r->{status} == 200 ? 0 : 1);
}

# ---- helpers --------------------------------------------------------------

sub wait_for {
    my ($self, $code, $timeout, $what) = @_;
    my $t = time + ($timeout // 10);
    while (time < $t) {
        return 1 if $code->();
        sleep 0.05;
    }
    diag("timed out waiting for " . ($what // 'condition'));
    return 0;
}

sub slurp {
    my ($f) = @_;
    open my $fh, '<', $f or return '';
    local $/;
    return scalar <$fh>;
}

# the machine's busy CPU time so far, in seconds over all cores: user,
# nice, system, interrupts, steal (/proc/stat's first line); the benches'
# CPU per request
my $HZ = POSIX::sysconf(POSIX::_SC_CLK_TCK()) || 100;
sub cpu_busy {
    my @f = split ' ', (split /\n/, slurp('/proc/stat'))[0];
    my $busy = 0;
    $busy += $f[$_] // 0 for 1, 2, 3, 6, 7, 8;
    return $busy / $HZ;
}

sub spew {
    my ($f, $s) = @_;
    open my $fh, '>', $f or die "$f: $!";
    print $fh $s;
    close $fh;
}

sub tail {
    my ($s, $n) = @_;
    my @l = split /\n/, $s;
    return join "\n", @l > $n ? @l[-$n .. -1] : @l;
}

sub teardown {
    my ($self) = @_;
    return if $self->{down}++;

    if (!Test::More->builder->is_passing) {
        diag("--- nginx error.log (tail) ---\n" . tail($self->error_log, 30));
        diag("--- writer.log (tail) ---\n" . tail($self->writer_log, 30));
        diag("--- front nginx error.log (tail) ---\n"
             . tail(slurp("$self->{dir}/front/error.log"), 15)) if $self->{front_pid};
    }

    $self->stop_nginx;
    $self->stop_writer;
    $self->stop_media;
    $self->save_sanitizer_reports;
    $self->stop_front;
    $self->{mock}->stop if $self->{mock};
    $self->stop_pg('immediate');

    if ($ENV{WA_KEEP}) {
        diag("kept $self->{dir}");
    } else {
        system('rm', '-rf', $self->{dir});
    }
}

# UBSan (and ASan before its log file opens) may write to stderr, which
# is nginx's error log or the writer's log: under make test-asan, keep any
# such line where the target looks for reports
sub save_sanitizer_reports {
    my ($self) = @_;
    my $dir = $ENV{WA_SAN_REPORTS} or return;
    my @found = grep { /runtime error:|AddressSanitizer|LeakSanitizer/ }
                split /\n/, $self->error_log . "\n" . $self->writer_log;
    return unless @found;
    spew("$dir/from-logs." . $$ . '.' . int(rand 1e9), join("\n", @found) . "\n");
}

# only in the process that started them: a forked helper (a mock, a flood
# client) that dies or exits must not run the test's teardown
sub teardown_all { $_->teardown for grep { $_->{owner} == $$ } @live; @live = () }

END {
    my $rc = $?;
    teardown_all();
    $? = $rc;
}

1;
