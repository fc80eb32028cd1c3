#!/bin/sh
# make run: the embedded default. A private PostgreSQL under ./run, the
# schema, a mock Cloud API (unless WA_TOKEN and WA_PHONE_NUMBER_ID name a
# real channel), nginx with the module on 127.0.0.1:8080, the writer, and
# the media fetcher (files under ./run/media).
# Ctrl-C stops everything; a second run reuses the database.
set -eu

TOP=$(cd "$(dirname "$0")/.." && pwd)
RUN=${WA_RUN_DIR:-$TOP/run}
PORT=${WA_PORT:-8080}
PG_PORT=${WA_PG_PORT:-54329}
MOCK_PORT=${WA_MOCK_PORT:-8081}
PGBIN=/usr/lib/postgresql/15/bin
PHONE_ID=${WA_PHONE_NUMBER_ID:-106540352242922}
TOKEN=${WA_TOKEN:-mock-token}
SECRET=${WA_APP_SECRET:-}
VERIFY=${WA_VERIFY_TOKEN:-verify-me}

# PostgreSQL refuses root; the writer and nginx workers run unprivileged too
if [ "$(id -u)" = 0 ]; then
    AS="setpriv --reuid=nobody --regid=nogroup --clear-groups --reset-env"
    USER_LINE="user nobody nogroup;"
else
    AS=""
    USER_LINE=""
fi

mkdir -p "$RUN/pg" "$RUN/nginx" "$RUN/media"
[ "$(id -u)" = 0 ] && chown nobody:nogroup "$RUN" "$RUN/pg" "$RUN/nginx" "$RUN/media"
chmod 0755 "$RUN"

pids=""

stop() {
    trap - INT TERM EXIT
    echo
    echo "ngx_wa: stopping"
    [ -f "$RUN/nginx/nginx.pid" ] && kill -QUIT "$(cat "$RUN/nginx/nginx.pid")" 2>/dev/null || true
    for p in $pids; do kill -TERM "$p" 2>/dev/null || true; done
    for p in $pids; do wait "$p" 2>/dev/null || true; done
    $AS $PGBIN/pg_ctl -D "$RUN/pg" -m fast -w stop >/dev/null 2>&1 || true
    echo "ngx_wa: stopped; data kept in $RUN"
    exit 0
}
trap stop INT TERM EXIT

if [ ! -f "$RUN/pg/PG_VERSION" ]; then
    echo "ngx_wa: creating the database in $RUN/pg"
    $AS $PGBIN/initdb -D "$RUN/pg" -A trust -U wa -E UTF8 --locale=C.UTF-8 >"$RUN/initdb.log"
fi

$AS $PGBIN/pg_ctl -D "$RUN/pg" -l "$RUN/postgresql.log" -w \
    -o "-p $PG_PORT -k $RUN/pg -c listen_addresses=127.0.0.1" start >/dev/null
DSN="host=127.0.0.1 port=$PG_PORT dbname=postgres user=wa"

"$TOP/build/wa-writer" migrate --db "$DSN"

if [ -n "${WA_TOKEN:-}" ] && [ -n "${WA_PHONE_NUMBER_ID:-}" ]; then
    API_BASE=${WA_API_BASE:-https://graph.facebook.com/v21.0}
    echo "ngx_wa: sending through $API_BASE as $PHONE_ID"
else
    API_BASE="http://127.0.0.1:$MOCK_PORT"
    perl -I "$TOP/t/lib" -MMockGraph -e 'MockGraph::serve_forever(@ARGV)' \
        "$MOCK_PORT" "$RUN/mock" >"$RUN/mock.log" 2>&1 &
    pids="$pids $!"
    # nginx must not send before the mock listens
    perl -MIO::Socket::INET -e 'for (1 .. 100) {
        exit 0 if IO::Socket::INET->new("127.0.0.1:$ARGV[0]");
        select undef, undef, undef, 0.1 } exit 1' "$MOCK_PORT" \
        || { echo "ngx_wa: the mock Cloud API did not start: $RUN/mock.log" >&2; exit 1; }
    echo "ngx_wa: mock Cloud API on 127.0.0.1:$MOCK_PORT"
fi

SECRET_LINE=""
[ -n "$SECRET" ] && SECRET_LINE="wa_app_secret \"$SECRET\";"

cat >"$RUN/nginx/nginx.conf" <<EOF
load_module $TOP/build/nginx/ngx_http_wa_module.so;
$USER_LINE
worker_processes 2;
pid $RUN/nginx/nginx.pid;
error_log $RUN/nginx/error.log info;
events { worker_connections 1024; }
http {
    access_log $RUN/nginx/access.log;
    client_body_temp_path $RUN/nginx/body;
    wa_ring $RUN/ring size=64m;
    wa_verify_token "$VERIFY";
    $SECRET_LINE
    wa_channel $PHONE_ID business=1 token=$TOKEN;
    wa_default_business 1;
    wa_api_base $API_BASE;
    server {
        listen 127.0.0.1:$PORT;
        location = /webhook { wa_webhook; }
        location = /send    { wa_send; }
        location = /upload  { wa_media_upload; }
        location = /status  { wa_status; }
        location = /wa-media-fetch {
            wa_media_fetch;
            wa_media_path $RUN/media;
            allow 127.0.0.1;
            deny all;
        }
        location /media/ {
            wa_media_serve;
            wa_media_path $RUN/media;
        }
    }
}
EOF

/usr/sbin/nginx -p "$RUN/nginx" -c "$RUN/nginx/nginx.conf"

$AS "$TOP/build/wa-writer" --ring "$RUN/ring" --db "$DSN" 2>>"$RUN/writer.log" &
pids="$pids $!"

$AS "$TOP/build/wa-writer" media --db "$DSN" --media-dir "$RUN/media" \
    --media-url "http://127.0.0.1:$PORT/wa-media-fetch" 2>>"$RUN/media.log" &
pids="$pids $!"

cat <<EOF

ngx_wa is running: nginx on 127.0.0.1:$PORT, PostgreSQL on 127.0.0.1:$PG_PORT
logs: $RUN/nginx/error.log  $RUN/writer.log  $RUN/media.log

  # send a message (recorded before it is sent)
  curl -s localhost:$PORT/send -H 'Content-Type: application/json' \\
       -d '{"to":"+972501234567","text":"Hello","source":"manual"}'

  # upload a file to the media endpoint (its media id to send by "id")
  curl -s 'localhost:$PORT/upload?filename=notes.txt' -H 'Content-Type: text/plain' \\
       --data-binary @/etc/hostname

  # deliver a webhook as Meta would
  curl -s localhost:$PORT/webhook -H 'Content-Type: application/json' -d '{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550000000","phone_number_id":"$PHONE_ID"},"contacts":[{"profile":{"name":"Dana"},"wa_id":"972501234567"}],"messages":[{"from":"972501234567","id":"wamid.demo-'\$(date +%s%N)'","timestamp":"'\$(date +%s)'","type":"text","text":{"body":"Hi!"}}]}}]}]}'

  # ring and writer status (JSON; add ?format=prometheus for Prometheus)
  curl -s localhost:$PORT/status

  # what the CRM sees
  psql "$DSN" -c 'select m.id, m.direction, m.status, m.body, l.phone from whatsapp_message m join leads l on l.id = m.lead_id order by m.id'

Ctrl-C stops everything.
EOF

# short sleeps: a signal runs the trap within a second
while :; do sleep 1; done
