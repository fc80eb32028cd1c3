-- 001: the CRM tables ngx_wa writes to, and the writer's own tables.
--
-- Safe to run twice and against a database that already has older versions
-- of these tables: every column is added IF NOT EXISTS, every constraint is
-- added only when no equivalent one exists (looked up by its columns, not
-- its name, so a hand-made constraint of another name is reused).
--
-- whatsapp_message.lead_id is NOT created here: 002 adds it, so a table that
-- predates it goes through the same path as a fresh one.

-- ADD CONSTRAINT UNIQUE (cols) unless a unique or primary key constraint on
-- exactly these columns exists already.
CREATE OR REPLACE FUNCTION wa_ensure_unique(p_table regclass, p_name text,
    p_cols text[])
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_want  int2[];
BEGIN
    SELECT array_agg(a.attnum ORDER BY a.attnum) INTO v_want
      FROM pg_attribute a
     WHERE a.attrelid = p_table AND a.attname = ANY (p_cols)
       AND NOT a.attisdropped;

    IF coalesce(cardinality(v_want), 0) <> cardinality(p_cols) THEN
        RAISE EXCEPTION 'wa_ensure_unique: % lacks one of the columns %',
            p_table, p_cols;
    END IF;

    IF EXISTS (SELECT 1 FROM pg_constraint c
                WHERE c.conrelid = p_table AND c.contype IN ('u', 'p')
                  AND (SELECT array_agg(k ORDER BY k) FROM unnest(c.conkey) k)
                      = v_want)
    THEN
        RETURN;
    END IF;

    EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I UNIQUE (%s)', p_table,
                   p_name, (SELECT string_agg(quote_ident(c), ', ')
                              FROM unnest(p_cols) c));
END
$$;


-- leads: one per person and business. phone is E.164 digits without '+';
-- wa_user_id is the business-scoped WhatsApp user id of users who hide
-- their number.

CREATE TABLE IF NOT EXISTS leads (
    id           bigserial PRIMARY KEY,
    business_id  bigint NOT NULL
);

ALTER TABLE leads ADD COLUMN IF NOT EXISTS business_id bigint;
ALTER TABLE leads ADD COLUMN IF NOT EXISTS phone text;
ALTER TABLE leads ADD COLUMN IF NOT EXISTS wa_user_id text;
ALTER TABLE leads ADD COLUMN IF NOT EXISTS name text;
ALTER TABLE leads ADD COLUMN IF NOT EXISTS created_at timestamptz
    NOT NULL DEFAULT now();

-- Unique keys lead with their selective column: no two indexes share a
-- first column, so even the generic plan of a lookup made while a table is
-- still tiny (a fresh install) cannot pick an index that only narrows by
-- business and filters the rest, which turns every lookup into a scan.
SELECT wa_ensure_unique('leads', 'leads_phone_business_key',
                        ARRAY['phone', 'business_id']);
SELECT wa_ensure_unique('leads', 'leads_wa_user_id_business_key',
                        ARRAY['wa_user_id', 'business_id']);


-- whatsapp_message: every message in and out, and its delivery state.

CREATE TABLE IF NOT EXISTS whatsapp_message (
    id           bigserial PRIMARY KEY,
    business_id  bigint NOT NULL
);

ALTER TABLE whatsapp_message ADD COLUMN IF NOT EXISTS business_id bigint;
ALTER TABLE whatsapp_message ADD COLUMN IF NOT EXISTS direction text;
ALTER TABLE whatsapp_message ADD COLUMN IF NOT EXISTS phone text;
ALTER TABLE whatsapp_message ADD COLUMN IF NOT EXISTS wa_user_id text;
ALTER TABLE whatsapp_message ADD COLUMN IF NOT EXISTS phone_number_id text;
ALTER TABLE whatsapp_message ADD COLUMN IF NOT EXISTS provider_message_id text;
ALTER TABLE whatsapp_message ADD COLUMN IF NOT EXISTS client_ref text;
ALTER TABLE whatsapp_message ADD COLUMN IF NOT EXISTS local_id text;
ALTER TABLE whatsapp_message ADD COLUMN IF NOT EXISTS source text;
ALTER TABLE whatsapp_message ADD COLUMN IF NOT EXISTS type text;
ALTER TABLE whatsapp_message ADD COLUMN IF NOT EXISTS body text;
ALTER TABLE whatsapp_message ADD COLUMN IF NOT EXISTS payload jsonb;
ALTER TABLE whatsapp_message ADD COLUMN IF NOT EXISTS status text;
ALTER TABLE whatsapp_message ADD COLUMN IF NOT EXISTS error_code integer;
ALTER TABLE whatsapp_message ADD COLUMN IF NOT EXISTS error_title text;
ALTER TABLE whatsapp_message ADD COLUMN IF NOT EXISTS error_detail text;
ALTER TABLE whatsapp_message ADD COLUMN IF NOT EXISTS retryable boolean;
ALTER TABLE whatsapp_message ADD COLUMN IF NOT EXISTS fbtrace_id text;
ALTER TABLE whatsapp_message ADD COLUMN IF NOT EXISTS provider_ts timestamptz;
ALTER TABLE whatsapp_message ADD COLUMN IF NOT EXISTS created_at timestamptz
    NOT NULL DEFAULT now();
ALTER TABLE whatsapp_message ADD COLUMN IF NOT EXISTS sent_at timestamptz;
ALTER TABLE whatsapp_message ADD COLUMN IF NOT EXISTS delivered_at timestamptz;
ALTER TABLE whatsapp_message ADD COLUMN IF NOT EXISTS read_at timestamptz;
ALTER TABLE whatsapp_message ADD COLUMN IF NOT EXISTS updated_at timestamptz
    NOT NULL DEFAULT now();

-- the idempotency keys: a retried webhook, a replayed ring record and a
-- repeated client_ref all land on the same row (selective column first,
-- as for leads)
SELECT wa_ensure_unique('whatsapp_message', 'whatsapp_message_wamid_business_key',
                        ARRAY['provider_message_id', 'business_id']);
SELECT wa_ensure_unique('whatsapp_message',
                        'whatsapp_message_client_ref_business_key',
                        ARRAY['client_ref', 'business_id']);
SELECT wa_ensure_unique('whatsapp_message',
                        'whatsapp_message_local_id_business_key',
                        ARRAY['local_id', 'business_id']);


-- receipts (and send outcomes) whose message row does not exist yet; applied
-- and deleted in the transaction that creates the row or gives it its wamid

CREATE TABLE IF NOT EXISTS wa_pending_receipt (
    id           bigserial PRIMARY KEY,
    business_id  bigint NOT NULL
);

ALTER TABLE wa_pending_receipt ADD COLUMN IF NOT EXISTS kind text
    NOT NULL DEFAULT 'status';
ALTER TABLE wa_pending_receipt ADD COLUMN IF NOT EXISTS provider_message_id text;
ALTER TABLE wa_pending_receipt ADD COLUMN IF NOT EXISTS local_id text;
ALTER TABLE wa_pending_receipt ADD COLUMN IF NOT EXISTS status text;
ALTER TABLE wa_pending_receipt ADD COLUMN IF NOT EXISTS provider_ts timestamptz;
ALTER TABLE wa_pending_receipt ADD COLUMN IF NOT EXISTS phone text;
ALTER TABLE wa_pending_receipt ADD COLUMN IF NOT EXISTS error_code integer;
ALTER TABLE wa_pending_receipt ADD COLUMN IF NOT EXISTS error_title text;
ALTER TABLE wa_pending_receipt ADD COLUMN IF NOT EXISTS error_detail text;
ALTER TABLE wa_pending_receipt ADD COLUMN IF NOT EXISTS fbtrace_id text;
ALTER TABLE wa_pending_receipt ADD COLUMN IF NOT EXISTS retryable boolean;
ALTER TABLE wa_pending_receipt ADD COLUMN IF NOT EXISTS payload jsonb;
ALTER TABLE wa_pending_receipt ADD COLUMN IF NOT EXISTS created_at timestamptz
    NOT NULL DEFAULT now();

-- one per (message, status): a replayed or retried receipt is kept once
CREATE UNIQUE INDEX IF NOT EXISTS wa_pending_receipt_key
    ON wa_pending_receipt (business_id, coalesce(provider_message_id, ''),
                           coalesce(local_id, ''), kind, coalesce(status, ''));
CREATE INDEX IF NOT EXISTS wa_pending_receipt_wamid_idx
    ON wa_pending_receipt (provider_message_id, business_id)
    WHERE provider_message_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS wa_pending_receipt_local_id_idx
    ON wa_pending_receipt (local_id, business_id)
    WHERE local_id IS NOT NULL;


-- records PostgreSQL rejected for good, kept whole so they can be repaired
-- and replayed by hand

CREATE TABLE IF NOT EXISTS wa_dead_letter (
    id           bigserial PRIMARY KEY
);

ALTER TABLE wa_dead_letter ADD COLUMN IF NOT EXISTS record_type text;
ALTER TABLE wa_dead_letter ADD COLUMN IF NOT EXISTS ring_pos bigint;
ALTER TABLE wa_dead_letter ADD COLUMN IF NOT EXISTS reason text;
ALTER TABLE wa_dead_letter ADD COLUMN IF NOT EXISTS sqlstate text;
ALTER TABLE wa_dead_letter ADD COLUMN IF NOT EXISTS raw bytea;
ALTER TABLE wa_dead_letter ADD COLUMN IF NOT EXISTS fields jsonb;
ALTER TABLE wa_dead_letter ADD COLUMN IF NOT EXISTS raw_md5 text;
ALTER TABLE wa_dead_letter ADD COLUMN IF NOT EXISTS created_at timestamptz
    NOT NULL DEFAULT now();

-- a replay of the same ring record is dead-lettered once
SELECT wa_ensure_unique('wa_dead_letter', 'wa_dead_letter_pos_md5_key',
                        ARRAY['ring_pos', 'raw_md5']);


-- value.errors[] of webhook changes (app or account level errors)

CREATE TABLE IF NOT EXISTS wa_webhook_error (
    id           bigserial PRIMARY KEY,
    business_id  bigint NOT NULL
);

ALTER TABLE wa_webhook_error ADD COLUMN IF NOT EXISTS phone_number_id text;
ALTER TABLE wa_webhook_error ADD COLUMN IF NOT EXISTS error_code integer;
ALTER TABLE wa_webhook_error ADD COLUMN IF NOT EXISTS error_title text;
ALTER TABLE wa_webhook_error ADD COLUMN IF NOT EXISTS error_detail text;
ALTER TABLE wa_webhook_error ADD COLUMN IF NOT EXISTS payload jsonb;
ALTER TABLE wa_webhook_error ADD COLUMN IF NOT EXISTS received_at timestamptz;
ALTER TABLE wa_webhook_error ADD COLUMN IF NOT EXISTS dedupe_key text;
ALTER TABLE wa_webhook_error ADD COLUMN IF NOT EXISTS created_at timestamptz
    NOT NULL DEFAULT now();

SELECT wa_ensure_unique('wa_webhook_error', 'wa_webhook_error_dedupe_key',
                        ARRAY['business_id', 'dedupe_key']);
