-- Sends (WA_REC_OUT_PENDING, recorded before the API call) and their
-- outcomes (WA_REC_OUT_RESULT), one at a time and a run at a time.
--
-- A send refused by the provider may be attempted again under the same
-- local id (the record's attempt, absent = 1): the failed row becomes the
-- new attempt, the refused one is kept in whatsapp_send_attempt, and an
-- outcome of an earlier attempt is stale.

DROP FUNCTION IF EXISTS wa_ingest_out_pending(text, text, text, text, text,
    text, text, text, text, text, text);
DROP FUNCTION IF EXISTS wa_ingest_out_result(text, text, text, text, text,
    text, text, text, text, text, text);
DROP FUNCTION IF EXISTS wa_ingest_sends(text[], text[], text[], text[],
    text[], text[], text[], text[], text[], text[], text[], text[], text[],
    text[], text[], text[], text[], text[], text[], text[]);
DROP FUNCTION IF EXISTS wa_ingest_sends_one_by_one(text, text[], text[],
    text[], text[], text[], text[], text[], text[], text[], text[], text[],
    text[], text[], text[], text[], text[], text[], text[], text[], text[],
    text[]);


-- WA_REC_OUT_PENDING: the send, recorded before the API call.
-- Returns 'inserted', 'duplicate' (a replay), 'retried' (a new attempt of
-- a send whose row failed: the row is this attempt now, pending again and
-- without the last attempt's error), 'lead_missing' (the given lead_id is
-- not a lead of this business: resolved by phone instead) or
-- 'client_ref_taken' (another send already holds this client_ref: stored
-- without it rather than lost).
-- A send's record whose local id is stored already is a replay (a writer
-- that restarts reads again what it had not committed) only when it is
-- the same send: at the same attempt, the same phone and request. Another
-- send under the same id (ids that collide across hosts or containers)
-- is refused for good, so the writer dead-letters it with a CRITICAL
-- line: loud, never a silent replay that drops a message Meta delivered.
CREATE OR REPLACE FUNCTION wa_send_collision(p_id bigint, p_local_id text,
    p_attempt int, p_phone text, p_payload text)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM whatsapp_message m
                WHERE m.id = p_id AND m.attempts = p_attempt
                  AND (m.phone IS DISTINCT FROM p_phone
                       OR m.payload IS DISTINCT FROM p_payload::jsonb))
    THEN
        RAISE EXCEPTION 'local id % collision: a stored send has this id '
                        'with another phone or request', p_local_id
              USING ERRCODE = 'unique_violation';
    END IF;
END
$$;


-- A send's record whose row exists (p_id): a later attempt of a send that
-- failed, or is still pending because its failed outcome comes through
-- another host's ring (wa_send_idempotency_db hands a refused key to
-- whichever host is asked next) and will be stale, reopens the row at
-- that attempt ('retried'); the same send again is a replay
-- ('duplicate'); another send under the same id is a collision.
CREATE OR REPLACE FUNCTION wa_send_stored(p_id bigint, p_business bigint,
    p_local_id text, p_attempt int, p_phone text, p_payload text)
RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    -- the refused attempt, kept (017); a row still pending has no outcome
    -- here to keep
    INSERT INTO whatsapp_send_attempt AS a
           (message_id, attempt, status, error_code, error_title,
            error_detail, fbtrace_id, retryable, ended_at)
    SELECT m.id, m.attempts, m.status, m.error_code, m.error_title,
           m.error_detail, m.fbtrace_id, m.retryable, m.updated_at
      FROM whatsapp_message m
     WHERE m.id = p_id AND m.status = 'failed' AND m.attempts < p_attempt
    ON CONFLICT DO NOTHING;

    -- the trace of the failed call goes with its error (the new call's
    -- outcome brings its own)
    UPDATE whatsapp_message m
       SET status = 'pending', attempts = p_attempt,
           error_code = NULL, error_title = NULL,
           error_detail = NULL, retryable = NULL, fbtrace_id = NULL,
           updated_at = now()
     WHERE m.id = p_id AND m.status IN ('failed', 'pending')
       AND m.attempts < p_attempt;

    IF FOUND THEN
        PERFORM wa_apply_pending(p_id, p_business, NULL, p_local_id);
        RETURN 'retried';
    END IF;

    PERFORM wa_send_collision(p_id, p_local_id, p_attempt, p_phone,
                              p_payload);

    RETURN 'duplicate';
END
$$;


CREATE OR REPLACE FUNCTION wa_ingest_out_pending(p_local_id text,
    p_business text, p_phone_number_id text, p_phone text, p_lead_id text,
    p_source text, p_client_ref text, p_type text, p_body text,
    p_payload text, p_received_ms text, p_attempt text)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_business  bigint := p_business::bigint;
    v_phone     text := wa_norm_phone(p_phone);
    v_given     bigint := p_lead_id::bigint;
    v_req       jsonb := p_payload::jsonb;
    -- the request's business-scoped user id ("recipient") and the wamid
    -- it replies to ("context": {"message_id"}), read from the request
    -- itself: the ring record stays as every module version writes it
    v_uid       text := v_req ->> 'recipient';
    v_context   text := v_req #>> '{context,message_id}';
    v_attempt   int := coalesce(p_attempt::int, 1);
    v_lead      bigint;
    v_id        bigint;
    v_ref       text := p_client_ref;
    v_outcome   text := 'inserted';
BEGIN
    IF p_local_id IS NULL THEN
        RAISE EXCEPTION 'outbound message without a local id'
              USING ERRCODE = 'not_null_violation';
    END IF;

    IF v_attempt < 1 THEN
        RAISE EXCEPTION 'send % has attempt %', p_local_id, v_attempt
              USING ERRCODE = 'check_violation';
    END IF;

    SELECT m.id INTO v_id
      FROM whatsapp_message m
     WHERE m.business_id = v_business AND m.local_id = p_local_id;

    IF v_id IS NOT NULL THEN
        RETURN wa_send_stored(v_id, v_business, p_local_id, v_attempt,
                              v_phone, p_payload);
    END IF;

    IF v_given IS NOT NULL THEN
        SELECT l.id INTO v_lead
          FROM leads l
         WHERE l.id = v_given AND l.business_id = v_business;

        IF v_lead IS NULL THEN
            v_outcome := 'lead_missing';
        END IF;
    END IF;

    -- as for an inbound message: by phone, else by user id; a phone's lead
    -- learns the user id it lacks
    IF v_lead IS NULL THEN
        v_lead := (wa_lead_resolve(v_business, v_phone, v_uid, NULL)).lead_id;
    END IF;

    FOR i IN 1 .. 2 LOOP
        INSERT INTO whatsapp_message AS m
               (business_id, lead_id, direction, phone, wa_user_id,
                phone_number_id, local_id, client_ref, source, type, body,
                payload, context_message_id, status, attempts, created_at,
                updated_at)
        VALUES (v_business, v_lead, 'out', v_phone, v_uid, p_phone_number_id,
                p_local_id, v_ref, p_source, p_type, p_body, v_req,
                v_context, 'pending', v_attempt,
                coalesce(wa_ts_ms(p_received_ms), now()), now())
        ON CONFLICT DO NOTHING
        RETURNING m.id INTO v_id;

        EXIT WHEN v_id IS NOT NULL;

        -- another writer stored this id meanwhile (its transaction held
        -- the row until it committed): a replay, or an earlier attempt of
        -- this send that another host made
        SELECT m.id INTO v_id FROM whatsapp_message m
         WHERE m.business_id = v_business AND m.local_id = p_local_id;

        IF v_id IS NOT NULL THEN
            RETURN wa_send_stored(v_id, v_business, p_local_id, v_attempt,
                                  v_phone, p_payload);
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


-- WA_REC_OUT_RESULT: the outcome of the API call. 'updated', 'pending'
-- (no send of this local id yet: parked) or 'stale' (the outcome of an
-- attempt before the row's: ignored).
CREATE OR REPLACE FUNCTION wa_ingest_out_result(p_local_id text,
    p_business text, p_status text, p_wamid text, p_error_code text,
    p_error_title text, p_error_detail text, p_fbtrace_id text,
    p_retryable text, p_http_status text, p_received_ms text,
    p_attempt text)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_business  bigint := p_business::bigint;
    v_code      int := p_error_code::int;
    v_retry     boolean := p_retryable::boolean;
    v_attempt   int := coalesce(p_attempt::int, 1);
    v_status    text := p_status;
    v_ts        timestamptz;
    v_id        bigint;
    v_attempts  int;
BEGIN
    IF p_local_id IS NULL THEN
        RAISE EXCEPTION 'send outcome without a local id'
              USING ERRCODE = 'not_null_violation';
    END IF;

    IF v_attempt < 1 THEN
        RAISE EXCEPTION 'outcome of send % has attempt %', p_local_id,
              v_attempt
              USING ERRCODE = 'check_violation';
    END IF;

    IF v_status IS NULL OR v_status NOT IN ('sent', 'failed', 'unknown') THEN
        v_status := 'unknown';
    END IF;

    v_ts := coalesce(wa_ts_ms(p_received_ms), now());

    -- locked: a later attempt that another writer is reopening makes this
    -- outcome stale, and must be seen once it commits
    SELECT m.id, m.attempts INTO v_id, v_attempts
      FROM whatsapp_message m
     WHERE m.business_id = v_business AND m.local_id = p_local_id
       FOR UPDATE;

    IF v_id IS NULL THEN
        -- its pending record did not make it (dead letter): keep the outcome
        INSERT INTO wa_pending_receipt
               (business_id, kind, provider_message_id, local_id, status,
                provider_ts, error_code, error_title, error_detail,
                fbtrace_id, retryable, attempt)
        VALUES (v_business, 'result', p_wamid, p_local_id, v_status, v_ts,
                v_code, p_error_title, p_error_detail, p_fbtrace_id, v_retry,
                v_attempt)
        ON CONFLICT DO NOTHING;

        RETURN 'pending';
    END IF;

    IF v_attempt < v_attempts THEN
        RETURN 'stale';
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


-- the careful path of wa_ingest_sends: each record of kind p_which (NULL:
-- either) that has no outcome in p_out yet, through its own function, in
-- order; p_out with their outcomes filled in
CREATE OR REPLACE FUNCTION wa_ingest_sends_one_by_one(p_which text,
    p_out text[], p_recs wa_send_rec[])
RETURNS text[]
LANGUAGE plpgsql AS $$
DECLARE
    v_out  text[] := p_out;
    r      wa_send_rec;
BEGIN
    FOR i IN 1 .. cardinality(p_recs) LOOP
        r := p_recs[i];

        CONTINUE WHEN v_out[i] IS NOT NULL
                      OR r.kind IS DISTINCT FROM coalesce(p_which, r.kind);

        IF r.kind = 'p' THEN
            v_out[i] := wa_ingest_out_pending(r.local_id, r.business,
                            r.phone_number_id, r.phone, r.lead_id, r.source,
                            r.client_ref, r.msg_type, r.body, r.payload,
                            r.received_ms, r.attempt);
        ELSE
            v_out[i] := wa_ingest_out_result(r.local_id, r.business,
                            r.status, r.wamid, r.error_code, r.error_title,
                            r.error_detail, r.fbtrace_id, r.retryable,
                            r.http_status, r.received_ms, r.attempt);
        END IF;
    END LOOP;

    RETURN v_out;
END
$$;


-- A run of sends ('p') and outcomes ('r') mixed, in the order of the ring;
-- returns each record's outcome, as their own functions do.
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
--     INSERT: the row is written once, already merged (wa_msg_merged into
--     a fresh 'pending' row), instead of inserted and then updated (a
--     second version of the row, and an entry in each of its five indexes,
--     since the wamid it gains is indexed). Under load the writer lags and
--     its batches grow, so a send and its outcome share a run most when it
--     matters. Not when a receipt is parked for the send (it would merge
--     out of order) or the send is not inserted by the set statement;
--   - the other outcomes: when every one finds its message by local_id, of
--     the message's attempt, and each message has one outcome in the run,
--     they are merged in one statement (wa_msg_merge_many).
--
-- Otherwise (a phone stored with a '+', an unknown lead_id, an outcome to
-- park, a repeated local id, an attempt other than the first) the run goes
-- record by record through the functions above, in order. Any error fails
-- the whole call; the writer then writes the run record by record, which
-- finds the one record at fault.
CREATE OR REPLACE FUNCTION wa_ingest_sends(p_recs wa_send_rec[])
RETURNS text[]
LANGUAGE plpgsql
SET enable_seqscan = off
AS $$
DECLARE
    v_n       int := coalesce(cardinality(p_recs), 0);
    v_out     text[];
    v_none    text[];
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
    v_out := array_fill(NULL::text, ARRAY[v_n]);
    v_none := v_out;

    IF v_n = 0 THEN
        RETURN v_out;
    END IF;

    IF EXISTS (SELECT 1 FROM unnest(p_recs) r
                WHERE r.local_id IS NULL OR r.kind IS NULL
                   OR r.kind NOT IN ('p', 'r'))
    THEN
        RAISE EXCEPTION 'a send or send outcome without a local id'
              USING ERRCODE = 'not_null_violation';
    END IF;

    -- what the per-record functions cast or derive, record by record: the
    -- lead of each send (given and valid, or its phone's as it is), the
    -- message of each outcome, and whether some record needs the careful
    -- path (an attempt but the first: a row to reopen or an outcome that
    -- may be stale)
    SELECT array_agg(r.business::bigint ORDER BY r.ordinality),
           array_agg(CASE WHEN r.kind = 'p' THEN wa_norm_phone(r.phone) END
                     ORDER BY r.ordinality),
           array_agg(CASE WHEN r.kind = 'r'
                          THEN CASE WHEN r.status IN ('sent', 'failed',
                                                      'unknown')
                                    THEN r.status ELSE 'unknown' END
                     END ORDER BY r.ordinality),
           array_agg(CASE WHEN r.kind = 'r'
                          THEN coalesce(wa_ts_ms(r.received_ms), now()) END
                     ORDER BY r.ordinality),
           array_agg(r.error_code::int ORDER BY r.ordinality),
           array_agg(CASE WHEN r.kind = 'r' THEN r.retryable::boolean END
                     ORDER BY r.ordinality),
           array_agg(r.lead_id::bigint ORDER BY r.ordinality),
           -- a send to a user id (rare, and a lead found by another key):
           -- the careful path; a false match only costs that path
           bool_or(coalesce(r.attempt::int, 1) <> 1
                   OR (r.kind = 'p' AND strpos(r.payload, '"recipient"') > 0))
      INTO v_biz, v_phone, v_status, v_ts, v_code, v_retry, v_lead, v_slow
      FROM unnest(p_recs) WITH ORDINALITY AS r;

    IF v_slow THEN
        RETURN wa_ingest_sends_one_by_one(NULL, v_out, p_recs);
    END IF;

    -- a given lead_id counts only if it is a lead of the business; without
    -- one, the lead of the phone as it is (as wa_lead_resolve finds it)
    v_id := wa_leads_known(v_biz, v_phone, v_none, v_none);

    -- the leads of phones never seen, as wa_lead_resolve creates them (the
    -- phone alone), for the sends without a lead_id that are no replay
    IF EXISTS (SELECT 1 FROM unnest(v_id, v_phone, p_recs) AS x(known, ph)
                WHERE x.kind = 'p' AND x.known IS NULL AND x.lead_id IS NULL
                  AND x.ph IS NOT NULL)
    THEN
        SELECT array_agg(CASE WHEN x.lead_id IS NULL AND NOT EXISTS (
                                       SELECT 1 FROM whatsapp_message m
                                        WHERE m.local_id = x.local_id
                                          AND m.business_id = x.b)
                              THEN x.ph END ORDER BY x.ordinality)
          INTO v_new
          FROM unnest(v_biz, v_phone, p_recs) WITH ORDINALITY AS x(b, ph);

        v_id := wa_leads_create(v_biz, v_new, v_none, v_none, v_id);
    END IF;

    SELECT array_agg(CASE WHEN k.kind <> 'p' THEN NULL
                          WHEN k.lead IS NOT NULL THEN l.id
                          ELSE k.known END ORDER BY k.ordinality),
           bool_or(k.kind = 'p' AND CASE WHEN k.lead IS NOT NULL
                                         THEN l.id IS NULL
                                         ELSE k.known IS NULL END)
      INTO v_lead, v_slow
      FROM unnest(v_biz, v_lead, v_id, p_recs) WITH ORDINALITY
           AS k(b, lead, known)
      LEFT JOIN leads l ON l.id = k.lead AND l.business_id = k.b;

    -- a local id twice in the run: one by one, so each gets its outcome
    v_slow := v_slow OR EXISTS (
        SELECT 1 FROM unnest(p_recs) AS x
         GROUP BY x.kind, x.local_id HAVING count(*) > 1);

    IF v_slow THEN
        RETURN wa_ingest_sends_one_by_one(NULL, v_out, p_recs);
    END IF;

    -- replays of sends already stored; a stored id with other content is
    -- another send's (wa_send_collision): one by one, so only that record
    -- is refused
    SELECT array_agg(CASE WHEN x.kind = 'p' AND m.id IS NOT NULL
                          THEN 'duplicate' END ORDER BY x.ordinality),
           coalesce(bool_or(m.id IS NOT NULL
                            AND (m.phone IS DISTINCT FROM x.ph
                                 OR m.payload IS DISTINCT FROM
                                    x.payload::jsonb)), false)
      INTO v_out, v_slow
      FROM unnest(v_biz, v_phone, p_recs) WITH ORDINALITY AS x(b, ph)
      LEFT JOIN whatsapp_message m
        ON x.kind = 'p' AND m.local_id = x.local_id AND m.business_id = x.b;

    IF v_slow THEN
        RETURN wa_ingest_sends_one_by_one(NULL, v_none, p_recs);
    END IF;

    -- receipts parked for a send of the run (rare: look once)
    v_parked := EXISTS (
        SELECT 1 FROM unnest(v_biz, p_recs) AS x(b)
          JOIN wa_pending_receipt p
            ON p.local_id = x.local_id AND p.business_id = x.b
         WHERE x.kind = 'p');

    -- for each send, the position of its outcome in the run, none when a
    -- receipt is parked (a local id is in the run at most once per kind;
    -- an outcome before its send, which one by one would be parked and
    -- applied when the send is inserted, folds the same)
    SELECT array_agg(r.ordinality ORDER BY s.ordinality)
      INTO v_fold
      FROM unnest(v_biz, p_recs) WITH ORDINALITY AS s(b)
      LEFT JOIN unnest(v_biz, p_recs) WITH ORDINALITY AS r(b)
        ON NOT v_parked AND s.kind = 'p' AND r.kind = 'r'
       AND r.local_id = s.local_id AND r.b = s.b;

    -- the sends: replays are duplicates, the rest inserted, each
    -- with its folded outcome merged into a fresh 'pending' row
    WITH ins AS (
        INSERT INTO whatsapp_message AS m
               (business_id, lead_id, direction, phone, phone_number_id,
                local_id, client_ref, source, type, body, payload,
                context_message_id,
                status, provider_message_id, sent_at, delivered_at, read_at,
                error_code, error_title, error_detail, retryable, fbtrace_id,
                created_at, updated_at)
        SELECT r.b, r.lead, 'out', r.ph, r.phone_number_id, r.local_id,
               r.client_ref, r.source, r.msg_type, r.body, j.req,
               j.req #>> '{context,message_id}',
               (wa_msg_merged('pending', NULL, NULL, NULL, NULL, NULL, NULL,
                              NULL, NULL, NULL, f.st, f.ts, f.wamid, f.code,
                              f.error_title, f.error_detail, f.fbtrace_id,
                              f.retry)).*,
               coalesce(wa_ts_ms(r.received_ms), now()), now()
          FROM unnest(v_biz, v_lead, v_phone, v_out, v_fold, p_recs)
               WITH ORDINALITY AS r(b, lead, ph, outcome, fold)
         CROSS JOIN LATERAL (SELECT r.payload::jsonb AS req) j
          LEFT JOIN unnest(v_status, v_ts, v_code, v_retry, p_recs)
               WITH ORDINALITY AS f(st, ts, code, retry)
            ON f.ordinality = r.fold
         WHERE r.kind = 'p' AND r.outcome IS NULL
         -- in key order: concurrent writers queue up, never deadlock
         ORDER BY r.b, r.local_id, r.ordinality
        ON CONFLICT DO NOTHING
        RETURNING m.local_id)
    SELECT array_agg(CASE WHEN x.kind <> 'p' THEN NULL
                          WHEN x.outcome IS NOT NULL THEN x.outcome
                          WHEN i.local_id IS NOT NULL THEN 'inserted'
                     END ORDER BY x.ordinality)
      INTO v_out
      FROM unnest(v_out, p_recs) WITH ORDINALITY AS x(outcome)
      LEFT JOIN ins i ON i.local_id = x.local_id;

    -- the outcomes now merged: those of the sends this INSERT wrote (a
    -- send it did not write goes one by one below, and so does its
    -- outcome's merge)
    SELECT array_agg(s.o IS NOT NULL ORDER BY x.o)
      INTO v_folded
      FROM generate_subscripts(p_recs, 1) AS x(o)
      LEFT JOIN unnest(v_fold, v_out) WITH ORDINALITY AS s(f, outcome, o)
        ON s.f = x.o AND s.outcome = 'inserted';

    -- neither inserted nor a replay: its client_ref is taken, or another
    -- writer stored it meanwhile; wa_ingest_out_pending says which, in
    -- order
    IF EXISTS (SELECT 1 FROM unnest(v_out, p_recs) AS x(outcome)
                WHERE x.kind = 'p' AND x.outcome IS NULL)
    THEN
        v_out := wa_ingest_sends_one_by_one('p', v_out, p_recs);
    END IF;

    -- outcomes that waited for their send
    IF v_parked THEN
        PERFORM wa_apply_pending(m.id, m.business_id, NULL, m.local_id)
           FROM unnest(v_biz, v_out, p_recs) AS x(b, outcome)
           JOIN whatsapp_message m
             ON m.local_id = x.local_id AND m.business_id = x.b
          WHERE x.kind = 'p' AND x.outcome = 'inserted'
            AND EXISTS (SELECT 1 FROM wa_pending_receipt p
                         WHERE p.local_id = x.local_id
                           AND p.business_id = x.b);
    END IF;

    -- the outcomes: every message must be there now, at its first attempt
    -- (a later one may make an outcome stale)
    SELECT array_agg(m.id ORDER BY x.ordinality),
           bool_or(x.kind = 'r' AND (m.id IS NULL OR m.attempts <> 1))
      INTO v_id, v_slow
      FROM unnest(v_biz, p_recs) WITH ORDINALITY AS x(b)
      LEFT JOIN whatsapp_message m
        ON x.kind = 'r' AND m.local_id = x.local_id AND m.business_id = x.b;

    IF v_slow THEN
        RETURN wa_ingest_sends_one_by_one('r', v_out, p_recs);
    END IF;

    PERFORM wa_msg_merge_many(array_agg(x.id), array_agg(x.st),
                array_agg(x.ts), array_agg(x.wamid), array_agg(x.code),
                array_agg(x.error_title), array_agg(x.error_detail),
                array_agg(x.fbtrace_id), array_agg(x.retry))
       FROM unnest(v_id, v_status, v_ts, v_code, v_retry, v_folded, p_recs)
            AS x(id, st, ts, code, retry, folded)
      WHERE x.id IS NOT NULL AND NOT x.folded;

    -- receipts that came before their outcome gave the message its wamid
    PERFORM wa_apply_pending(x.id, x.b, x.wamid, NULL)
       FROM unnest(v_id, v_biz, p_recs) AS x(id, b)
      WHERE x.id IS NOT NULL AND x.wamid IS NOT NULL
        AND EXISTS (SELECT 1 FROM wa_pending_receipt p
                     WHERE p.provider_message_id = x.wamid
                       AND p.business_id = x.b);

    SELECT array_agg(CASE WHEN x.kind = 'r' THEN 'updated' ELSE x.outcome END
                     ORDER BY x.ordinality)
      INTO v_out
      FROM unnest(v_out, p_recs) WITH ORDINALITY AS x(outcome);

    RETURN v_out;
END
$$;
