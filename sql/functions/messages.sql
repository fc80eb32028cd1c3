-- Messages: the merge rules that move a message along its delivery
-- states, the receipts parked until their message exists, and inbound
-- messages (WA_REC_IN_MESSAGE) one at a time and a run at a time.

DROP FUNCTION IF EXISTS wa_ingest_in_messages(text[], text[], text[], text[],
    text[], text[], text[], text[], text[], text[], text[]);


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


-- One message merged (wa_msg_merged). plpgsql rather than sql: its plan is
-- cached for the session. Inbound messages take no receipts.
CREATE OR REPLACE FUNCTION wa_msg_merge(p_id bigint, p_status text,
    p_ts timestamptz, p_wamid text, p_error_code int, p_error_title text,
    p_error_detail text, p_fbtrace_id text, p_retryable boolean)
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
           updated_at = now()
     WHERE m.id = p_id
       AND m.status IS DISTINCT FROM 'received';
END
$$;


-- Many messages merged in one UPDATE (wa_msg_merged), each id at most once
-- per call: an UPDATE applies one source row per target. wa_msg_merge
-- keeps its own one-row UPDATE: through arrays, a single receipt costs a
-- plan per call, five times the work.
CREATE OR REPLACE FUNCTION wa_msg_merge_many(p_id bigint[], p_status text[],
    p_ts timestamptz[], p_wamid text[], p_error_code int[],
    p_error_title text[], p_error_detail text[], p_fbtrace_id text[],
    p_retryable boolean[])
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
           updated_at = now()
      FROM unnest(p_id, p_status, p_ts, p_wamid, p_error_code, p_error_title,
                  p_error_detail, p_fbtrace_id, p_retryable)
           AS r(id, status, ts, wamid, error_code, error_title, error_detail,
                fbtrace_id, retryable)
     WHERE m.id = r.id
       AND m.status IS DISTINCT FROM 'received';
END
$$;


-- Apply and delete the receipts that waited for this message: called when
-- a row is created, learns its wamid, or becomes a new attempt. A parked
-- outcome of an attempt before the row's is stale: dropped.
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
            CONTINUE WHEN r.kind = 'result' AND coalesce(r.attempt, 1)
                          < (SELECT m.attempts FROM whatsapp_message m
                              WHERE m.id = p_id);

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


-- A run of WA_REC_IN_MESSAGE, in a few statements:
--
--   1. leads that exist and would not change are found in one join;
--   2. leads of phones never seen are created in one INSERT, the first
--      message of each phone giving its name and wa_user_id, and taken by
--      the messages they satisfy as they are;
--   3. everything else (a lead to fill in, a '+' phone, a wa_user_id held
--      elsewhere, a lost race) goes through wa_lead_resolve, message by
--      message, in order: the rare cases keep their one careful path;
--   4. the messages are inserted in one statement, in order, so a wamid
--      repeated in the run is stored once, from its first record.
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
    v_lead      bigint[];
    v_inserted  int;
    v_nowamid   boolean;
    i           bigint;
BEGIN
    IF v_n = 0 THEN
        RETURN 0;
    END IF;

    SELECT array_agg(r.business::bigint ORDER BY r.ordinality),
           array_agg(wa_norm_phone(r.phone) ORDER BY r.ordinality),
           array_agg(r.wa_user_id ORDER BY r.ordinality),
           array_agg(r.name ORDER BY r.ordinality),
           bool_or(r.wamid IS NULL)
      INTO v_biz, v_phone, v_uid, v_name, v_nowamid
      FROM unnest(p_recs) WITH ORDINALITY AS r;

    IF v_nowamid THEN
        RAISE EXCEPTION 'inbound message without a wamid'
              USING ERRCODE = 'not_null_violation';
    END IF;

    -- 1: leads that are already there as they should be
    v_lead := wa_leads_known(v_biz, v_phone, v_uid, v_name);

    IF array_position(v_lead, NULL) IS NOT NULL THEN

        -- 2: the leads of phones never seen
        v_lead := wa_leads_create(v_biz, v_phone, v_uid, v_name, v_lead);

        -- 3: the rest, one by one and in order
        FOR i IN SELECT r.o FROM unnest(v_lead) WITH ORDINALITY AS r(l, o)
                  WHERE r.l IS NULL ORDER BY r.o
        LOOP
            v_lead[i] := (wa_lead_resolve(v_biz[i], v_phone[i], v_uid[i],
                                          v_name[i])).lead_id;
        END LOOP;
    END IF;

    -- 4: the messages
    INSERT INTO whatsapp_message AS m
           (business_id, lead_id, direction, phone, wa_user_id,
            phone_number_id, provider_message_id, type, body, payload,
            status, provider_ts, created_at, updated_at)
    SELECT r.b, r.lead, 'in', r.ph, r.wa_user_id, r.phone_number_id,
           r.wamid, r.msg_type, r.body, r.payload::jsonb, 'received',
           wa_ts(r.timestamp), coalesce(wa_ts_ms(r.received_ms), now()),
           now()
      FROM unnest(v_biz, v_lead, v_phone, p_recs) WITH ORDINALITY
           AS r(b, lead, ph)
     ORDER BY r.ordinality
    ON CONFLICT (business_id, provider_message_id) DO NOTHING;

    GET DIAGNOSTICS v_inserted = ROW_COUNT;

    -- receipts that came before their message (rare: look first); a
    -- message stored before this run had its receipts applied then
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
