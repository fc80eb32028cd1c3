-- 005: inbound messages a run at a time.
--
-- wa_ingest_in_message (003) costs one function call, one lead lookup and
-- one INSERT per message. wa_ingest_in_messages takes a run of them as
-- parallel arrays and does the same work in a few statements, leaving the
-- end state what 003 would have left, message by message, in order:
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
-- record through 003, which finds the one record at fault.
--
-- Each step is its own statement, hence its own snapshot: leads committed
-- by a concurrent writer in the meantime are seen, as in wa_lead_resolve.

-- the length of a run's arrays, which must all have it
CREATE OR REPLACE FUNCTION wa_run_length(p_function text,
    VARIADIC p_lengths int[])
RETURNS int
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF (SELECT count(DISTINCT coalesce(l, 0)) FROM unnest(p_lengths) l) > 1
    THEN
        RAISE EXCEPTION '%: arrays of different lengths', p_function
              USING ERRCODE = 'array_subscript_error';
    END IF;

    RETURN coalesce(p_lengths[1], 0);
END
$$;


-- the existing lead of each message that wa_lead_resolve would return
-- without changing it, or NULL. plpgsql rather than sql: its plan is
-- cached for the session, where a sql function is planned at every call,
-- which costs more than a short run saves.
CREATE OR REPLACE FUNCTION wa_leads_known(p_business bigint[],
    p_phone text[], p_wa_user_id text[], p_name text[])
RETURNS bigint[]
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (
    SELECT array_agg(k.id ORDER BY r.o)
      FROM unnest(p_business, p_phone, p_wa_user_id, p_name)
           WITH ORDINALITY AS r(b, ph, u, nm, o)
      LEFT JOIN LATERAL (
           SELECT l.id FROM leads l
            WHERE r.ph IS NOT NULL AND l.phone = r.ph AND l.business_id = r.b
              AND (r.u IS NULL OR l.wa_user_id IS NOT NULL)
              AND (r.nm IS NULL OR l.name IS NOT NULL)
           UNION ALL
           SELECT l.id FROM leads l
            WHERE r.ph IS NULL AND l.wa_user_id = r.u AND l.business_id = r.b
              AND (r.nm IS NULL OR l.name IS NOT NULL)
           LIMIT 1) k ON true);
END
$$;


-- wa_leads_create, which creates the leads of new phones for a run, was
-- here until 009 replaced it; it now lives in 009 alone.


CREATE OR REPLACE FUNCTION wa_ingest_in_messages(p_business text[],
    p_phone_number_id text[], p_phone text[], p_wa_user_id text[],
    p_name text[], p_wamid text[], p_type text[], p_body text[],
    p_timestamp text[], p_payload text[], p_received_ms text[])
RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    v_n         int;
    v_biz       bigint[];
    v_phone     text[];
    v_lead      bigint[];
    v_inserted  int;
    i           bigint;
BEGIN
    v_n := wa_run_length('wa_ingest_in_messages', cardinality(p_business),
        cardinality(p_phone_number_id), cardinality(p_phone),
        cardinality(p_wa_user_id), cardinality(p_name), cardinality(p_wamid),
        cardinality(p_type), cardinality(p_body), cardinality(p_timestamp),
        cardinality(p_payload), cardinality(p_received_ms));

    IF v_n = 0 THEN
        RETURN 0;
    END IF;

    IF array_position(p_wamid, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'inbound message without a wamid'
              USING ERRCODE = 'not_null_violation';
    END IF;

    SELECT array_agg(r.b::bigint ORDER BY r.o),
           array_agg(wa_norm_phone(r.ph) ORDER BY r.o)
      INTO v_biz, v_phone
      FROM unnest(p_business, p_phone) WITH ORDINALITY AS r(b, ph, o);

    -- 1: leads that are already there as they should be
    v_lead := wa_leads_known(v_biz, v_phone, p_wa_user_id, p_name);

    IF array_position(v_lead, NULL) IS NOT NULL THEN

        -- 2: the leads of phones never seen
        v_lead := wa_leads_create(v_biz, v_phone, p_wa_user_id, p_name,
                                  v_lead);

        -- 3: the rest, one by one and in order
        FOR i IN SELECT r.o FROM unnest(v_lead) WITH ORDINALITY AS r(l, o)
                  WHERE r.l IS NULL ORDER BY r.o
        LOOP
            v_lead[i] := (wa_lead_resolve(v_biz[i], v_phone[i],
                                          p_wa_user_id[i], p_name[i])).lead_id;
        END LOOP;
    END IF;

    -- 4: the messages
    INSERT INTO whatsapp_message AS m
           (business_id, lead_id, direction, phone, wa_user_id,
            phone_number_id, provider_message_id, type, body, payload,
            status, provider_ts, created_at, updated_at)
    SELECT r.b, r.lead, 'in', r.ph, r.u, r.pnid, r.w, r.t, r.body,
           r.pl::jsonb, 'received', wa_ts(r.ts),
           coalesce(wa_ts_ms(r.rms), now()), now()
      FROM unnest(v_biz, v_lead, v_phone, p_wa_user_id, p_phone_number_id,
                  p_wamid, p_type, p_body, p_payload, p_timestamp,
                  p_received_ms)
           WITH ORDINALITY AS r(b, lead, ph, u, pnid, w, t, body, pl, ts,
                                rms, o)
     ORDER BY r.o
    ON CONFLICT (business_id, provider_message_id) DO NOTHING;

    GET DIAGNOSTICS v_inserted = ROW_COUNT;

    -- receipts that came before their message (rare: look first); a
    -- message stored before this run had its receipts applied then
    PERFORM wa_apply_pending(m.id, m.business_id, m.provider_message_id,
                             NULL)
       FROM unnest(v_biz, p_wamid) AS x(b, w)
       JOIN whatsapp_message m
         ON m.provider_message_id = x.w AND m.business_id = x.b
      WHERE EXISTS (SELECT 1 FROM wa_pending_receipt p
                     WHERE p.provider_message_id = x.w
                       AND p.business_id = x.b);

    RETURN v_inserted;
END
$$;
