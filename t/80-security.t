#!/usr/bin/perl
# Who may write the ring, who may send, and what the logs may never show.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Time::HiRes qw(sleep);
use WaTest;
use WaPayload qw(body value message);

my $t = WaTest->new;
$t->start_pg;
$t->migrate;
my $mock = $t->start_mock;
my $url = $mock->url;
my $KEY = 'SeNdKeY-0123456789abcdef';
my $OLD_KEY = 'OlDsEnDkEy-rotating-out';

my $locations = $t->default_locations . <<EOF;
        location /send_keyed {
            wa_send;
            wa_api_base $url;
            wa_channel $WaTest::PHONE_ID business=1 token=$WaTest::TOKEN;
            wa_send_key $KEY;
            wa_send_key $OLD_KEY;
        }
EOF

# every log line nginx has, debug included: a secret that leaks shows here
$t->start_nginx(workers => 1, log_level => 'debug', server => $locations);

my $DB_PASSWORD = 'PgPaSsWoRd-never-logged';
{
    # trust authentication ignores the password; the writer must not echo it
    no warnings 'redefine';
    my $dsn = $t->dsn;
    *WaTest::dsn = sub { "$dsn password=$DB_PASSWORD" };
}
$t->start_writer;

sub mock_count { scalar(my @r = $mock->requests) }

# ---- the ring file: 0600, the workers' user --------------------------------

my @st = stat $t->ring;
is(sprintf('%04o', $st[2] & 07777), '0600', 'the ring is created 0600');
SKIP: {
    skip 'not root: nginx runs as this user', 1 unless $> == 0;
    is(scalar getpwuid($st[4]), 'nobody', 'owned by the worker user');
}

# ---- wa_send_key ------------------------------------------------------------

my $req = { to => '972501110000', text => 'keyed' };
my $before = mock_count();
my $r = $t->send_message($req, path => '/send_keyed');
is($r->{status}, 401, 'no X-WA-Key: 401');
like($r->{json}{error} // '', qr/X-WA-Key/, 'the error names the header');
is($t->send_message($req, path => '/send_keyed',
                    headers => { 'X-WA-Key' => 'wrong' })->{status},
   401, 'a wrong key: 401');
is($t->send_message($req, path => '/send_keyed',
                    headers => { 'X-WA-Key' => substr($KEY, 0, -1) })->{status},
   401, 'a prefix of the key: 401');
is(mock_count(), $before, 'refused sends never reach the provider');
is($t->sql_value("SELECT count(*) FROM whatsapp_message WHERE body = 'keyed'"),
   0, 'and record nothing');
is($t->send_message($req, path => '/send_keyed',
                    headers => { 'X-WA-Key' => $KEY })->{status},
   200, 'the key: 200');
is($t->send_message({ %$req, text => 'old key' }, path => '/send_keyed',
                    headers => { 'X-WA-Key' => $OLD_KEY })->{status},
   200, 'a second key (rotation): 200');
like($t->error_log, qr/wrong X-WA-Key, refused/, 'refusals are logged');

# ---- secrets in logs, at debug level ----------------------------------------

my $m = message('text');
$t->post_webhook(body(value(messages => [$m])));
$t->post_webhook(body(value(messages => [ message('text') ])), secret => 'bad');
$t->http('GET', "/webhook?hub.mode=subscribe&hub.verify_token=wrong&hub.challenge=1");
$t->send_message({ to => '972501110001', text => 'logged?' });
$t->send_message({ to => '972501110002', text => 'FAIL_131030' });
$t->http('GET', '/wa_status');
ok($t->wait_for(sub {
    $t->sql_value('SELECT count(*) FROM whatsapp_message WHERE provider_message_id = ?',
                  $m->{id}) == 1 }, 15, 'stored'), 'traffic stored');

my $logs = $t->error_log . WaTest::slurp($t->dir . '/access.log')
         . $t->writer_log;
ok(length $t->error_log > 10_000, 'nginx logged at debug level ('
   . length($t->error_log) . ' bytes)');
unlike($logs, qr/\Q$WaTest::SECRET\E/, 'the app secret is in no log');
unlike($logs, qr/\Q$WaTest::TOKEN\E/, 'the channel token is in no log');
unlike($logs, qr/\Q$DB_PASSWORD\E/, 'the database password is in no log');

# nginx's core prints every request header at debug level, ours included;
# none of the module's own lines may show a key
my @ours = grep { !/http header:|http alloc large header/ } split /\n/, $t->error_log;
ok(!grep({ /\Q$KEY\E|\Q$OLD_KEY\E/ } @ours), 'no send key in any line of the module');
unlike($t->writer_log, qr/\Q$KEY\E/, 'nor in the writer log');

# ---- group=: 0660 and the group, set on reload too ---------------------------

WaTest::spew($t->dir . '/nginx.conf',
             $t->nginx_conf(workers => 1, ring_args => 'group=nogroup',
                            server => $locations));
$t->reload_nginx;
@st = stat $t->ring;
is(sprintf('%04o', $st[2] & 07777), '0660', 'group=: the ring becomes 0660');
SKIP: {
    skip 'not root: chown to another group needs membership', 1 unless $> == 0;
    is(scalar getgrgid($st[5]), 'nogroup', 'and of that group');
}

# ---- a ring any user may write is refused, by the writer and by nginx ------

$t->stop_writer;
chmod 0666, $t->ring;
$t->start_writer;
ok($t->wait_for(sub { $t->writer_log =~ /writable by any user/ }, 10, 'refusal'),
   'the writer refuses a world-writable ring');
like($t->writer_log, qr/ERROR.*cannot use the ring/, 'at ERROR, naming the ring');
$t->stop_writer;

WaTest::spew($t->dir . '/nginx.conf',
             $t->nginx_conf(workers => 1, server => $locations));
$t->stop_nginx;
$t->start_nginx(workers => 1, server => $locations);
like($t->error_log, qr/writable by any user.*chmod o-w/, 'nginx refuses it too, saying why');
is($t->post_webhook(body(value(messages => [ message('text') ])))->{status}, 503,
   'webhooks get 503 meanwhile');
is(sprintf('%04o', (stat $t->ring)[2] & 07777), '0666',
   'and the file is left as it is, for the operator to look at');

chmod 0600, $t->ring;
ok($t->wait_for(sub {
    $t->post_webhook(body(value(messages => [ message('text') ])))->{status} == 200
}, 10, 'recovery'), 'chmod o-w: webhooks accepted again');

# ---- the constant-time compares are the library's ---------------------------

my $src = join '', map { WaTest::slurp("$WaTest::TOP/ngx_wa_module/$_") }
    qw(ngx_http_wa_webhook.c ngx_http_wa_send.c ngx_http_wa_idem.c
       ngx_http_wa_module.c ngx_http_wa_reply.c);
# a comparison of two runtime values (no literal) that names a secret
unlike($src, qr/(?<![A-Z_])(memcmp|strcmp|strncmp|ngx_strncmp|ngx_memcmp)\s*\((?![^;]*")[^;]*(secret|token|key|md)\b/i,
       'no plain memcmp on secrets, tokens, keys or digests');
like($src, qr/CRYPTO_memcmp\(md, given, 32\)/, 'the signature compare is CRYPTO_memcmp');

done_testing();
