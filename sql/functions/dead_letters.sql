-- Records PostgreSQL rejected for good (wa_dead_letter), their replay, and
-- the census of what waits in the database for an operator.

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


-- A replay of dead letter p_id went through its record's ingest function
-- (the ring's own) in the same transaction: kept, marked, with what the
-- function answered (inserted, duplicate, pending, ...).
CREATE OR REPLACE FUNCTION wa_dead_letter_replayed(p_id bigint,
    p_outcome text)
RETURNS void
LANGUAGE sql AS $$
    UPDATE wa_dead_letter
       SET replayed_at = now(), last_attempt_at = now(),
           replay_attempts = replay_attempts + 1, replay_outcome = p_outcome
     WHERE id = p_id
$$;


-- A replay was refused again: the new reason replaces the shown one, the
-- first is kept once.
CREATE OR REPLACE FUNCTION wa_dead_letter_refused(p_id bigint,
    p_reason text, p_sqlstate text)
RETURNS void
LANGUAGE sql AS $$
    UPDATE wa_dead_letter
       SET first_reason = coalesce(first_reason, reason),
           reason = p_reason, sqlstate = p_sqlstate,
           last_attempt_at = now(), replay_attempts = replay_attempts + 1
     WHERE id = p_id
$$;
-- What waits in the database for someone to act, counted by the writer
-- every few seconds and published in the ring header, where nginx's
-- wa_status (which cannot query PostgreSQL) shows it: dead letters not
-- replayed, and receipts still waiting for their message (with the time
-- the oldest arrived, unix ms). Both read an index (016); a count stops at
-- a million so that a table grown wild costs a bounded read.
CREATE OR REPLACE FUNCTION wa_census(OUT dead_letters_waiting bigint,
    OUT receipts_waiting bigint, OUT receipts_oldest_ms bigint)
LANGUAGE sql STABLE AS $$
    SELECT (SELECT count(*) FROM (SELECT 1 FROM wa_dead_letter
                                   WHERE replayed_at IS NULL
                                   LIMIT 1000000) d),
           (SELECT count(*) FROM (SELECT 1 FROM wa_pending_receipt
                                   LIMIT 1000000) r),
           (SELECT (extract(epoch FROM min(created_at)) * 1000)::bigint
              FROM wa_pending_receipt)
$$;
