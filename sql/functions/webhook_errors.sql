-- value.errors[] of webhook changes (wa_webhook_error). Rare: one call per
-- record, no set twin.

-- the key took the time nginx received the body: a redelivery was new
DROP FUNCTION IF EXISTS wa_ingest_webhook_error(text, text, text, text, text,
    text, text);


-- entry.time as a timestamp, when it is one (it is only part of a key
-- otherwise: a stray value must not turn a change into a dead letter)
CREATE OR REPLACE FUNCTION wa_entry_ts(p text)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p ~ '^[0-9]{1,11}$' THEN to_timestamp(p::bigint) END
$$;


-- WA_REC_WEBHOOK_ERROR. One row per error of a body, whatever the number
-- of deliveries: the key is the error object (as jsonb, so the sender's
-- key order and spacing do not count), its code and number, and the entry
-- time, which tells the same error happening again apart when Meta sends
-- one (messages changes often have none: then an identical error object
-- of the same number is one row).
CREATE OR REPLACE FUNCTION wa_ingest_webhook_error(p_business text,
    p_phone_number_id text, p_error_code text, p_error_title text,
    p_error_detail text, p_payload text, p_received_ms text,
    p_entry_time text)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_business  bigint := p_business::bigint;
    v_payload   jsonb := p_payload::jsonb;
    v_id        bigint;
BEGIN
    INSERT INTO wa_webhook_error AS e
           (business_id, phone_number_id, error_code, error_title,
            error_detail, payload, received_at, event_time, dedupe_key)
    VALUES (v_business, p_phone_number_id, p_error_code::int, p_error_title,
            p_error_detail, v_payload, wa_ts_ms(p_received_ms),
            wa_entry_ts(p_entry_time),
            md5(jsonb_build_array(p_phone_number_id, p_entry_time,
                                  p_error_code, v_payload)::text))
    ON CONFLICT DO NOTHING
    RETURNING e.id INTO v_id;

    RETURN CASE WHEN v_id IS NULL THEN 'duplicate' ELSE 'inserted' END;
END
$$;
