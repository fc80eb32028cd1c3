-- 008: sends and their outcomes a run at a time, an outcome folded into
-- its send.
--
-- wa_ingest_sends takes a run of out_pending ('p') and out_result ('r')
-- records as parallel arrays (the union of both records' fields, in the
-- order of p_kind) and leaves what wa_ingest_out_pending and
-- wa_ingest_out_result (003) would have left, record by record, in order.
-- It returns each record's outcome, as those functions do.
--
-- The sends go first, then the outcomes: an outcome's send is always
-- published before it, and a send never depends on another send's outcome,
-- so the order that matters (a send before its outcome, each message's
-- outcomes in order) is kept.
--
--   - sends: the leads of new phones are created in one statement; when
--     then every send's lead is known (a valid lead_id, or the lead of its
--     phone as it is), the sends are inserted in one statement, in order;
--     a send that lost its client_ref to another goes through
--     wa_ingest_out_pending after it, as it would have;
--   - an outcome whose send is in the run is folded into the send's
--     INSERT: the row is written once, already merged, instead of inserted
--     and then updated (a second version of the row, and an entry in each
--     of its five indexes, since the wamid it gains is indexed). Under load
--     the writer lags and its batches grow, so a send and its outcome
--     share a run most when it matters. Not when a receipt is parked for
--     the send (it would merge out of order) or the send is not inserted
--     by the set statement;
--   - the other outcomes: when every one finds its message by local_id and
--     each message has one outcome in the run, they are merged in one
--     statement (wa_msg_merge_many, 006).
--
-- Otherwise (a phone stored with a '+', an unknown lead_id, an outcome to
-- park, a repeated local id) the run goes record by record
-- through the functions of 003, in order. Any error fails the whole call;
-- the writer then writes the run record by record, which finds the one
-- record at fault.

CREATE OR REPLACE FUNCTION wa_ingest_sends(p_kind text[], p_local_id text[],
    p_business text[], p_phone_number_id text[], p_phone text[],
    p_lead_id text[], p_source text[], p_client_ref text[], p_type text[],
    p_body text[], p_payload text[], p_received_ms text[], p_status text[],
    p_wamid text[], p_error_code text[], p_error_title text[],
    p_error_detail text[], p_fbtrace_id text[], p_retryable text[],
    p_http_status text[])
RETURNS text[]
LANGUAGE plpgsql AS $$
DECLARE
    v_n       int;
    v_out     text[];
    v_biz     bigint[];
    v_phone   text[];
    v_new     text[];
    v_lead    bigint[];
    v_id      bigint[];
    v_status  text[];
    v_ts      timestamptz[];
    v_code    int[];
    v_retry   boolean[];
    v_slow    boolean;
    v_parked  boolean;
    v_fold    bigint[];
    v_folded  boolean[];
BEGIN
    v_n := wa_run_length('wa_ingest_sends', cardinality(p_kind),
        cardinality(p_local_id), cardinality(p_business),
        cardinality(p_phone_number_id), cardinality(p_phone),
        cardinality(p_lead_id), cardinality(p_source),
        cardinality(p_client_ref), cardinality(p_type), cardinality(p_body),
        cardinality(p_payload), cardinality(p_received_ms),
        cardinality(p_status), cardinality(p_wamid),
        cardinality(p_error_code), cardinality(p_error_title),
        cardinality(p_error_detail), cardinality(p_fbtrace_id),
        cardinality(p_retryable), cardinality(p_http_status));

    v_out := array_fill(NULL::text, ARRAY[v_n]);

    IF v_n = 0 THEN
        RETURN v_out;
    END IF;

    IF array_position(p_local_id, NULL) IS NOT NULL
       OR EXISTS (SELECT 1 FROM unnest(p_kind) k WHERE k NOT IN ('p', 'r'))
    THEN
        RAISE EXCEPTION 'a send or send outcome without a local id'
              USING ERRCODE = 'not_null_violation';
    END IF;

    -- what 003 casts or derives, record by record: the lead of each send
    -- (given and valid, or its phone's as it is), the message of each
    -- outcome, and whether some record needs the careful path
    SELECT array_agg(r.b::bigint ORDER BY r.o),
           array_agg(CASE WHEN r.k = 'p' THEN wa_norm_phone(r.ph) END
                     ORDER BY r.o),
           array_agg(CASE WHEN r.k = 'r'
                          THEN CASE WHEN r.st IN ('sent', 'failed', 'unknown')
                                    THEN r.st ELSE 'unknown' END
                     END ORDER BY r.o),
           array_agg(CASE WHEN r.k = 'r'
                          THEN coalesce(wa_ts_ms(r.rms), now()) END
                     ORDER BY r.o),
           array_agg(r.code::int ORDER BY r.o),
           array_agg(CASE WHEN r.k = 'r' THEN r.retry::boolean END
                     ORDER BY r.o),
           array_agg((r.lead::bigint) ORDER BY r.o)
      INTO v_biz, v_phone, v_status, v_ts, v_code, v_retry, v_lead
      FROM unnest(p_kind, p_business, p_phone, p_status, p_received_ms,
                  p_error_code, p_retryable, p_lead_id)
           WITH ORDINALITY AS r(k, b, ph, st, rms, code, retry, lead, o);

    -- a given lead_id counts only if it is a lead of the business; without
    -- one, the lead of the phone as it is (as wa_lead_resolve finds it)
    v_id := wa_leads_known(v_biz, v_phone, array_fill(NULL::text, ARRAY[v_n]),
                           array_fill(NULL::text, ARRAY[v_n]));

    -- the leads of phones never seen, as wa_lead_resolve creates them (the
    -- phone alone), for the sends without a lead_id that are no replay
    IF EXISTS (SELECT 1 FROM unnest(p_kind, v_id, p_lead_id, v_phone)
                               AS x(k, known, lead, ph)
                WHERE x.k = 'p' AND x.known IS NULL AND x.lead IS NULL
                  AND x.ph IS NOT NULL)
    THEN
        SELECT array_agg(CASE WHEN x.lead IS NULL AND NOT EXISTS (
                                       SELECT 1 FROM whatsapp_message m
                                        WHERE m.local_id = x.loc
                                          AND m.business_id = x.b)
                              THEN x.ph END ORDER BY x.o)
          INTO v_new
          FROM unnest(v_biz, v_phone, p_lead_id, p_local_id)
               WITH ORDINALITY AS x(b, ph, lead, loc, o);

        v_id := wa_leads_create(v_biz, v_new,
                                array_fill(NULL::text, ARRAY[v_n]),
                                array_fill(NULL::text, ARRAY[v_n]), v_id);
    END IF;

    SELECT array_agg(CASE WHEN k.k <> 'p' THEN NULL
                          WHEN k.lead IS NOT NULL THEN l.id
                          ELSE k.known END ORDER BY k.o),
           bool_or(k.k = 'p' AND CASE WHEN k.lead IS NOT NULL THEN l.id IS NULL
                                      ELSE k.known IS NULL END)
      INTO v_lead, v_slow
      FROM unnest(p_kind, v_biz, v_lead, v_id)
           WITH ORDINALITY AS k(k, b, lead, known, o)
      LEFT JOIN leads l ON l.id = k.lead AND l.business_id = k.b;

    -- a local id twice in the run: one by one, so each gets its outcome
    v_slow := v_slow OR EXISTS (
        SELECT 1 FROM unnest(p_kind, p_local_id) AS x(k, loc)
         GROUP BY x.k, x.loc HAVING count(*) > 1);

    IF v_slow THEN
        RETURN wa_ingest_sends_one_by_one(NULL, v_out,
                   p_kind, p_local_id, p_business,
                   p_phone_number_id, p_phone, p_lead_id, p_source,
                   p_client_ref, p_type, p_body, p_payload, p_received_ms,
                   p_status, p_wamid, p_error_code, p_error_title,
                   p_error_detail, p_fbtrace_id, p_retryable, p_http_status);
    END IF;

    -- replays of sends already stored
    SELECT array_agg(CASE WHEN x.k = 'p' AND m.id IS NOT NULL
                          THEN 'duplicate' END ORDER BY x.o)
      INTO v_out
      FROM unnest(p_kind, v_biz, p_local_id) WITH ORDINALITY AS x(k, b, loc, o)
      LEFT JOIN whatsapp_message m
        ON x.k = 'p' AND m.local_id = x.loc AND m.business_id = x.b;

    -- receipts parked for a send of the run (rare: look once)
    v_parked := EXISTS (
        SELECT 1 FROM unnest(p_kind, v_biz, p_local_id) AS x(k, b, loc)
          JOIN wa_pending_receipt p
            ON p.local_id = x.loc AND p.business_id = x.b
         WHERE x.k = 'p');

    -- for each send, the position of its outcome in the run, none when a
    -- receipt is parked (a local id is in the run at most once per kind;
    -- an outcome before its send, which one by one would be parked and
    -- applied when the send is inserted, folds the same)
    SELECT array_agg(r.o ORDER BY s.o)
      INTO v_fold
      FROM unnest(p_kind, v_biz, p_local_id) WITH ORDINALITY AS s(k, b, loc, o)
      LEFT JOIN unnest(p_kind, v_biz, p_local_id) WITH ORDINALITY
           AS r(k, b, loc, o)
        ON NOT v_parked AND s.k = 'p' AND r.k = 'r' AND r.loc = s.loc
       AND r.b = s.b;

    -- the sends: replays are duplicates, the rest inserted in order, each
    -- with its folded outcome merged as wa_msg_merge would merge it into
    -- a fresh 'pending' row: the outcome's status, its wamid and trace,
    -- sent_at when it is 'sent', its error when it is 'failed'
    WITH ins AS (
        INSERT INTO whatsapp_message AS m
               (business_id, lead_id, direction, phone, phone_number_id,
                local_id, client_ref, source, type, body, payload, status,
                provider_message_id, sent_at, error_code, error_title,
                error_detail, retryable, fbtrace_id, created_at, updated_at)
        SELECT r.b, r.lead, 'out', r.ph, r.pnid, r.loc, r.ref, r.src, r.t,
               r.body, r.pl::jsonb, coalesce(f.st, 'pending'), f.w,
               CASE WHEN f.st = 'sent' THEN f.ts END,
               CASE WHEN f.st = 'failed' THEN f.code END,
               CASE WHEN f.st = 'failed' THEN f.title END,
               CASE WHEN f.st = 'failed' THEN f.detail END,
               CASE WHEN f.st = 'failed' THEN f.retry END,
               f.fb, coalesce(wa_ts_ms(r.rms), now()), now()
          FROM unnest(p_kind, v_biz, v_lead, v_phone, p_phone_number_id,
                      p_local_id, p_client_ref, p_source, p_type, p_body,
                      p_payload, p_received_ms, v_out, v_fold)
               WITH ORDINALITY AS r(k, b, lead, ph, pnid, loc, ref, src, t,
                                    body, pl, rms, outcome, fold, o)
          LEFT JOIN unnest(v_status, v_ts, p_wamid, v_code, p_error_title,
                           p_error_detail, p_fbtrace_id, v_retry)
               WITH ORDINALITY AS f(st, ts, w, code, title, detail, fb,
                                    retry, o)
            ON f.o = r.fold
         WHERE r.k = 'p' AND r.outcome IS NULL
         ORDER BY r.o
        ON CONFLICT DO NOTHING
        RETURNING m.local_id)
    SELECT array_agg(CASE WHEN x.k <> 'p' THEN NULL
                          WHEN x.outcome IS NOT NULL THEN x.outcome
                          WHEN i.local_id IS NOT NULL THEN 'inserted'
                     END ORDER BY x.o)
      INTO v_out
      FROM unnest(p_kind, p_local_id, v_out)
           WITH ORDINALITY AS x(k, loc, outcome, o)
      LEFT JOIN ins i ON i.local_id = x.loc;

    -- the outcomes now merged: those of the sends this INSERT wrote (a
    -- send it did not write goes one by one below, and so does its
    -- outcome's merge)
    SELECT array_agg(s.o IS NOT NULL ORDER BY x.o)
      INTO v_folded
      FROM generate_subscripts(p_kind, 1) AS x(o)
      LEFT JOIN unnest(v_fold, v_out) WITH ORDINALITY AS s(f, outcome, o)
        ON s.f = x.o AND s.outcome = 'inserted';

    -- neither inserted nor a replay: its client_ref is taken, or another
    -- writer stored it meanwhile; 003 says which, in order
    IF EXISTS (SELECT 1 FROM unnest(p_kind, v_out) AS x(k, outcome)
                WHERE x.k = 'p' AND x.outcome IS NULL)
    THEN
        v_out := wa_ingest_sends_one_by_one('p', v_out,
                   p_kind, p_local_id, p_business,
                   p_phone_number_id, p_phone, p_lead_id, p_source,
                   p_client_ref, p_type, p_body, p_payload, p_received_ms,
                   p_status, p_wamid, p_error_code, p_error_title,
                   p_error_detail, p_fbtrace_id, p_retryable, p_http_status);
    END IF;

    -- outcomes that waited for their send
    IF v_parked THEN
        PERFORM wa_apply_pending(m.id, m.business_id, NULL, m.local_id)
           FROM unnest(p_kind, v_biz, p_local_id, v_out)
                AS x(k, b, loc, outcome)
           JOIN whatsapp_message m
             ON m.local_id = x.loc AND m.business_id = x.b
          WHERE x.k = 'p' AND x.outcome = 'inserted'
            AND EXISTS (SELECT 1 FROM wa_pending_receipt p
                         WHERE p.local_id = x.loc AND p.business_id = x.b);
    END IF;

    -- the outcomes: every message must be there now
    SELECT array_agg(m.id ORDER BY x.o), bool_or(x.k = 'r' AND m.id IS NULL)
      INTO v_id, v_slow
      FROM unnest(p_kind, v_biz, p_local_id) WITH ORDINALITY AS x(k, b, loc, o)
      LEFT JOIN whatsapp_message m
        ON x.k = 'r' AND m.local_id = x.loc AND m.business_id = x.b;

    IF v_slow THEN
        RETURN wa_ingest_sends_one_by_one('r', v_out,
                   p_kind, p_local_id, p_business,
                   p_phone_number_id, p_phone, p_lead_id, p_source,
                   p_client_ref, p_type, p_body, p_payload, p_received_ms,
                   p_status, p_wamid, p_error_code, p_error_title,
                   p_error_detail, p_fbtrace_id, p_retryable, p_http_status);
    END IF;

    PERFORM wa_msg_merge_many(array_agg(x.id), array_agg(x.st),
                array_agg(x.ts), array_agg(x.w), array_agg(x.code),
                array_agg(x.title), array_agg(x.detail), array_agg(x.fb),
                array_agg(x.retry))
       FROM unnest(v_id, v_status, v_ts, p_wamid, v_code, p_error_title,
                   p_error_detail, p_fbtrace_id, v_retry, v_folded)
            AS x(id, st, ts, w, code, title, detail, fb, retry, folded)
      WHERE x.id IS NOT NULL AND NOT x.folded;

    -- receipts that came before their outcome gave the message its wamid
    PERFORM wa_apply_pending(x.id, x.b, x.w, NULL)
       FROM unnest(v_id, v_biz, p_wamid) AS x(id, b, w)
      WHERE x.id IS NOT NULL AND x.w IS NOT NULL
        AND EXISTS (SELECT 1 FROM wa_pending_receipt p
                     WHERE p.provider_message_id = x.w
                       AND p.business_id = x.b);

    SELECT array_agg(CASE WHEN x.k = 'r' THEN 'updated' ELSE x.outcome END
                     ORDER BY x.o)
      INTO v_out
      FROM unnest(p_kind, v_out) WITH ORDINALITY AS x(k, outcome, o);

    RETURN v_out;
END
$$;


