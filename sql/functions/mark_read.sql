-- Mark-as-read calls (WA_REC_MARK_READ): the call, recorded before it is
-- made (status 'pending'), then its outcome ('read', 'failed' or
-- 'unknown') under the same local id.
--
-- A successful mark stamps the inbound message's read_by_business_at,
-- once: the first success wins, a replay or a second mark changes
-- nothing. The inbound message is in the ring before the CRM could know
-- its wamid, so the writer has stored it by the time the mark comes
-- (unless it was dead-lettered: the mark is still kept, unlinked).


-- 'inserted', 'duplicate' (a replay) or 'updated' (an outcome); an
-- outcome whose call was never recorded makes the row itself
CREATE OR REPLACE FUNCTION wa_ingest_mark_read(p_local_id text,
    p_business text, p_phone_number_id text, p_wamid text, p_status text,
    p_payload text, p_error_code text, p_error_title text,
    p_error_detail text, p_fbtrace_id text, p_http_status text,
    p_received_ms text)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_business  bigint := p_business::bigint;
    v_ts        timestamptz := coalesce(wa_ts_ms(p_received_ms), now());
    v_payload   jsonb := p_payload::jsonb;
    v_status    text := p_status;
    v_id        bigint;
BEGIN
    IF p_local_id IS NULL OR p_wamid IS NULL THEN
        RAISE EXCEPTION 'mark-as-read without a local id or a message id'
              USING ERRCODE = 'not_null_violation';
    END IF;

    IF v_status IS NULL
       OR v_status NOT IN ('pending', 'read', 'failed', 'unknown')
    THEN
        v_status := 'unknown';
    END IF;

    IF v_status = 'pending' THEN
        INSERT INTO wa_mark_read AS r
               (business_id, phone_number_id, local_id, provider_message_id,
                typing_indicator, status, payload, created_at, updated_at)
        VALUES (v_business, p_phone_number_id, p_local_id, p_wamid,
                v_payload #>> '{typing_indicator,type}', 'pending',
                v_payload, v_ts, now())
        ON CONFLICT DO NOTHING
        RETURNING r.id INTO v_id;

        RETURN CASE WHEN v_id IS NULL THEN 'duplicate' ELSE 'inserted' END;
    END IF;

    -- the outcome: a pending call takes it once; a replay finds it done
    UPDATE wa_mark_read r
       SET status = v_status, http_status = p_http_status::int,
           error_code = p_error_code::int, error_title = p_error_title,
           error_detail = p_error_detail, fbtrace_id = p_fbtrace_id,
           done_at = v_ts,
           updated_at = now()
     WHERE r.local_id = p_local_id AND r.business_id = v_business
       AND r.status = 'pending'
    RETURNING r.id INTO v_id;

    IF v_id IS NULL THEN
        INSERT INTO wa_mark_read AS r
               (business_id, phone_number_id, local_id, provider_message_id,
                status, http_status, error_code, error_title,
                error_detail, fbtrace_id, created_at, done_at, updated_at)
        VALUES (v_business, p_phone_number_id, p_local_id, p_wamid,
                v_status, p_http_status::int, p_error_code::int,
                p_error_title, p_error_detail, p_fbtrace_id, v_ts, v_ts,
                now())
        ON CONFLICT DO NOTHING;
    END IF;

    IF v_status = 'read' THEN
        UPDATE whatsapp_message m
           SET read_by_business_at = v_ts, updated_at = now()
         WHERE m.provider_message_id = p_wamid
           AND m.business_id = v_business
           AND m.direction = 'in' AND m.read_by_business_at IS NULL;
    END IF;

    RETURN 'updated';
END
$$;
