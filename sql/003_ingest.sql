-- 003: the functions wa-writer calls, one per ring record type.
--
-- Every argument is text, exactly as the record carries it: casts happen
-- here, so a record PostgreSQL can never accept fails with a class 22 or 23
-- SQLSTATE, which the writer turns into a dead letter. Every function is
-- idempotent: a record replayed after a crash changes nothing.
--
-- Safe with several writers on one database: leads are created with
-- INSERT ... ON CONFLICT DO NOTHING and looked up again in a new statement
-- (hence a new snapshot), never through a join that could miss a lead a
-- concurrent writer just committed.

CREATE OR REPLACE FUNCTION wa_norm_phone(p text)
RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p IS NULL OR p ~ '^[0-9]+$' THEN p
                ELSE nullif(regexp_replace(p, '[^0-9]', '', 'g'), '') END
$$;


-- delivery order of statuses; NULL for statuses that do not move a message
-- (deleted, warning, ...). failed is handled apart: it is terminal.
CREATE OR REPLACE FUNCTION wa_status_rank(p text)
RETURNS int
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE p WHEN 'pending' THEN 0 WHEN 'unknown' THEN 0
                  WHEN 'sent' THEN 1 WHEN 'delivered' THEN 2
                  WHEN 'read' THEN 3 WHEN 'played' THEN 4
                  WHEN 'failed' THEN 5 END
$$;


CREATE OR REPLACE FUNCTION wa_ts(p_unix text)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE AS $$
    SELECT to_timestamp(p_unix::bigint)
$$;


CREATE OR REPLACE FUNCTION wa_ts_ms(p_ms text)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE AS $$
    SELECT to_timestamp(p_ms::bigint::float8 / 1000)
$$;


-- The lead of (business, phone), or of (business, wa_user_id) when there
-- is no phone; created when missing. What the caller knows and the lead
-- lacks (its wa_user_id, its name) is filled in, never at the price of a
-- unique violation.
CREATE OR REPLACE FUNCTION wa_lead_resolve(p_business bigint, p_phone text,
    p_wa_user_id text, p_name text, OUT lead_id bigint, OUT created boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_id     bigint;
    v_uid    text;
    v_phone  text;
    v_name   text;
    v_new    text;
BEGIN
    created := false;

    IF p_phone IS NULL AND p_wa_user_id IS NULL THEN
        RAISE EXCEPTION 'neither a phone nor a WhatsApp user id to find '
                        'the lead by'
              USING ERRCODE = 'not_null_violation';
    END IF;

    v_new := p_wa_user_id;

    FOR i IN 1 .. 8 LOOP
        IF p_phone IS NOT NULL THEN
            SELECT l.id, l.wa_user_id, l.name INTO v_id, v_uid, v_name
              FROM leads l
             WHERE l.business_id = p_business AND l.phone = p_phone;
        ELSE
            SELECT l.id, l.wa_user_id, l.name INTO v_id, v_uid, v_name
              FROM leads l
             WHERE l.business_id = p_business AND l.wa_user_id = p_wa_user_id;
        END IF;

        -- leads written before ngx_wa may keep the '+'
        IF NOT FOUND AND p_phone IS NOT NULL THEN
            SELECT l.id, l.wa_user_id, l.name INTO v_id, v_uid, v_name
              FROM leads l
             WHERE l.business_id = p_business AND l.phone = '+' || p_phone;
        END IF;

        IF FOUND THEN
            IF p_wa_user_id IS NOT NULL AND v_uid IS NULL
               AND NOT EXISTS (SELECT 1 FROM leads l
                                WHERE l.business_id = p_business
                                  AND l.wa_user_id = p_wa_user_id)
            THEN
                BEGIN
                    UPDATE leads SET wa_user_id = p_wa_user_id
                     WHERE id = v_id AND wa_user_id IS NULL;
                EXCEPTION
                    WHEN unique_violation THEN
                        NULL;    -- a concurrent writer gave it to another
                END;
            END IF;

            IF p_name IS NOT NULL AND v_name IS NULL THEN
                UPDATE leads SET name = p_name
                 WHERE id = v_id AND name IS NULL;
            END IF;

            lead_id := v_id;
            RETURN;
        END IF;

        -- the phone is new: a lead known so far only by its wa_user_id
        -- gets it; a wa_user_id held by a lead of another phone stays there
        -- (the phone decides) and the new lead is created without it
        IF p_phone IS NOT NULL AND p_wa_user_id IS NOT NULL THEN
            SELECT l.id, l.phone INTO v_id, v_phone
              FROM leads l
             WHERE l.business_id = p_business AND l.wa_user_id = p_wa_user_id;

            IF FOUND THEN
                IF v_phone IS NULL THEN
                    BEGIN
                        UPDATE leads SET phone = p_phone
                         WHERE id = v_id AND phone IS NULL;
                    EXCEPTION
                        WHEN unique_violation THEN
                            NULL;    -- the phone's lead appeared meanwhile
                    END;

                    CONTINUE;
                END IF;

                v_new := NULL;
            END IF;
        END IF;

        INSERT INTO leads AS l (business_id, phone, wa_user_id, name)
        VALUES (p_business, p_phone, v_new, p_name)
        ON CONFLICT DO NOTHING
        RETURNING l.id INTO v_id;

        IF v_id IS NOT NULL THEN
            lead_id := v_id;
            created := true;
            RETURN;
        END IF;

        -- lost a race with a concurrent writer: look again
    END LOOP;

    RAISE EXCEPTION 'cannot find or create the lead of business % phone % '
                    'user %', p_business, p_phone, p_wa_user_id
          USING ERRCODE = 'unique_violation',
                HINT = 'is leads_id_seq behind max(leads.id)?';
END
$$;


-- Move a message along its delivery states, monotonically: failed is
-- terminal and keeps the first error; otherwise a status only moves
-- forward; each timestamp is set once, and a later state implies the
-- earlier ones (read without delivered sets delivered_at too).
-- plpgsql rather than sql: its plan is cached for the session.
CREATE OR REPLACE FUNCTION wa_msg_merge(p_id bigint, p_status text,
    p_ts timestamptz, p_wamid text, p_error_code int, p_error_title text,
    p_error_detail text, p_fbtrace_id text, p_retryable boolean)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE whatsapp_message m
       SET status = CASE
               WHEN m.status = 'failed' THEN m.status
               WHEN p_status = 'failed' THEN 'failed'
               WHEN wa_status_rank(p_status)
                    > coalesce(wa_status_rank(m.status), -1) THEN p_status
               WHEN p_status = 'unknown' AND m.status = 'pending'
                    THEN 'unknown'
               ELSE m.status END,
           provider_message_id = coalesce(m.provider_message_id, p_wamid),
           sent_at = CASE
               WHEN m.sent_at IS NULL AND m.status IS DISTINCT FROM 'failed'
                    AND wa_status_rank(p_status) BETWEEN 1 AND 4 THEN p_ts
               ELSE m.sent_at END,
           delivered_at = CASE
               WHEN m.delivered_at IS NULL
                    AND m.status IS DISTINCT FROM 'failed'
                    AND wa_status_rank(p_status) BETWEEN 2 AND 4 THEN p_ts
               ELSE m.delivered_at END,
           read_at = CASE
               WHEN m.read_at IS NULL AND m.status IS DISTINCT FROM 'failed'
                    AND wa_status_rank(p_status) BETWEEN 3 AND 4 THEN p_ts
               ELSE m.read_at END,
           error_code = CASE
               WHEN p_status = 'failed' AND m.status IS DISTINCT FROM 'failed'
                    THEN p_error_code ELSE m.error_code END,
           error_title = CASE
               WHEN p_status = 'failed' AND m.status IS DISTINCT FROM 'failed'
                    THEN p_error_title ELSE m.error_title END,
           error_detail = CASE
               WHEN p_status = 'failed' AND m.status IS DISTINCT FROM 'failed'
                    THEN p_error_detail ELSE m.error_detail END,
           retryable = CASE
               WHEN p_status = 'failed' AND m.status IS DISTINCT FROM 'failed'
                    THEN p_retryable ELSE m.retryable END,
           fbtrace_id = coalesce(m.fbtrace_id, p_fbtrace_id),
           updated_at = now()
     WHERE m.id = p_id
       AND m.status IS DISTINCT FROM 'received';    -- inbound: no receipts
END
$$;


-- Apply and delete the receipts that waited for this message: called when
-- a row is created or learns its wamid.
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
            PERFORM wa_msg_merge(p_id, r.status, r.provider_ts,
                                 r.provider_message_id, r.error_code,
                                 r.error_title, r.error_detail, r.fbtrace_id,
                                 r.retryable);
            n := n + 1;
        END LOOP;
    END IF;

    IF p_local_id IS NOT NULL THEN
        FOR r IN DELETE FROM wa_pending_receipt
                  WHERE business_id = p_business AND local_id = p_local_id
                 RETURNING *
        LOOP
            PERFORM wa_msg_merge(p_id, r.status, r.provider_ts,
                                 r.provider_message_id, r.error_code,
                                 r.error_title, r.error_detail, r.fbtrace_id,
                                 r.retryable);
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


-- WA_REC_IN_MESSAGE
CREATE OR REPLACE FUNCTION wa_ingest_in_message(p_business text,
    p_phone_number_id text, p_phone text, p_wa_user_id text, p_name text,
    p_wamid text, p_type text, p_body text, p_timestamp text,
    p_payload text, p_received_ms text)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_business  bigint := p_business::bigint;
    v_phone     text := wa_norm_phone(p_phone);
    v_lead      bigint;
    v_id        bigint;
BEGIN
    IF p_wamid IS NULL THEN
        RAISE EXCEPTION 'inbound message without a wamid'
              USING ERRCODE = 'not_null_violation';
    END IF;

    v_lead := (wa_lead_resolve(v_business, v_phone, p_wa_user_id,
                               p_name)).lead_id;

    INSERT INTO whatsapp_message AS m
           (business_id, lead_id, direction, phone, wa_user_id,
            phone_number_id, provider_message_id, type, body, payload,
            status, provider_ts, created_at, updated_at)
    VALUES (v_business, v_lead, 'in', v_phone, p_wa_user_id,
            p_phone_number_id, p_wamid, p_type, p_body, p_payload::jsonb,
            'received', wa_ts(p_timestamp),
            coalesce(wa_ts_ms(p_received_ms), now()), now())
    ON CONFLICT (business_id, provider_message_id) DO NOTHING
    RETURNING m.id INTO v_id;

    IF v_id IS NULL THEN
        RETURN 'duplicate';
    END IF;

    PERFORM wa_apply_pending(v_id, v_business, p_wamid, NULL);

    RETURN 'inserted';
END
$$;


-- WA_REC_STATUS
CREATE OR REPLACE FUNCTION wa_ingest_status(p_business text,
    p_phone_number_id text, p_wamid text, p_status text, p_timestamp text,
    p_phone text, p_wa_user_id text, p_error_code text, p_error_title text,
    p_error_detail text, p_callback_data text, p_payload text,
    p_received_ms text)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_business  bigint := p_business::bigint;
    v_ts        timestamptz;
    v_code      int := p_error_code::int;
    v_id        bigint;
    v_wamid     text;
BEGIN
    IF wa_status_rank(p_status) IS NULL OR p_status = 'pending' THEN
        RETURN 'ignored';
    END IF;

    IF p_wamid IS NULL AND p_callback_data IS NULL THEN
        RAISE EXCEPTION 'status without a wamid or callback data'
              USING ERRCODE = 'not_null_violation';
    END IF;

    v_ts := coalesce(wa_ts(p_timestamp), wa_ts_ms(p_received_ms), now());

    IF p_wamid IS NOT NULL THEN
        SELECT m.id INTO v_id
          FROM whatsapp_message m
         WHERE m.business_id = v_business
           AND m.provider_message_id = p_wamid;
    END IF;

    IF v_id IS NULL AND p_callback_data IS NOT NULL THEN
        SELECT m.id, m.provider_message_id INTO v_id, v_wamid
          FROM whatsapp_message m
         WHERE m.business_id = v_business AND m.local_id = p_callback_data;
    END IF;

    IF v_id IS NULL THEN
        INSERT INTO wa_pending_receipt
               (business_id, kind, provider_message_id, local_id, status,
                provider_ts, phone, error_code, error_title, error_detail,
                payload)
        VALUES (v_business, 'status', p_wamid, p_callback_data, p_status,
                v_ts, wa_norm_phone(p_phone), v_code, p_error_title,
                p_error_detail, p_payload::jsonb)
        ON CONFLICT DO NOTHING;

        RETURN 'pending';
    END IF;

    PERFORM wa_msg_merge(v_id, p_status, v_ts, p_wamid, v_code,
                         p_error_title, p_error_detail, NULL, NULL);

    -- found by its callback data and it learnt its wamid just now
    IF v_wamid IS NULL AND p_callback_data IS NOT NULL
       AND p_wamid IS NOT NULL
    THEN
        PERFORM wa_apply_pending(v_id, v_business, p_wamid, NULL);
    END IF;

    RETURN 'updated';
END
$$;


-- WA_REC_OUT_PENDING: the send, recorded before the API call.
-- Returns 'inserted', 'duplicate' (a replay), 'lead_missing' (the given
-- lead_id is not a lead of this business: resolved by phone instead) or
-- 'client_ref_taken' (another send already holds this client_ref: stored
-- without it rather than lost).
CREATE OR REPLACE FUNCTION wa_ingest_out_pending(p_local_id text,
    p_business text, p_phone_number_id text, p_phone text, p_lead_id text,
    p_source text, p_client_ref text, p_type text, p_body text,
    p_payload text, p_received_ms text)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_business  bigint := p_business::bigint;
    v_phone     text := wa_norm_phone(p_phone);
    v_given     bigint := p_lead_id::bigint;
    v_lead      bigint;
    v_id        bigint;
    v_ref       text := p_client_ref;
    v_outcome   text := 'inserted';
BEGIN
    IF p_local_id IS NULL THEN
        RAISE EXCEPTION 'outbound message without a local id'
              USING ERRCODE = 'not_null_violation';
    END IF;

    IF EXISTS (SELECT 1 FROM whatsapp_message m
                WHERE m.business_id = v_business
                  AND m.local_id = p_local_id)
    THEN
        RETURN 'duplicate';
    END IF;

    IF v_given IS NOT NULL THEN
        SELECT l.id INTO v_lead
          FROM leads l
         WHERE l.id = v_given AND l.business_id = v_business;

        IF v_lead IS NULL THEN
            v_outcome := 'lead_missing';
        END IF;
    END IF;

    IF v_lead IS NULL THEN
        v_lead := (wa_lead_resolve(v_business, v_phone, NULL, NULL)).lead_id;
    END IF;

    FOR i IN 1 .. 2 LOOP
        INSERT INTO whatsapp_message AS m
               (business_id, lead_id, direction, phone, phone_number_id,
                local_id, client_ref, source, type, body, payload, status,
                created_at, updated_at)
        VALUES (v_business, v_lead, 'out', v_phone, p_phone_number_id,
                p_local_id, v_ref, p_source, p_type, p_body,
                p_payload::jsonb, 'pending',
                coalesce(wa_ts_ms(p_received_ms), now()), now())
        ON CONFLICT DO NOTHING
        RETURNING m.id INTO v_id;

        EXIT WHEN v_id IS NOT NULL;

        IF EXISTS (SELECT 1 FROM whatsapp_message m
                    WHERE m.business_id = v_business
                      AND m.local_id = p_local_id)
        THEN
            RETURN 'duplicate';    -- a concurrent replay
        END IF;

        IF v_ref IS NULL THEN
            RAISE EXCEPTION 'cannot store outbound message %', p_local_id
                  USING ERRCODE = 'unique_violation';
        END IF;

        v_ref := NULL;
        v_outcome := 'client_ref_taken';
    END LOOP;

    PERFORM wa_apply_pending(v_id, v_business, NULL, p_local_id);

    RETURN v_outcome;
END
$$;


-- WA_REC_OUT_RESULT: the outcome of the API call.
CREATE OR REPLACE FUNCTION wa_ingest_out_result(p_local_id text,
    p_business text, p_status text, p_wamid text, p_error_code text,
    p_error_title text, p_error_detail text, p_fbtrace_id text,
    p_retryable text, p_http_status text, p_received_ms text)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_business  bigint := p_business::bigint;
    v_code      int := p_error_code::int;
    v_retry     boolean := p_retryable::boolean;
    v_status    text := p_status;
    v_ts        timestamptz;
    v_id        bigint;
BEGIN
    IF p_local_id IS NULL THEN
        RAISE EXCEPTION 'send outcome without a local id'
              USING ERRCODE = 'not_null_violation';
    END IF;

    IF v_status IS NULL OR v_status NOT IN ('sent', 'failed', 'unknown') THEN
        v_status := 'unknown';
    END IF;

    v_ts := coalesce(wa_ts_ms(p_received_ms), now());

    SELECT m.id INTO v_id
      FROM whatsapp_message m
     WHERE m.business_id = v_business AND m.local_id = p_local_id;

    IF v_id IS NULL THEN
        -- its pending record did not make it (dead letter): keep the outcome
        INSERT INTO wa_pending_receipt
               (business_id, kind, provider_message_id, local_id, status,
                provider_ts, error_code, error_title, error_detail,
                fbtrace_id, retryable)
        VALUES (v_business, 'result', p_wamid, p_local_id, v_status, v_ts,
                v_code, p_error_title, p_error_detail, p_fbtrace_id, v_retry)
        ON CONFLICT DO NOTHING;

        RETURN 'pending';
    END IF;

    PERFORM wa_msg_merge(v_id, v_status, v_ts, p_wamid, v_code,
                         p_error_title, p_error_detail, p_fbtrace_id,
                         v_retry);

    IF p_wamid IS NOT NULL THEN
        PERFORM wa_apply_pending(v_id, v_business, p_wamid, NULL);
    END IF;

    RETURN 'updated';
END
$$;


-- WA_REC_WEBHOOK_ERROR
CREATE OR REPLACE FUNCTION wa_ingest_webhook_error(p_business text,
    p_phone_number_id text, p_error_code text, p_error_title text,
    p_error_detail text, p_payload text, p_received_ms text)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_business  bigint := p_business::bigint;
    v_id        bigint;
BEGIN
    INSERT INTO wa_webhook_error AS e
           (business_id, phone_number_id, error_code, error_title,
            error_detail, payload, received_at, dedupe_key)
    VALUES (v_business, p_phone_number_id, p_error_code::int, p_error_title,
            p_error_detail, p_payload::jsonb, wa_ts_ms(p_received_ms),
            md5(concat_ws('|', p_phone_number_id, p_received_ms,
                          p_error_code, p_error_title, p_payload)))
    ON CONFLICT DO NOTHING
    RETURNING e.id INTO v_id;

    RETURN CASE WHEN v_id IS NULL THEN 'duplicate' ELSE 'inserted' END;
END
$$;


-- A record PostgreSQL rejected for good. fields is the writer's JSON
-- rendering of the record; kept NULL if even that is not valid JSON.
CREATE OR REPLACE FUNCTION wa_dead_letter_add(p_record_type text,
    p_ring_pos text, p_reason text, p_sqlstate text, p_raw bytea,
    p_fields text)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_fields  jsonb;
    v_id      bigint;
BEGIN
    BEGIN
        v_fields := p_fields::jsonb;
    EXCEPTION
        WHEN others THEN
            v_fields := NULL;
    END;

    INSERT INTO wa_dead_letter AS d
           (record_type, ring_pos, reason, sqlstate, raw, fields, raw_md5)
    VALUES (p_record_type, p_ring_pos::bigint, p_reason, p_sqlstate, p_raw,
            v_fields, md5(p_raw))
    ON CONFLICT DO NOTHING
    RETURNING d.id INTO v_id;

    RETURN CASE WHEN v_id IS NULL THEN 'duplicate' ELSE 'inserted' END;
END
$$;
