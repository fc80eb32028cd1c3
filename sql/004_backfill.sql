-- 004: repair rows stored without their lead.
--
-- One call links up to p_limit rows with a NULL lead_id and an id above
-- p_after, in one short transaction; wa-writer backfill-leads calls it
-- until it finds nothing, so the table is never locked for long. Rows
-- locked by a running writer are skipped (the writer links them itself).
-- Rows with neither phone nor wa_user_id cannot be linked and are counted.

CREATE OR REPLACE FUNCTION wa_backfill_leads(p_after bigint, p_limit int,
    OUT last_id bigint, OUT scanned int, OUT linked int, OUT created int,
    OUT unresolved int)
LANGUAGE plpgsql AS $$
DECLARE
    r      record;
    v      record;
    v_phone text;
BEGIN
    last_id := p_after;
    scanned := 0;
    linked := 0;
    created := 0;
    unresolved := 0;

    FOR r IN SELECT m.id, m.business_id, m.phone, m.wa_user_id
               FROM whatsapp_message m
              WHERE m.lead_id IS NULL AND m.id > p_after
              ORDER BY m.id
              LIMIT p_limit
                FOR UPDATE SKIP LOCKED
    LOOP
        last_id := r.id;
        scanned := scanned + 1;
        v_phone := wa_norm_phone(r.phone);

        IF r.business_id IS NULL OR (v_phone IS NULL AND r.wa_user_id IS NULL)
        THEN
            unresolved := unresolved + 1;
            CONTINUE;
        END IF;

        SELECT * INTO v
          FROM wa_lead_resolve(r.business_id, v_phone, r.wa_user_id, NULL);

        UPDATE whatsapp_message SET lead_id = v.lead_id, updated_at = now()
         WHERE id = r.id;

        linked := linked + 1;

        IF v.created THEN
            created := created + 1;
        END IF;
    END LOOP;
END
$$;
