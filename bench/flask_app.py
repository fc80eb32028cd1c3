"""The seed's architecture, as the baseline: a Flask app under gunicorn that,
per webhook request, parses the JSON, upserts each message's lead and
inserts the message into PostgreSQL, committing before it answers 200.
Same schema as ngx_wa (wa-writer migrate). DSN from WA_BENCH_DSN.
"""

import os

import psycopg2
from flask import Flask, request

app = Flask(__name__)
_conn = None


def conn():
    # one connection per gunicorn worker process, opened on first use
    global _conn
    if _conn is None or _conn.closed:
        _conn = psycopg2.connect(os.environ["WA_BENCH_DSN"])
    return _conn


@app.post("/webhook")
def webhook():
    event = request.get_json(force=True)
    c = conn()
    with c, c.cursor() as cur:
        for entry in event.get("entry", []):
            for change in entry.get("changes", []):
                value = change.get("value", {})
                for m in value.get("messages", []):
                    cur.execute(
                        "INSERT INTO leads (business_id, phone, name)"
                        " VALUES (1, %s, %s)"
                        " ON CONFLICT (phone, business_id)"
                        " DO UPDATE SET phone = EXCLUDED.phone"
                        " RETURNING id",
                        (m["from"], "Bench"))
                    lead_id = cur.fetchone()[0]
                    cur.execute(
                        "INSERT INTO whatsapp_message (business_id, lead_id,"
                        " direction, phone, phone_number_id,"
                        " provider_message_id, type, body, status)"
                        " VALUES (1, %s, 'in', %s, %s, %s, %s, %s,"
                        " 'received')"
                        " ON CONFLICT (provider_message_id, business_id)"
                        " DO NOTHING",
                        (lead_id, m["from"],
                         value["metadata"]["phone_number_id"], m["id"],
                         m["type"], m.get("text", {}).get("body")))
    return {"ok": True}
