-- calls: WhatsApp Business Calling. Called by wa_event_apply (events.sql)
-- with the value of a `calls` change, which wa_event also keeps whole
-- (the module sends every `calls` change raw, statuses and errors
-- included: they are a call's, not a message's).
--
--   value.calls[]: {id: wacid, from, to, event: connect | terminate,
--     timestamp, direction: USER_INITIATED | BUSINESS_INITIATED, status,
--     start_time, end_time, duration, biz_opaque_callback_data, session};
--   value.statuses[]: {id: wacid, type: call, status: RINGING | ACCEPTED
--     | REJECTED, timestamp, recipient_id, biz_opaque_callback_data};
--   value.errors[]: the errors of a failed call.
--
-- One wa_call row per (call id, business), linked to the customer's lead;
-- every event in wa_call_event. A status moves the row only forward
-- (wa_call_status_rank): a RINGING that arrives after COMPLETED is kept as
-- an event and changes nothing; the first final status stays.


CREATE OR REPLACE FUNCTION wa_call_status_rank(p text)
RETURNS int
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p IS NULL THEN NULL
                WHEN upper(p) = 'RINGING' THEN 1
                WHEN upper(p) = 'ACCEPTED' THEN 2
                ELSE 3 END      -- COMPLETED, REJECTED, FAILED, ...: final
$$;


-- One event of a call (p_kind connect, terminate or status). p_dir is
-- 'in' (the customer called), 'out' or NULL (not said).
CREATE OR REPLACE FUNCTION wa_call_apply(p_business bigint,
    p_phone_number_id text, p_call_id text, p_kind text, p_status text,
    p_dir text, p_phone text, p_wa_user_id text, p_name text,
    p_time timestamptz, p_start timestamptz, p_end timestamptz,
    p_duration int, p_callback text, p_errors jsonb, p_payload jsonb)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_phone  text := wa_norm_phone(p_phone);
    v_lead   bigint;
    v_row    bigint;
    v_event  bigint;
BEGIN
    IF v_phone IS NOT NULL OR p_wa_user_id IS NOT NULL THEN
        v_lead := (wa_lead_resolve(p_business, v_phone, p_wa_user_id,
                                   p_name)).lead_id;
    END IF;

    INSERT INTO wa_call AS c (business_id, call_id, phone_number_id)
    VALUES (p_business, p_call_id, p_phone_number_id)
    ON CONFLICT (call_id, business_id) DO NOTHING;

    SELECT c.id INTO v_row FROM wa_call c
     WHERE c.call_id = p_call_id AND c.business_id = p_business
       FOR UPDATE;

    INSERT INTO wa_call_event AS e (call_row_id, kind, status, event_time,
                                    payload, dedupe_key)
    VALUES (v_row, p_kind, p_status, p_time, p_payload,
            md5(jsonb_build_array(v_row, p_kind, p_payload)::text))
    ON CONFLICT DO NOTHING
    RETURNING e.id INTO v_event;

    IF v_event IS NULL THEN
        RETURN 'duplicate';
    END IF;

    -- what the row does not know yet is filled in; a status moves forward
    UPDATE wa_call c
       SET lead_id = coalesce(c.lead_id, v_lead),
           phone = coalesce(c.phone, v_phone),
           wa_user_id = coalesce(c.wa_user_id, p_wa_user_id),
           phone_number_id = coalesce(c.phone_number_id, p_phone_number_id),
           direction = coalesce(c.direction, p_dir),
           connected_at = CASE WHEN p_kind = 'connect'
                               THEN coalesce(c.connected_at, p_time)
                               ELSE c.connected_at END,
           started_at = coalesce(c.started_at, p_start),
           ended_at = coalesce(c.ended_at, p_end),
           duration = coalesce(c.duration, p_duration),
           callback_data = coalesce(c.callback_data, p_callback),
           errors = coalesce(c.errors, p_errors),
           status = CASE WHEN wa_call_status_rank(p_status)
                              > coalesce(wa_call_status_rank(c.status), 0)
                         THEN upper(p_status) ELSE c.status END,
           status_at = CASE WHEN wa_call_status_rank(p_status)
                                 > coalesce(wa_call_status_rank(c.status), 0)
                            THEN p_time ELSE c.status_at END,
           updated_at = now()
     WHERE c.id = v_row;

    RETURN 'inserted';
END
$$;


CREATE OR REPLACE FUNCTION wa_event_calls(p_business bigint,
    p_phone_number_id text, p_value jsonb, p_received_ms text)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_display  text := wa_norm_phone(p_value #>> '{metadata,display_phone_number}');
    v_errors   jsonb := CASE WHEN jsonb_typeof(p_value -> 'errors') = 'array'
                             THEN p_value -> 'errors' END;
    v_recv     timestamptz := coalesce(wa_ts_ms(p_received_ms), now());
    c          jsonb;
    v_dir      text;
    v_phone    text;
    v_uid      text;
BEGIN
    FOR c IN SELECT x FROM jsonb_array_elements(
                 CASE jsonb_typeof(p_value -> 'calls')
                      WHEN 'array' THEN p_value -> 'calls' ELSE '[]' END) x
    LOOP
        CONTINUE WHEN jsonb_typeof(c) <> 'object'
                      OR coalesce(c ->> 'id', '') = '';

        v_dir := CASE upper(c ->> 'direction')
                      WHEN 'USER_INITIATED' THEN 'in'
                      WHEN 'BUSINESS_INITIATED' THEN 'out'
                      ELSE CASE WHEN wa_norm_phone(c ->> 'from') = v_display
                                THEN 'out'
                                WHEN c ? 'from' THEN 'in' END
                 END;
        v_phone := CASE v_dir WHEN 'out' THEN c ->> 'to'
                              ELSE c ->> 'from' END;
        v_uid := CASE v_dir WHEN 'out' THEN c ->> 'to_user_id'
                            ELSE c ->> 'from_user_id' END;

        PERFORM wa_call_apply(p_business, p_phone_number_id, c ->> 'id',
                    coalesce(lower(c ->> 'event'), 'event'),
                    CASE WHEN lower(c ->> 'event') = 'terminate'
                         THEN coalesce(c ->> 'status', 'TERMINATED')
                         ELSE c ->> 'status' END,
                    v_dir, v_phone, v_uid,
                    (SELECT k #>> '{profile,name}'
                       FROM jsonb_array_elements(
                                CASE jsonb_typeof(p_value -> 'contacts')
                                     WHEN 'array' THEN p_value -> 'contacts'
                                     ELSE '[]' END) k
                      WHERE wa_norm_phone(k ->> 'wa_id') = wa_norm_phone(v_phone)
                      LIMIT 1),
                    coalesce(wa_any_ts(c ->> 'timestamp'), v_recv),
                    wa_any_ts(c ->> 'start_time'), wa_any_ts(c ->> 'end_time'),
                    CASE WHEN c ->> 'duration' ~ '^[0-9]{1,9}$'
                         THEN (c ->> 'duration')::int END,
                    c ->> 'biz_opaque_callback_data',
                    CASE WHEN lower(c ->> 'event') = 'terminate'
                         THEN v_errors END,
                    c);
    END LOOP;

    -- the statuses of calls the business placed
    FOR c IN SELECT x FROM jsonb_array_elements(
                 CASE jsonb_typeof(p_value -> 'statuses')
                      WHEN 'array' THEN p_value -> 'statuses' ELSE '[]' END) x
    LOOP
        CONTINUE WHEN jsonb_typeof(c) <> 'object'
                      OR coalesce(c ->> 'id', '') = ''
                      OR coalesce(c ->> 'status', '') = '';

        PERFORM wa_call_apply(p_business, p_phone_number_id, c ->> 'id',
                    'status', c ->> 'status', 'out', c ->> 'recipient_id',
                    c ->> 'recipient_user_id', NULL,
                    coalesce(wa_any_ts(c ->> 'timestamp'), v_recv),
                    NULL, NULL, NULL, c ->> 'biz_opaque_callback_data',
                    CASE WHEN jsonb_typeof(c -> 'errors') = 'array'
                         THEN c -> 'errors' END,
                    c);
    END LOOP;
END
$$;
