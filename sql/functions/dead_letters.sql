-- Records PostgreSQL rejected for good (wa_dead_letter).

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
