-- Webhook changes stored raw (wa_event, schema 012), every one, and the
-- structured handling of the fields that have a home of their own (013:
-- history.sql, calls.sql, contacts.sql, account.sql). One call per
-- record, no set twin: they are rare next to messages and statuses.

-- WA_REC_EVENT
CREATE OR REPLACE FUNCTION wa_ingest_event(p_business text,
    p_phone_number_id text, p_waba_id text, p_field text, p_entry_time text,
    p_payload text, p_received_ms text)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_payload  jsonb := p_payload::jsonb;
    v_id       bigint;
BEGIN
    INSERT INTO wa_event AS e
           (business_id, phone_number_id, waba_id, field, payload,
            event_time, received_at, dedupe_key)
    VALUES (p_business::bigint, p_phone_number_id, p_waba_id, p_field,
            v_payload, wa_entry_ts(p_entry_time), wa_ts_ms(p_received_ms),
            md5(jsonb_build_array(p_field, p_waba_id, p_phone_number_id,
                                  p_entry_time, v_payload)::text))
    ON CONFLICT DO NOTHING
    RETURNING e.id INTO v_id;

    -- the fields with a structured home (013) fill it from the same
    -- value, redelivered or not: each handler is idempotent, so a body
    -- stored raw by an older writer is structured when Meta sends it again
    PERFORM wa_event_apply(p_business::bigint, p_phone_number_id, p_waba_id,
                           p_field, v_payload, p_entry_time, p_received_ms);

    RETURN CASE WHEN v_id IS NULL THEN 'duplicate' ELSE 'inserted' END;
END
$$;


-- The structured handling of a raw change, by field. Items a handler
-- cannot use (no id, no phone) are skipped: the change is in wa_event
-- whole. The time of an account level event is the entry's, else when
-- nginx received it. A value PostgreSQL can never structure (class 22,
-- 23, 54: a key too long to index, ...) leaves the raw row and a WARNING,
-- which the writer logs; anything else (a deadlock, a lost connection)
-- fails the record, which the writer retries.
CREATE OR REPLACE FUNCTION wa_event_apply(p_business bigint,
    p_phone_number_id text, p_waba_id text, p_field text, p_value jsonb,
    p_entry_time text, p_received_ms text)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_time  timestamptz := coalesce(wa_entry_ts(p_entry_time),
                                    wa_ts_ms(p_received_ms), now());
BEGIN
    IF jsonb_typeof(p_value) <> 'object' THEN
        RETURN;
    END IF;

    BEGIN
        -- a number's id and display number, whenever a value names both
        PERFORM wa_phone_number_learn(p_business, p_waba_id,
                    p_value #>> '{metadata,display_phone_number}',
                    p_phone_number_id);

        CASE p_field
        WHEN 'history' THEN
            PERFORM wa_event_history(p_business, p_phone_number_id,
                                     p_waba_id, p_value, p_received_ms);
        WHEN 'calls' THEN
            PERFORM wa_event_calls(p_business, p_phone_number_id, p_value,
                                   p_received_ms);
        WHEN 'smb_app_state_sync' THEN
            PERFORM wa_event_state_sync(p_business, p_phone_number_id,
                                        p_value, v_time);
        WHEN 'user_preferences' THEN
            PERFORM wa_event_user_preferences(p_business, p_phone_number_id,
                                              p_value, v_time);
        WHEN 'message_template_status_update',
             'message_template_quality_update', 'template_category_update'
        THEN
            PERFORM wa_event_template(p_business, p_waba_id, p_field,
                                      p_value, v_time);
        WHEN 'phone_number_quality_update', 'phone_number_name_update' THEN
            PERFORM wa_event_phone_number(p_business, p_waba_id, p_field,
                                          p_value, v_time);
        ELSE
            NULL;    -- raw only
        END CASE;

    EXCEPTION
        WHEN data_exception OR integrity_constraint_violation
             OR program_limit_exceeded
        THEN
            RAISE WARNING 'webhook event of field % (WABA %, number %) '
                          'kept raw in wa_event, not structured: % (%)',
                          p_field, p_waba_id, p_phone_number_id, SQLERRM,
                          SQLSTATE;
    END;
END
$$;


-- a time Meta sends as unix seconds (a string or a number) or ISO 8601;
-- NULL for anything else, so a stray value skips a column, not the event
CREATE OR REPLACE FUNCTION wa_any_ts(p text)
RETURNS timestamptz
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF p ~ '^[0-9]{1,11}$' THEN
        RETURN to_timestamp(p::bigint);
    ELSIF p ~ '^[0-9]{4}-[0-9]{2}-[0-9]{2}' THEN
        RETURN p::timestamptz;
    END IF;
    RETURN NULL;
EXCEPTION
    WHEN data_exception THEN
        RETURN NULL;
END
$$;


-- WA_REC_ECHO: smb_message_echoes, a message the business typed in the
-- WhatsApp Business app. An outbound row of the customer's lead, sent,
-- keyed by its wamid like every message, so the receipts that follow (or
-- that came first and were parked) move it.
CREATE OR REPLACE FUNCTION wa_ingest_echo(p_business text,
    p_phone_number_id text, p_phone text, p_wa_user_id text, p_wamid text,
    p_type text, p_body text, p_timestamp text, p_payload text,
    p_received_ms text)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_business  bigint := p_business::bigint;
    v_phone     text := wa_norm_phone(p_phone);
    v_ts        timestamptz;
    v_lead      bigint;
    v_id        bigint;
BEGIN
    IF p_wamid IS NULL THEN
        RAISE EXCEPTION 'message echo without a wamid'
              USING ERRCODE = 'not_null_violation';
    END IF;

    v_ts := coalesce(wa_ts(p_timestamp), wa_ts_ms(p_received_ms), now());

    v_lead := (wa_lead_resolve(v_business, v_phone, p_wa_user_id,
                               NULL)).lead_id;

    -- the one insert of a message row (messages.sql): its first-class
    -- columns and readable body as for any message, its parked receipts
    v_id := wa_message_insert(v_business, v_lead, 'out', v_phone,
                              p_wa_user_id, p_phone_number_id, p_wamid,
                              p_type, p_body, p_payload::jsonb, 'sent', v_ts,
                              coalesce(wa_ts_ms(p_received_ms), now()),
                              NULL, 'business_app', v_ts);

    RETURN CASE WHEN v_id IS NULL THEN 'duplicate' ELSE 'inserted' END;
END
$$;
