-- value.errors[] of webhook changes (wa_webhook_error). Rare: one call per
-- record, no set twin.

-- WA_REC_WEBHOOK_ERROR
CREATE OR REPLACE FUNCTION wa_ingest_webhook_error(p_business text,
    p_phone_number_id text, p_error_code text, p_error_title text,
    p_error_detail text, p_payload text, p_received_ms text)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_business  bigint := p_business::bigint;
    v_id        bigint;
BEGIN
    INSERT INTO wa_webhook_error AS e
           (business_id, phone_number_id, error_code, error_title,
            error_detail, payload, received_at, dedupe_key)
    VALUES (v_business, p_phone_number_id, p_error_code::int, p_error_title,
            p_error_detail, p_payload::jsonb, wa_ts_ms(p_received_ms),
            md5(concat_ws('|', p_phone_number_id, p_received_ms,
                          p_error_code, p_error_title, p_payload)))
    ON CONFLICT DO NOTHING
    RETURNING e.id INTO v_id;

    RETURN CASE WHEN v_id IS NULL THEN 'duplicate' ELSE 'inserted' END;
END
$$;
