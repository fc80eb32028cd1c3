-- Statuses (WA_REC_STATUS): delivery receipts, one at a time and a run
-- at a time. The merge rules they apply are wa_msg_merged (messages.sql).

DROP FUNCTION IF EXISTS wa_ingest_statuses(text[], text[], text[], text[],
    text[], text[], text[], text[], text[], text[], text[], text[], text[]);


-- a receipt of a message sent to a group, kept per participant
-- (recipient_participant_id) and status, once
CREATE OR REPLACE FUNCTION wa_group_receipt_add(p_business bigint,
    p_wamid text, p_status text, p_ts timestamptz, p jsonb)
RETURNS void
LANGUAGE sql AS $$
    INSERT INTO wa_group_receipt
           (business_id, provider_message_id, recipient_id, participant_id,
            status, provider_ts, payload)
    SELECT p_business, p_wamid, p->>'recipient_id',
           p->>'recipient_participant_id', p_status, p_ts, p
     WHERE p_wamid IS NOT NULL AND p->>'recipient_participant_id' IS NOT NULL
    ON CONFLICT DO NOTHING
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
    v_payload   jsonb := p_payload::jsonb;
BEGIN
    IF wa_status_rank(p_status) IS NULL OR p_status = 'pending' THEN
        RETURN 'ignored';
    END IF;

    IF p_wamid IS NULL AND p_callback_data IS NULL THEN
        RAISE EXCEPTION 'status without a wamid or callback data'
              USING ERRCODE = 'not_null_violation';
    END IF;

    v_ts := coalesce(wa_ts(p_timestamp), wa_ts_ms(p_received_ms), now());

    -- a receipt of a message sent to a group: one per participant
    IF v_payload ? 'recipient_participant_id' THEN
        PERFORM wa_group_receipt_add(v_business, p_wamid, p_status, v_ts,
                                     v_payload);
    END IF;

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
                p_error_detail, v_payload)
        ON CONFLICT DO NOTHING;

        RETURN 'pending';
    END IF;

    PERFORM wa_msg_merge(v_id, p_status, v_ts, p_wamid, v_code,
                         p_error_title, p_error_detail, NULL, NULL,
                         v_payload);

    -- found by its callback data and it learnt its wamid just now
    IF v_wamid IS NULL AND p_callback_data IS NOT NULL
       AND p_wamid IS NOT NULL
    THEN
        PERFORM wa_apply_pending(v_id, v_business, p_wamid, NULL);
    END IF;

    RETURN 'updated';
END
$$;

-- A run of WA_REC_STATUS:
--
--   - when every receipt that moves a message finds its message by wamid
--     (the usual case: the send's outcome gave the row its wamid), the
--     receipts are merged in waves: the first receipt of each message,
--     then the second, ..., so each message sees its receipts in order;
--   - otherwise (a receipt to park, one found by its callback data, one
--     without a wamid, one of a group) the run goes receipt by receipt
--     through wa_ingest_status.
--
-- Any error fails the whole call; the writer then writes the run record by
-- record, which finds the one record at fault.
CREATE OR REPLACE FUNCTION wa_ingest_statuses(p_recs wa_status_rec[])
RETURNS int
LANGUAGE plpgsql
SET enable_seqscan = off
AS $$
DECLARE
    v_n       int := coalesce(cardinality(p_recs), 0);
    v_code    int[];
    v_ts      timestamptz[];
    v_id      bigint[];
    v_kept    int;
    v_found   int;
    v_waves   int;
    v_rec     wa_status_rec;
    v_pj      jsonb[];
    v_group   boolean;
    v_sorted  wa_status_rec[];
BEGIN
    -- the casts wa_ingest_status makes of every receipt, the timestamp of
    -- those that move a message, and their message by wamid
    SELECT array_agg(r.pj ORDER BY r.ordinality),
           bool_or(r.pj ? 'recipient_participant_id'),
           array_agg(r.code ORDER BY r.ordinality),
           array_agg(CASE WHEN r.kept
                          THEN coalesce(wa_ts(r.timestamp),
                                        wa_ts_ms(r.received_ms), now())
                     END ORDER BY r.ordinality),
           array_agg(m.id ORDER BY r.ordinality),
           count(*) FILTER (WHERE r.kept),
           count(m.id)
      INTO v_pj, v_group, v_code, v_ts, v_id, v_kept, v_found
      FROM (SELECT u.*, u.business::bigint AS b, u.error_code::int AS code,
                   u.payload::jsonb AS pj,
                   wa_status_rank(u.status) IS NOT NULL
                   AND u.status <> 'pending' AS kept
              FROM unnest(p_recs) WITH ORDINALITY AS u) r
      LEFT JOIN whatsapp_message m
        ON r.kept AND m.provider_message_id = r.wamid
           AND m.business_id = r.b;

    IF v_found < v_kept OR v_group THEN
        -- a receipt to park or to find another way: one by one, each
        -- message's receipts in order, the messages in key order (rows
        -- locked in one order by every writer: no deadlock between them)
        v_sorted := ARRAY(
            SELECT p_recs[o] FROM generate_subscripts(p_recs, 1) AS o
             ORDER BY (p_recs[o]).business,
                      coalesce((p_recs[o]).wamid, (p_recs[o]).callback_data),
                      o);

        FOREACH v_rec IN ARRAY v_sorted LOOP
            PERFORM wa_ingest_status(v_rec.business, v_rec.phone_number_id,
                        v_rec.wamid, v_rec.status, v_rec.timestamp,
                        v_rec.phone, v_rec.wa_user_id, v_rec.error_code,
                        v_rec.error_title, v_rec.error_detail,
                        v_rec.callback_data, v_rec.payload,
                        v_rec.received_ms);
        END LOOP;

        RETURN v_n;
    END IF;

    SELECT max(x.rn) INTO v_waves
      FROM (SELECT row_number() OVER (PARTITION BY u.id ORDER BY u.o) AS rn
              FROM unnest(v_id) WITH ORDINALITY AS u(id, o)
             WHERE u.id IS NOT NULL) x;

    FOR wave IN 1 .. coalesce(v_waves, 0) LOOP
        PERFORM wa_msg_merge_many(array_agg(x.id), array_agg(x.status),
                    array_agg(x.ts), array_agg(x.wamid), array_agg(x.code),
                    array_agg(x.error_title), array_agg(x.error_detail),
                    array_agg(NULL::text), array_agg(NULL::boolean),
                    array_agg(x.pj))
           FROM (SELECT u.*, row_number() OVER (PARTITION BY u.id
                                                ORDER BY u.ordinality) AS rn
                   FROM unnest(v_id, v_ts, v_code, v_pj, p_recs)
                        WITH ORDINALITY AS u(id, ts, code, pj)
                  WHERE u.id IS NOT NULL) x
          WHERE x.rn = wave;
    END LOOP;

    RETURN v_n;
END
$$;
