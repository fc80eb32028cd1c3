-- 006: receipts a run at a time.
--
-- wa_msg_merge_many is wa_msg_merge (003) over arrays: one UPDATE moves
-- many messages along their delivery states, by the same rules, which must
-- stay the same in both (t/07-writer-runs.t writes the same receipts both
-- ways and compares). wa_msg_merge keeps its own one-row UPDATE: through
-- arrays, a single receipt costs a plan per call, five times the work.
-- Each id may appear once per call: an UPDATE applies one source row per
-- target.
--
-- wa_ingest_statuses takes a run of statuses as parallel arrays and leaves
-- what wa_ingest_status (003) would have left, receipt by receipt, in
-- order:
--
--   - when every receipt that moves a message finds its message by wamid
--     (the usual case: the send's outcome gave the row its wamid), the
--     receipts are merged in waves: the first receipt of each message,
--     then the second, ..., so each message sees its receipts in order;
--   - otherwise (a receipt to park, one found by its callback data, one
--     without a wamid) the run goes receipt by receipt through
--     wa_ingest_status.
--
-- Any error fails the whole call; the writer then writes the run record by
-- record, which finds the one record at fault.

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
       SET status = CASE
               WHEN m.status = 'failed' THEN m.status
               WHEN r.status = 'failed' THEN 'failed'
               WHEN wa_status_rank(r.status)
                    > coalesce(wa_status_rank(m.status), -1) THEN r.status
               WHEN r.status = 'unknown' AND m.status = 'pending'
                    THEN 'unknown'
               ELSE m.status END,
           provider_message_id = coalesce(m.provider_message_id, r.wamid),
           sent_at = CASE
               WHEN m.sent_at IS NULL AND m.status IS DISTINCT FROM 'failed'
                    AND wa_status_rank(r.status) BETWEEN 1 AND 4 THEN r.ts
               ELSE m.sent_at END,
           delivered_at = CASE
               WHEN m.delivered_at IS NULL
                    AND m.status IS DISTINCT FROM 'failed'
                    AND wa_status_rank(r.status) BETWEEN 2 AND 4 THEN r.ts
               ELSE m.delivered_at END,
           read_at = CASE
               WHEN m.read_at IS NULL AND m.status IS DISTINCT FROM 'failed'
                    AND wa_status_rank(r.status) BETWEEN 3 AND 4 THEN r.ts
               ELSE m.read_at END,
           error_code = CASE
               WHEN r.status = 'failed' AND m.status IS DISTINCT FROM 'failed'
                    THEN r.error_code ELSE m.error_code END,
           error_title = CASE
               WHEN r.status = 'failed' AND m.status IS DISTINCT FROM 'failed'
                    THEN r.error_title ELSE m.error_title END,
           error_detail = CASE
               WHEN r.status = 'failed' AND m.status IS DISTINCT FROM 'failed'
                    THEN r.error_detail ELSE m.error_detail END,
           retryable = CASE
               WHEN r.status = 'failed' AND m.status IS DISTINCT FROM 'failed'
                    THEN r.retryable ELSE m.retryable END,
           fbtrace_id = coalesce(m.fbtrace_id, r.fbtrace_id),
           updated_at = now()
      FROM unnest(p_id, p_status, p_ts, p_wamid, p_error_code, p_error_title,
                  p_error_detail, p_fbtrace_id, p_retryable)
           AS r(id, status, ts, wamid, error_code, error_title, error_detail,
                fbtrace_id, retryable)
     WHERE m.id = r.id
       AND m.status IS DISTINCT FROM 'received';    -- inbound: no receipts
END
$$;


CREATE OR REPLACE FUNCTION wa_ingest_statuses(p_business text[],
    p_phone_number_id text[], p_wamid text[], p_status text[],
    p_timestamp text[], p_phone text[], p_wa_user_id text[],
    p_error_code text[], p_error_title text[], p_error_detail text[],
    p_callback_data text[], p_payload text[], p_received_ms text[])
RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    v_n       int;
    v_biz     bigint[];
    v_code    int[];
    v_ts      timestamptz[];
    v_id      bigint[];
    v_kept    int;
    v_found   int;
    v_waves   int;
BEGIN
    v_n := wa_run_length('wa_ingest_statuses', cardinality(p_business),
        cardinality(p_phone_number_id), cardinality(p_wamid),
        cardinality(p_status), cardinality(p_timestamp), cardinality(p_phone),
        cardinality(p_wa_user_id), cardinality(p_error_code),
        cardinality(p_error_title), cardinality(p_error_detail),
        cardinality(p_callback_data), cardinality(p_payload),
        cardinality(p_received_ms));

    -- the casts wa_ingest_status makes of every receipt, the timestamp of
    -- those that move a message, and their message by wamid
    SELECT array_agg(r.b::bigint ORDER BY r.o),
           array_agg(r.code::int ORDER BY r.o),
           array_agg(CASE WHEN r.kept THEN coalesce(wa_ts(r.ts),
                                                    wa_ts_ms(r.rms), now())
                     END ORDER BY r.o),
           array_agg(m.id ORDER BY r.o),
           count(*) FILTER (WHERE r.kept),
           count(m.id)
      INTO v_biz, v_code, v_ts, v_id, v_kept, v_found
      FROM (SELECT u.*, wa_status_rank(u.st) IS NOT NULL
                        AND u.st <> 'pending' AS kept
              FROM unnest(p_business, p_status, p_error_code, p_timestamp,
                          p_received_ms, p_wamid)
                   WITH ORDINALITY AS u(b, st, code, ts, rms, w, o)) r
      LEFT JOIN whatsapp_message m
        ON r.kept AND m.provider_message_id = r.w
           AND m.business_id = r.b::bigint;

    IF v_found < v_kept THEN
        -- a receipt to park or to find another way: one by one, in order
        FOR i IN 1 .. v_n LOOP
            PERFORM wa_ingest_status(p_business[i], p_phone_number_id[i],
                        p_wamid[i], p_status[i], p_timestamp[i], p_phone[i],
                        p_wa_user_id[i], p_error_code[i], p_error_title[i],
                        p_error_detail[i], p_callback_data[i], p_payload[i],
                        p_received_ms[i]);
        END LOOP;

        RETURN v_n;
    END IF;

    SELECT max(x.rn) INTO v_waves
      FROM (SELECT row_number() OVER (PARTITION BY u.id ORDER BY u.o) AS rn
              FROM unnest(v_id) WITH ORDINALITY AS u(id, o)
             WHERE u.id IS NOT NULL) x;

    FOR wave IN 1 .. coalesce(v_waves, 0) LOOP
        PERFORM wa_msg_merge_many(array_agg(x.id), array_agg(x.st),
                    array_agg(x.ts), array_agg(x.w), array_agg(x.code),
                    array_agg(x.title), array_agg(x.detail),
                    array_agg(NULL::text), array_agg(NULL::boolean))
           FROM (SELECT u.*, row_number() OVER (PARTITION BY u.id
                                                ORDER BY u.o) AS rn
                   FROM unnest(v_id, p_status, v_ts, p_wamid, v_code,
                               p_error_title, p_error_detail)
                        WITH ORDINALITY AS u(id, st, ts, w, code, title,
                                             detail, o)
                  WHERE u.id IS NOT NULL) x
          WHERE x.rn = wave;
    END LOOP;

    RETURN v_n;
END
$$;
