-- Messages: the merge rules that move a message along its delivery
-- states, the receipts parked until their message exists, and inbound
-- messages (WA_REC_IN_MESSAGE) one at a time and a run at a time.

DROP FUNCTION IF EXISTS wa_ingest_in_messages(text[], text[], text[], text[],
    text[], text[], text[], text[], text[], text[], text[]);


-- a provider timestamp in jsonb, string or number of unix seconds; NULL
-- for anything else (never an error: a record must not die of it)
CREATE OR REPLACE FUNCTION wa_ts_json(j jsonb)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN jsonb_typeof(j) IN ('string', 'number')
                     AND j #>> '{}' ~ '^[0-9]{1,12}$'
                THEN to_timestamp((j #>> '{}')::bigint) END
$$;


-- a coordinate in jsonb (a number, or a string holding one) as float8,
-- else NULL: never an error, even for 1e400 or 1e-400, which float8
-- refuses (hence the bound and the rounding in numeric first)
CREATE OR REPLACE FUNCTION wa_num_json(j jsonb)
RETURNS double precision
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN jsonb_typeof(j) = 'number' AND abs(j::numeric) <= 1000
                THEN round(j::numeric, 15)::float8
                WHEN jsonb_typeof(j) = 'string'
                     AND j #>> '{}' ~ '^-?[0-9]{1,3}(\.[0-9]{1,15})?$'
                THEN (j #>> '{}')::float8 END
$$;


-- a string or a number of jsonb as text, else NULL (an id must not be
-- read out of an object or an array)
CREATE OR REPLACE FUNCTION wa_text_json(j jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN jsonb_typeof(j) IN ('string', 'number')
                THEN j #>> '{}' END
$$;


-- The readable body of a message of type t (p: the message object), for
-- the CRM's conversation view: the text, "[image] caption", the place,
-- "Reacted 👍", the reply's title, ... Never NULL for a type it knows;
-- "[type]" for one it does not. Never an error, whatever the shapes.
CREATE OR REPLACE FUNCTION wa_msg_body(p jsonb, t text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    o  jsonb := p -> t;
    s  text;
BEGIN
    IF jsonb_typeof(o) IS DISTINCT FROM 'object' THEN
        o := '{}';
    END IF;

    CASE t
    WHEN 'text' THEN
        RETURN o->>'body';

    WHEN 'image', 'video', 'audio', 'document', 'sticker' THEN
        s := coalesce(nullif(o->>'caption', ''),
                      CASE WHEN t = 'document'
                           THEN nullif(o->>'filename', '') END);
        RETURN '[' || CASE WHEN t = 'audio' AND o->'voice' = 'true'
                           THEN 'voice' ELSE t END || ']'
               || coalesce(' ' || s, '');

    WHEN 'location' THEN
        s := nullif(concat_ws(', ', nullif(o->>'name', ''),
                              nullif(o->>'address', '')), '');
        RETURN coalesce(s, '[location] ' || (o->>'latitude') || ', '
                           || (o->>'longitude'), '[location]');

    WHEN 'contacts' THEN
        IF jsonb_typeof(p->'contacts') = 'array' THEN
            SELECT string_agg(coalesce(c->'name'->>'formatted_name',
                                       c->'name'->>'first_name', '?'), ', ')
              INTO s
              FROM jsonb_array_elements(p->'contacts') c
             WHERE jsonb_typeof(c) = 'object';
        END IF;
        RETURN '[contacts]' || coalesce(' ' || s, '');

    WHEN 'reaction' THEN
        s := nullif(o->>'emoji', '');
        RETURN CASE WHEN s IS NULL THEN 'Removed a reaction'
                    ELSE 'Reacted ' || s END;

    WHEN 'interactive' THEN
        RETURN coalesce(o->'button_reply'->>'title',
                        o->'list_reply'->>'title',
                        o->'nfm_reply'->>'body',
                        '[interactive]');

    WHEN 'button' THEN
        RETURN coalesce(o->>'text', o->>'payload', '[button]');

    WHEN 'order' THEN
        RETURN '[order] '
               || CASE WHEN jsonb_typeof(o->'product_items') = 'array'
                       THEN jsonb_array_length(o->'product_items')
                       ELSE 0 END || ' item(s)'
               || coalesce(': ' || nullif(o->>'text', ''), '');

    WHEN 'edit' THEN
        -- the new content, readable as its own type (an edit of an edit
        -- is not one Meta sends: no recursion to bound)
        IF jsonb_typeof(o->'message') = 'object'
           AND o->'message'->>'type' IS DISTINCT FROM 'edit'
        THEN
            s := wa_msg_body(o->'message', o->'message'->>'type');
        END IF;
        RETURN '[edited]' || coalesce(' ' || s, '');

    WHEN 'revoke' THEN
        RETURN '[deleted]';

    WHEN 'system' THEN
        RETURN coalesce(o->>'body', '[system]');

    WHEN 'unsupported' THEN
        s := CASE WHEN jsonb_typeof(p->'errors') = 'array'
                  THEN coalesce(p->'errors'->0->'error_data'->>'details',
                                p->'errors'->0->>'title') END;
        RETURN '[unsupported]' || coalesce(' ' || s, '');

    ELSE
        RETURN '[' || coalesce(t, 'message') || ']';
    END CASE;
END
$$;


-- The first-class columns of a message, from its raw object p of type t;
-- p_body: the parser's body, taken as it is for text (the hot path: no
-- call to wa_msg_body). One expression: PostgreSQL inlines it, and a
-- caller's (wa_msg_fields(...)).col keeps only that column's expression,
-- so p must be a value already parsed (a column), not a cast.
CREATE OR REPLACE FUNCTION wa_msg_fields(p jsonb, t text, p_body text)
RETURNS wa_msg_fields
LANGUAGE sql IMMUTABLE AS $$
    SELECT ROW(
        CASE WHEN t = 'text' AND p_body IS NOT NULL THEN p_body
             ELSE wa_msg_body(p, t) END,
        p->'context'->>'id',
        p->'context'->>'from',
        CASE WHEN jsonb_typeof(p->'context'->'forwarded') = 'boolean'
             THEN (p->'context'->'forwarded')::boolean END,
        CASE WHEN jsonb_typeof(p->'context'->'frequently_forwarded')
                  = 'boolean'
             THEN (p->'context'->'frequently_forwarded')::boolean END,
        CASE WHEN t = 'reaction' THEN p->'reaction'->>'message_id' END,
        CASE WHEN t = 'reaction' THEN nullif(p->'reaction'->>'emoji', '') END,
        CASE WHEN t = 'interactive' THEN p->'interactive'->>'type' END,
        CASE WHEN t = 'interactive'
             THEN coalesce(p->'interactive'->'button_reply'->>'id',
                           p->'interactive'->'list_reply'->>'id',
                           p->'interactive'->'nfm_reply'->>'name') END,
        CASE WHEN t = 'interactive'
             THEN coalesce(p->'interactive'->'button_reply'->>'title',
                           p->'interactive'->'list_reply'->>'title',
                           p->'interactive'->'nfm_reply'->>'body') END,
        CASE WHEN t = 'button' THEN p->'button'->>'payload' END,
        p->'referral'->>'source_url',
        p->'referral'->>'source_id',
        p->'referral'->>'source_type',
        p->'referral'->>'ctwa_clid',
        CASE WHEN t IN ('image', 'video', 'audio', 'document', 'sticker')
             THEN p->t->>'id' END,
        CASE WHEN t IN ('image', 'video', 'audio', 'document', 'sticker')
             THEN p->t->>'mime_type' END,
        CASE WHEN t IN ('image', 'video', 'audio', 'document', 'sticker')
             THEN p->t->>'sha256' END,
        CASE WHEN t = 'document' THEN p->'document'->>'filename' END,
        CASE WHEN t = 'location'
             THEN wa_num_json(p->'location'->'latitude') END,
        CASE WHEN t = 'location'
             THEN wa_num_json(p->'location'->'longitude') END,
        CASE WHEN t = 'location' THEN p->'location'->>'name' END,
        CASE WHEN t = 'location' THEN p->'location'->>'address' END,
        CASE t WHEN 'edit' THEN p->'edit'->>'original_message_id'
               WHEN 'revoke' THEN p->'revoke'->>'original_message_id'
               WHEN 'system' THEN
                   CASE WHEN p->'system'->>'type'
                             IN ('revoke', 'message_revoked')
                        THEN coalesce(p->'system'->>'original_message_id',
                                      p->'context'->>'id') END
               END)::wa_msg_fields
$$;


-- An edit (p_type 'edit', p_payload its object) or a revoke (any other
-- p_type) applied to the message p_target: an edit replaces the body
-- (the first body kept in original_body) unless a later edit did already;
-- a revoke sets revoked_at once. Idempotent: applying it twice changes
-- nothing, and edits applied in any order leave the latest. false when
-- the target is not stored (yet).
CREATE OR REPLACE FUNCTION wa_msg_apply_change(p_business bigint,
    p_target text, p_type text, p_payload jsonb, p_ts timestamptz)
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_id      bigint;
    v_edited  timestamptz;
    v_new     text;
    v_ts      timestamptz := coalesce(p_ts, now());
BEGIN
    SELECT m.id, m.edited_at INTO v_id, v_edited
      FROM whatsapp_message m
     WHERE m.provider_message_id = p_target
       AND m.business_id = p_business
       AND m.target_message_id IS NULL
       FOR UPDATE;

    IF NOT FOUND THEN
        RETURN false;
    END IF;

    IF p_type = 'edit' THEN
        IF v_edited IS NOT NULL AND v_edited >= v_ts THEN
            RETURN true;    -- a later edit is applied already
        END IF;

        v_new := CASE WHEN jsonb_typeof(p_payload->'edit'->'message')
                           = 'object'
                       AND p_payload->'edit'->'message'->>'type'
                           IS DISTINCT FROM 'edit'
                      THEN wa_msg_body(p_payload->'edit'->'message',
                               p_payload->'edit'->'message'->>'type') END;

        UPDATE whatsapp_message m
           SET original_body = coalesce(m.original_body, m.body),
               body = coalesce(v_new, m.body),
               edited_at = v_ts,
               updated_at = now()
         WHERE m.id = v_id;
    ELSE
        UPDATE whatsapp_message m
           SET revoked_at = v_ts, updated_at = now()
         WHERE m.id = v_id AND m.revoked_at IS NULL;
    END IF;

    RETURN true;
END
$$;


-- The edits and revokes stored before their message p_wamid arrived,
-- applied to it, oldest first. Called by wa_apply_pending when the
-- message arrives and finds the 'change' its first change parked in
-- wa_pending_receipt: a message with nothing waiting for it pays no
-- lookup here.
CREATE OR REPLACE FUNCTION wa_msg_apply_early_changes(p_business bigint,
    p_wamid text)
RETURNS void
LANGUAGE plpgsql
-- by the partial index, whatever the statistics said when the plan was
-- cached (an empty table must not make this scan it later)
SET enable_seqscan = off
AS $$
DECLARE
    e  record;
BEGIN
    FOR e IN SELECT c.type, c.payload, c.provider_ts
               FROM whatsapp_message c
              WHERE c.target_message_id = p_wamid
                AND c.business_id = p_business
              ORDER BY c.provider_ts, c.id
    LOOP
        PERFORM wa_msg_apply_change(p_business, p_wamid, e.type, e.payload,
                                    e.provider_ts);
    END LOOP;
END
$$;


-- A user's system message about themselves, applied to their lead:
-- user_changed_number moves the lead to the new phone (system.wa_id) and
-- keeps the old one in wa_lead_former_id, so the next message from the new
-- number finds the same lead and an old one redelivered still does;
-- user_changed_user_id likewise for wa_user_id. When another lead already
-- holds the new phone or id (a message from it came first), both stay as
-- they are and the former id still links the old one.
CREATE OR REPLACE FUNCTION wa_lead_apply_system(p_business bigint,
    p_lead bigint, p_phone text, p_wa_user_id text, p_payload jsonb,
    p_ts timestamptz, p_wamid text)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_kind  text := p_payload->'system'->>'type';
    v_new   text;
    v_old   text;
BEGIN
    IF p_lead IS NULL THEN
        RETURN;
    END IF;

    IF v_kind = 'user_changed_number' THEN
        v_new := wa_norm_phone(coalesce(
                     wa_text_json(p_payload->'system'->'wa_id'),
                     wa_text_json(p_payload->'system'->'new_wa_id')));
        v_old := p_phone;
    ELSIF v_kind = 'user_changed_user_id' THEN
        v_new := coalesce(wa_text_json(p_payload->'system'->'user_id'),
                          wa_text_json(p_payload->'system'->'new_user_id'));
        v_old := coalesce(p_wa_user_id,
                          wa_text_json(p_payload->'from_user_id'));
    ELSE
        RETURN;
    END IF;

    IF v_new IS NULL OR v_new = v_old THEN
        RETURN;
    END IF;

    IF v_old IS NOT NULL THEN
        INSERT INTO wa_lead_former_id
               (business_id, lead_id, kind, value, new_value, changed_at,
                provider_message_id)
        VALUES (p_business, p_lead,
                CASE WHEN v_kind = 'user_changed_number' THEN 'phone'
                     ELSE 'wa_user_id' END,
                v_old, v_new, p_ts, p_wamid)
        ON CONFLICT DO NOTHING;
    END IF;

    BEGIN
        IF v_kind = 'user_changed_number' THEN
            UPDATE leads l SET phone = v_new
             WHERE l.id = p_lead
               AND (l.phone IS NULL OR l.phone IN (v_old, '+' || v_old))
               AND NOT EXISTS (SELECT 1 FROM leads x
                                WHERE x.business_id = p_business
                                  AND x.phone IN (v_new, '+' || v_new));
        ELSE
            UPDATE leads l SET wa_user_id = v_new
             WHERE l.id = p_lead
               AND l.wa_user_id IS NOT DISTINCT FROM v_old
               AND NOT EXISTS (SELECT 1 FROM leads x
                                WHERE x.business_id = p_business
                                  AND x.wa_user_id = v_new);
        END IF;
    EXCEPTION
        WHEN unique_violation THEN
            NULL;    -- a concurrent writer gave it to another lead
    END;
END
$$;


-- THE insert of a message row, for every path that stores one (inbound
-- messages one at a time, and any other caller: history imports, ...):
-- the row with its first-class columns (wa_msg_fields), then what its
-- arrival settles: receipts parked for it, edits and revokes that came
-- before it, the edit or revoke it is, and for an inbound system message
-- the lead's number or user id change. NULL when the wamid is stored
-- already (nothing is done again). The set path (wa_ingest_in_messages)
-- does the same a run at a time.
CREATE OR REPLACE FUNCTION wa_message_insert(p_business bigint,
    p_lead bigint, p_direction text, p_phone text, p_wa_user_id text,
    p_phone_number_id text, p_wamid text, p_type text, p_body text,
    p_payload jsonb, p_status text, p_provider_ts timestamptz,
    p_created_at timestamptz, p_contact jsonb DEFAULT NULL,
    p_source text DEFAULT NULL, p_sent_at timestamptz DEFAULT NULL,
    p_name text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_target  text;
    v_id      bigint;
BEGIN
    IF p_wamid IS NULL THEN
        RAISE EXCEPTION 'message without a wamid'
              USING ERRCODE = 'not_null_violation';
    END IF;

    -- the lead: found or created from what the message says of its user
    -- (an inbound message always; another caller when it gives none)
    IF p_lead IS NULL THEN
        p_lead := (wa_lead_resolve(p_business, p_phone, p_wa_user_id, p_name,
                                   p_contact)).lead_id;
    END IF;

    -- a plain text message (no reply context, no ad referral) has no
    -- first-class column but its body: the INSERT of before, whose plan
    -- plpgsql keeps (the one below is planned again at every call, its
    -- expressions folded over the payload)
    IF p_type = 'text' AND p_body IS NOT NULL
       AND NOT (p_payload ? 'context' OR p_payload ? 'referral')
    THEN
        INSERT INTO whatsapp_message AS m
               (business_id, lead_id, direction, phone, wa_user_id,
                phone_number_id, provider_message_id, source, type, body,
                payload, status, provider_ts, sent_at, created_at,
                updated_at, contact, contact_wa_id)
        VALUES (p_business, p_lead, p_direction, p_phone, p_wa_user_id,
                p_phone_number_id, p_wamid, p_source, p_type, p_body,
                p_payload, p_status, p_provider_ts, p_sent_at,
                coalesce(p_created_at, now()), now(), p_contact,
                p_contact->>'wa_id')
        ON CONFLICT (business_id, provider_message_id) DO NOTHING
        RETURNING m.id INTO v_id;

        IF v_id IS NOT NULL THEN
            PERFORM wa_apply_pending(v_id, p_business, p_wamid, NULL);
        END IF;

        RETURN v_id;
    END IF;

    -- (wa_msg_fields(...)).col is that column's expression alone: no
    -- composite is built, here or in the INSERT
    v_target := (wa_msg_fields(p_payload, p_type, p_body)).target_message_id;

    INSERT INTO whatsapp_message AS m
           (business_id, lead_id, direction, phone, wa_user_id,
            phone_number_id, provider_message_id, source, type, body,
            payload, status, provider_ts, sent_at, created_at, updated_at,
            contact, contact_wa_id, context_message_id, context_from,
            forwarded, frequently_forwarded, reaction_message_id,
            reaction_emoji, reply_type, reply_id, reply_title,
            button_payload, referral_source_url, referral_source_id,
            referral_source_type, referral_ctwa_clid, media_id,
            media_mime_type, media_sha256, media_filename, latitude,
            longitude, location_name, location_address, target_message_id)
    SELECT p_business, p_lead, p_direction, p_phone, p_wa_user_id,
           p_phone_number_id, p_wamid, p_source, p_type, (x.f).body,
           p_payload, p_status, p_provider_ts, p_sent_at,
           coalesce(p_created_at, now()), now(),
           p_contact, p_contact->>'wa_id', (x.f).context_message_id,
           (x.f).context_from, (x.f).forwarded, (x.f).frequently_forwarded,
           (x.f).reaction_message_id, (x.f).reaction_emoji,
           (x.f).reply_type, (x.f).reply_id, (x.f).reply_title,
           (x.f).button_payload, (x.f).referral_source_url,
           (x.f).referral_source_id, (x.f).referral_source_type,
           (x.f).referral_ctwa_clid, (x.f).media_id, (x.f).media_mime_type,
           (x.f).media_sha256, (x.f).media_filename, (x.f).latitude,
           (x.f).longitude, (x.f).location_name, (x.f).location_address,
           v_target
      FROM (SELECT wa_msg_fields(p_payload, p_type, p_body) AS f) x
    ON CONFLICT (business_id, provider_message_id) DO NOTHING
    RETURNING m.id INTO v_id;

    IF v_id IS NULL THEN
        RETURN NULL;
    END IF;

    -- receipts, and edits or revokes, that came before this message
    PERFORM wa_apply_pending(v_id, p_business, p_wamid, NULL);

    -- an edit or revoke: applied to its message, or parked until it comes
    -- (one 'change' per message, whatever the number of its changes)
    IF v_target IS NOT NULL
       AND NOT wa_msg_apply_change(p_business, v_target, p_type, p_payload,
                                   p_provider_ts)
    THEN
        INSERT INTO wa_pending_receipt
               (business_id, kind, provider_message_id, provider_ts)
        VALUES (p_business, 'change', v_target, p_provider_ts)
        ON CONFLICT DO NOTHING;
    END IF;

    IF p_type = 'system' AND p_direction = 'in' THEN
        PERFORM wa_lead_apply_system(p_business, p_lead, p_phone,
                                     p_wa_user_id, p_payload, p_provider_ts,
                                     p_wamid);
    END IF;

    RETURN v_id;
END
$$;




-- The merge rules, written once: what a receipt or a send outcome
-- (p_status, with its time, wamid and error) makes of a message whose
-- state is m_*. Monotonic: failed is terminal and keeps the first error;
-- otherwise a status only moves forward; each timestamp is set once, and a
-- later state implies the earlier ones (read without delivered sets
-- delivered_at too).
--
-- A sql function of one expression, IMMUTABLE: PostgreSQL inlines it into
-- the statement that calls it, and (wa_msg_merged(...)).field keeps only
-- that field's expression, so a set statement pays no call per row.
-- Callers assign it as SET (status, ..., fbtrace_id) = (SELECT (...).*),
-- in the order of wa_msg_state (011).
CREATE OR REPLACE FUNCTION wa_msg_merged(m_status text, m_wamid text,
    m_sent_at timestamptz, m_delivered_at timestamptz, m_read_at timestamptz,
    m_error_code int, m_error_title text, m_error_detail text,
    m_retryable boolean, m_fbtrace_id text,
    p_status text, p_ts timestamptz, p_wamid text, p_error_code int,
    p_error_title text, p_error_detail text, p_fbtrace_id text,
    p_retryable boolean)
RETURNS wa_msg_state
LANGUAGE sql IMMUTABLE AS $$
    SELECT ROW(
        CASE WHEN m_status = 'failed' THEN m_status
             WHEN p_status = 'failed' THEN 'failed'
             WHEN wa_status_rank(p_status)
                  > coalesce(wa_status_rank(m_status), -1) THEN p_status
             WHEN p_status = 'unknown' AND m_status = 'pending'
                  THEN 'unknown'
             ELSE m_status END,
        coalesce(m_wamid, p_wamid),
        CASE WHEN m_sent_at IS NULL AND m_status IS DISTINCT FROM 'failed'
                  AND wa_status_rank(p_status) BETWEEN 1 AND 4 THEN p_ts
             ELSE m_sent_at END,
        CASE WHEN m_delivered_at IS NULL
                  AND m_status IS DISTINCT FROM 'failed'
                  AND wa_status_rank(p_status) BETWEEN 2 AND 4 THEN p_ts
             ELSE m_delivered_at END,
        CASE WHEN m_read_at IS NULL AND m_status IS DISTINCT FROM 'failed'
                  AND wa_status_rank(p_status) BETWEEN 3 AND 4 THEN p_ts
             ELSE m_read_at END,
        CASE WHEN p_status = 'failed' AND m_status IS DISTINCT FROM 'failed'
             THEN p_error_code ELSE m_error_code END,
        CASE WHEN p_status = 'failed' AND m_status IS DISTINCT FROM 'failed'
             THEN p_error_title ELSE m_error_title END,
        CASE WHEN p_status = 'failed' AND m_status IS DISTINCT FROM 'failed'
             THEN p_error_detail ELSE m_error_detail END,
        CASE WHEN p_status = 'failed' AND m_status IS DISTINCT FROM 'failed'
             THEN p_retryable ELSE m_retryable END,
        coalesce(m_fbtrace_id, p_fbtrace_id))::wa_msg_state
$$;


-- What a status receipt carries beside its delivery state, merged into
-- the message (m_*): pricing and conversation (the latest receipt that has
-- them wins), biz_opaque_callback_data and the recipient type (kept once
-- known), and for a failure every error of it, whole (code, title,
-- message, error_data.details, href), with the time it failed: the first
-- failure wins, as for error_code. p is the raw status object; NULL (a
-- send outcome) changes nothing. One expression, inlined like
-- wa_msg_merged.
CREATE OR REPLACE FUNCTION wa_receipt_merged(
    m_pricing_billable boolean, m_pricing_model text,
    m_pricing_category text, m_pricing_type text, m_conversation_id text,
    m_conversation_origin text, m_conversation_expires_at timestamptz,
    m_callback_data text, m_recipient_type text, m_errors jsonb,
    m_failed_at timestamptz, p jsonb, p_status text, p_ts timestamptz)
RETURNS wa_receipt_state
LANGUAGE sql IMMUTABLE AS $$
    SELECT ROW(
        coalesce(CASE WHEN jsonb_typeof(p->'pricing'->'billable') = 'boolean'
                      THEN (p->'pricing'->'billable')::boolean END,
                 m_pricing_billable),
        coalesce(p->'pricing'->>'pricing_model', m_pricing_model),
        coalesce(p->'pricing'->>'category', m_pricing_category),
        coalesce(p->'pricing'->>'type', m_pricing_type),
        coalesce(p->'conversation'->>'id', m_conversation_id),
        coalesce(p->'conversation'->'origin'->>'type', m_conversation_origin),
        coalesce(wa_ts_json(p->'conversation'->'expiration_timestamp'),
                 m_conversation_expires_at),
        coalesce(m_callback_data, p->>'biz_opaque_callback_data'),
        coalesce(m_recipient_type, p->>'recipient_type'),
        CASE WHEN m_errors IS NULL AND p_status = 'failed'
                  AND jsonb_typeof(p->'errors') = 'array'
             THEN p->'errors' ELSE m_errors END,
        CASE WHEN m_failed_at IS NULL AND p_status = 'failed'
                  AND p IS NOT NULL
             THEN p_ts ELSE m_failed_at END)::wa_receipt_state
$$;


-- One message merged (wa_msg_merged, and wa_receipt_merged for a status
-- receipt's raw object p_payload). plpgsql rather than sql: its plan is
-- cached for the session. Inbound messages take no receipts.
DROP FUNCTION IF EXISTS wa_msg_merge(bigint, text, timestamptz, text, int,
    text, text, text, boolean);

CREATE OR REPLACE FUNCTION wa_msg_merge(p_id bigint, p_status text,
    p_ts timestamptz, p_wamid text, p_error_code int, p_error_title text,
    p_error_detail text, p_fbtrace_id text, p_retryable boolean,
    p_payload jsonb DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE whatsapp_message m
       SET (status, provider_message_id, sent_at, delivered_at, read_at,
            error_code, error_title, error_detail, retryable, fbtrace_id)
           = (SELECT (wa_msg_merged(m.status, m.provider_message_id,
                          m.sent_at, m.delivered_at, m.read_at, m.error_code,
                          m.error_title, m.error_detail, m.retryable,
                          m.fbtrace_id, p_status, p_ts, p_wamid,
                          p_error_code, p_error_title, p_error_detail,
                          p_fbtrace_id, p_retryable)).*),
           (pricing_billable, pricing_model, pricing_category, pricing_type,
            conversation_id, conversation_origin, conversation_expires_at,
            callback_data, recipient_type, errors, failed_at)
           = (SELECT (wa_receipt_merged(m.pricing_billable, m.pricing_model,
                          m.pricing_category, m.pricing_type,
                          m.conversation_id, m.conversation_origin,
                          m.conversation_expires_at, m.callback_data,
                          m.recipient_type, m.errors, m.failed_at,
                          p_payload, p_status, p_ts)).*),
           updated_at = now()
     WHERE m.id = p_id
       AND m.status IS DISTINCT FROM 'received';
END
$$;


-- Many messages merged in one UPDATE (wa_msg_merged, wa_receipt_merged),
-- each id at most once per call: an UPDATE applies one source row per
-- target. wa_msg_merge keeps its own one-row UPDATE: through arrays, a
-- single receipt costs a plan per call, five times the work.
DROP FUNCTION IF EXISTS wa_msg_merge_many(bigint[], text[], timestamptz[],
    text[], int[], text[], text[], text[], boolean[]);

CREATE OR REPLACE FUNCTION wa_msg_merge_many(p_id bigint[], p_status text[],
    p_ts timestamptz[], p_wamid text[], p_error_code int[],
    p_error_title text[], p_error_detail text[], p_fbtrace_id text[],
    p_retryable boolean[], p_payload jsonb[] DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql
-- the rows by their primary key, whatever the statistics say: a plan
-- cached while the table looked empty must not scan it once it is not
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off
AS $$
BEGIN
    UPDATE whatsapp_message m
       SET (status, provider_message_id, sent_at, delivered_at, read_at,
            error_code, error_title, error_detail, retryable, fbtrace_id)
           = (SELECT (wa_msg_merged(m.status, m.provider_message_id,
                          m.sent_at, m.delivered_at, m.read_at, m.error_code,
                          m.error_title, m.error_detail, m.retryable,
                          m.fbtrace_id, r.status, r.ts, r.wamid,
                          r.error_code, r.error_title, r.error_detail,
                          r.fbtrace_id, r.retryable)).*),
           (pricing_billable, pricing_model, pricing_category, pricing_type,
            conversation_id, conversation_origin, conversation_expires_at,
            callback_data, recipient_type, errors, failed_at)
           = (SELECT (wa_receipt_merged(m.pricing_billable, m.pricing_model,
                          m.pricing_category, m.pricing_type,
                          m.conversation_id, m.conversation_origin,
                          m.conversation_expires_at, m.callback_data,
                          m.recipient_type, m.errors, m.failed_at,
                          r.payload, r.status, r.ts)).*),
           updated_at = now()
      -- rows locked in id order, whatever the order of the run: writers
      -- updating the same messages queue up instead of deadlocking
      FROM (SELECT * FROM unnest(p_id, p_status, p_ts, p_wamid, p_error_code,
                                 p_error_title, p_error_detail, p_fbtrace_id,
                                 p_retryable,
                                 coalesce(p_payload, array_fill(NULL::jsonb,
                                                ARRAY[cardinality(p_id)])))
                          AS u(id, status, ts, wamid, error_code, error_title,
                               error_detail, fbtrace_id, retryable, payload)
             ORDER BY u.id) r
     WHERE m.id = r.id
       AND m.status IS DISTINCT FROM 'received';
END
$$;


-- Apply and delete the receipts that waited for this message: called when
-- a row is created, learns its wamid, or becomes a new attempt. A parked
-- outcome of an attempt before the row's is stale: dropped. A parked
-- 'change' says edits or revokes of this message came first: they are
-- applied (wa_msg_apply_early_changes).
CREATE OR REPLACE FUNCTION wa_apply_pending(p_id bigint, p_business bigint,
    p_wamid text, p_local_id text)
RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    r  wa_pending_receipt;
    n  int := 0;
BEGIN
    IF p_wamid IS NOT NULL THEN
        FOR r IN DELETE FROM wa_pending_receipt
                  WHERE business_id = p_business
                    AND provider_message_id = p_wamid
                 RETURNING *
        LOOP
            IF r.kind = 'change' THEN
                -- edits and revokes stored before their message
                PERFORM wa_msg_apply_early_changes(p_business, p_wamid);
                n := n + 1;
                CONTINUE;
            END IF;

            PERFORM wa_msg_merge(p_id, r.status, r.provider_ts,
                                 r.provider_message_id, r.error_code,
                                 r.error_title, r.error_detail, r.fbtrace_id,
                                 r.retryable,
                                 CASE WHEN r.kind = 'status'
                                      THEN r.payload END);
            n := n + 1;
        END LOOP;
    END IF;

    IF p_local_id IS NOT NULL THEN
        FOR r IN DELETE FROM wa_pending_receipt
                  WHERE business_id = p_business AND local_id = p_local_id
                 RETURNING *
        LOOP
            CONTINUE WHEN r.kind = 'result' AND coalesce(r.attempt, 1)
                          < (SELECT m.attempts FROM whatsapp_message m
                              WHERE m.id = p_id);

            PERFORM wa_msg_merge(p_id, r.status, r.provider_ts,
                                 r.provider_message_id, r.error_code,
                                 r.error_title, r.error_detail, r.fbtrace_id,
                                 r.retryable,
                                 CASE WHEN r.kind = 'status'
                                      THEN r.payload END);
            n := n + 1;

            -- a send outcome gives the row its wamid: receipts keyed by it
            IF r.provider_message_id IS NOT NULL THEN
                n := n + wa_apply_pending(p_id, p_business,
                                          r.provider_message_id, NULL);
            END IF;
        END LOOP;
    END IF;

    RETURN n;
END
$$;


-- WA_REC_IN_MESSAGE. p_contact: the sender's contacts[] entry (absent
-- from records of the format before 014). One expression: PostgreSQL
-- inlines it into the writer's statement, so a message costs one plpgsql
-- call, wa_message_insert's, which resolves the lead too.
CREATE OR REPLACE FUNCTION wa_ingest_in_message(p_business text,
    p_phone_number_id text, p_phone text, p_wa_user_id text, p_name text,
    p_wamid text, p_type text, p_body text, p_timestamp text,
    p_payload text, p_received_ms text, p_contact text)
RETURNS text
LANGUAGE sql AS $$
    SELECT CASE WHEN wa_message_insert(p_business::bigint, NULL, 'in',
                         wa_norm_phone(p_phone), p_wa_user_id,
                         p_phone_number_id, p_wamid, p_type, p_body,
                         p_payload::jsonb, 'received', wa_ts(p_timestamp),
                         wa_ts_ms(p_received_ms), p_contact::jsonb, NULL,
                         NULL, p_name) IS NULL
                THEN 'duplicate' ELSE 'inserted' END
$$;


-- the same, as a writer before 014 calls it (no contact): a writer still
-- running while the database is migrated goes on storing every message
CREATE OR REPLACE FUNCTION wa_ingest_in_message(p_business text,
    p_phone_number_id text, p_phone text, p_wa_user_id text, p_name text,
    p_wamid text, p_type text, p_body text, p_timestamp text,
    p_payload text, p_received_ms text)
RETURNS text
LANGUAGE sql AS $$
    SELECT wa_ingest_in_message(p_business, p_phone_number_id, p_phone,
               p_wa_user_id, p_name, p_wamid, p_type, p_body, p_timestamp,
               p_payload, p_received_ms, NULL::text)
$$;


-- A run of WA_REC_IN_MESSAGE, in a few statements:
--
--   1. leads that exist and would not change are found in one join;
--   2. leads of phones never seen are created in one INSERT, the first
--      message of each phone giving its name, wa_user_id and contact
--      fields, and taken by the messages they satisfy as they are;
--   3. everything else (a lead to fill in, a '+' phone, a wa_user_id held
--      elsewhere, a former phone, a lost race) goes through
--      wa_lead_resolve, message by message, in order: the rare cases keep
--      their one careful path;
--   4. the messages are inserted in one statement, in the order of their
--      keys (business, wamid), the first record of a repeated wamid
--      first, so it is stored once, from that record, with their
--      first-class columns (wa_msg_fields); writers inserting the same
--      wamids take their index entries in one order and queue up rather
--      than deadlock;
--   5. receipts, edits and revokes that came before their message (parked
--      in wa_pending_receipt) are applied; one probe of that small table
--      per message finds there are none.
--
-- A run holding a message that changes another row or a lead (edit,
-- revoke, system) goes record by record through wa_ingest_in_message, in
-- order: what it changes must be seen by the messages after it.
--
-- Any error fails the whole call; the writer then writes the run record by
-- record, which finds the one record at fault. Each step is its own
-- statement, hence its own snapshot: leads committed by a concurrent
-- writer in the meantime are seen, as in wa_lead_resolve.
CREATE OR REPLACE FUNCTION wa_ingest_in_messages(p_recs wa_in_rec[])
RETURNS int
LANGUAGE plpgsql
SET enable_seqscan = off
AS $$
DECLARE
    v_n         int := coalesce(cardinality(p_recs), 0);
    v_biz       bigint[];
    v_phone     text[];
    v_uid       text[];
    v_name      text[];
    v_contact   jsonb[];
    v_lead      bigint[];
    v_inserted  int;
    v_nowamid   boolean;
    v_changes   boolean;
    v_media     boolean;
    v_rec       wa_in_rec;
    i           bigint;
BEGIN
    IF v_n = 0 THEN
        RETURN 0;
    END IF;

    SELECT array_agg(r.business::bigint ORDER BY r.ordinality),
           array_agg(wa_norm_phone(r.phone) ORDER BY r.ordinality),
           array_agg(r.wa_user_id ORDER BY r.ordinality),
           array_agg(r.name ORDER BY r.ordinality),
           array_agg(r.contact::jsonb ORDER BY r.ordinality),
           bool_or(r.wamid IS NULL),
           bool_or(r.msg_type IN ('edit', 'revoke', 'system')),
           bool_or(r.msg_type IN ('image', 'video', 'audio', 'document',
                                  'sticker'))
      INTO v_biz, v_phone, v_uid, v_name, v_contact, v_nowamid, v_changes,
           v_media
      FROM unnest(p_recs) WITH ORDINALITY AS r;

    IF v_nowamid THEN
        RAISE EXCEPTION 'inbound message without a wamid'
              USING ERRCODE = 'not_null_violation';
    END IF;

    IF v_changes THEN
        v_inserted := 0;

        FOREACH v_rec IN ARRAY p_recs LOOP
            IF wa_ingest_in_message(v_rec.business, v_rec.phone_number_id,
                   v_rec.phone, v_rec.wa_user_id, v_rec.name, v_rec.wamid,
                   v_rec.msg_type, v_rec.body, v_rec.timestamp,
                   v_rec.payload, v_rec.received_ms, v_rec.contact)
               = 'inserted'
            THEN
                v_inserted := v_inserted + 1;
            END IF;
        END LOOP;

        RETURN v_inserted;
    END IF;

    -- 1: leads that are already there as they should be
    v_lead := wa_leads_known(v_biz, v_phone, v_uid, v_name, v_contact);

    IF array_position(v_lead, NULL) IS NOT NULL THEN

        -- 2: the leads of phones never seen
        v_lead := wa_leads_create(v_biz, v_phone, v_uid, v_name, v_lead,
                                  v_contact);

        -- 3: the rest, one by one and in order
        FOR i IN SELECT r.o FROM unnest(v_lead) WITH ORDINALITY AS r(l, o)
                  WHERE r.l IS NULL ORDER BY r.o
        LOOP
            v_lead[i] := (wa_lead_resolve(v_biz[i], v_phone[i], v_uid[i],
                                          v_name[i], v_contact[i])).lead_id;
        END LOOP;
    END IF;

    -- 4: the messages; the payload parsed once (MATERIALIZED), each column
    -- of wa_msg_fields an expression over it. Their media are queued by
    -- 4b, one statement for the run, not by the row trigger
    -- (wa_media_enqueue, sql/functions/media.sql), which costs as much
    -- again as the message's own insert
    IF v_media THEN
        PERFORM set_config('wa.media_enqueue', 'run', true);
    END IF;

    WITH x AS MATERIALIZED (
        SELECT r.b, r.lead, r.ph, r.c, r.wa_user_id, r.phone_number_id,
               r.wamid, r.msg_type, r.body, r.payload::jsonb AS pj,
               r.timestamp, r.received_ms, r.ordinality
          FROM unnest(v_biz, v_lead, v_phone, v_contact, p_recs)
               WITH ORDINALITY AS r(b, lead, ph, c))
    INSERT INTO whatsapp_message AS m
           (business_id, lead_id, direction, phone, wa_user_id,
            phone_number_id, provider_message_id, type, body, payload,
            status, provider_ts, created_at, updated_at,
            contact, contact_wa_id, context_message_id, context_from,
            forwarded, frequently_forwarded, reaction_message_id,
            reaction_emoji, reply_type, reply_id, reply_title,
            button_payload, referral_source_url, referral_source_id,
            referral_source_type, referral_ctwa_clid, media_id,
            media_mime_type, media_sha256, media_filename, latitude,
            longitude, location_name, location_address, target_message_id)
    SELECT x.b, x.lead, 'in', x.ph, x.wa_user_id, x.phone_number_id,
           x.wamid, x.msg_type, (x.f).body, x.pj, 'received',
           wa_ts(x.timestamp), coalesce(wa_ts_ms(x.received_ms), now()),
           now(), x.c, x.c->>'wa_id', (x.f).context_message_id,
           (x.f).context_from, (x.f).forwarded, (x.f).frequently_forwarded,
           (x.f).reaction_message_id, (x.f).reaction_emoji,
           (x.f).reply_type, (x.f).reply_id, (x.f).reply_title,
           (x.f).button_payload, (x.f).referral_source_url,
           (x.f).referral_source_id, (x.f).referral_source_type,
           (x.f).referral_ctwa_clid, (x.f).media_id, (x.f).media_mime_type,
           (x.f).media_sha256, (x.f).media_filename, (x.f).latitude,
           (x.f).longitude, (x.f).location_name, (x.f).location_address,
           (x.f).target_message_id
      FROM (SELECT x.*, wa_msg_fields(x.pj, x.msg_type, x.body) AS f
              FROM x) x
     ORDER BY x.b, x.wamid, x.ordinality
    ON CONFLICT (business_id, provider_message_id) DO NOTHING;

    GET DIAGNOSTICS v_inserted = ROW_COUNT;

    -- 4b: their media (a message stored before has its row already)
    IF v_media THEN
        PERFORM set_config('wa.media_enqueue', '', true);

        INSERT INTO wa_media (message_id, business_id, phone_number_id,
                              media_id, kind, mime_type, sha256_announced,
                              filename)
        SELECT m.id, m.business_id, m.phone_number_id, m.media_id, m.type,
               m.media_mime_type, m.media_sha256, m.media_filename
          FROM unnest(v_biz, p_recs) AS x(b)
          JOIN whatsapp_message m
            ON m.provider_message_id = x.wamid AND m.business_id = x.b
         WHERE x.msg_type IN ('image', 'video', 'audio', 'document',
                              'sticker')
           AND m.type = x.msg_type AND m.media_id IS NOT NULL
         ORDER BY m.id
        ON CONFLICT (message_id) DO NOTHING;

        IF FOUND THEN
            PERFORM pg_notify('wa_media', '');
        END IF;
    END IF;

    -- 5: receipts, edits and revokes that came before their message
    -- (rare: look first); a message stored before this run had them
    -- applied then
    PERFORM wa_apply_pending(m.id, m.business_id, m.provider_message_id,
                             NULL)
       FROM unnest(v_biz, p_recs) AS x(b)
       JOIN whatsapp_message m
         ON m.provider_message_id = x.wamid AND m.business_id = x.b
      WHERE EXISTS (SELECT 1 FROM wa_pending_receipt p
                     WHERE p.provider_message_id = x.wamid
                       AND p.business_id = x.b);


    RETURN v_inserted;
END
$$;
