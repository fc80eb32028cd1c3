-- history: the chat history Meta imports when a WhatsApp Business app
-- number joins Cloud API (coexistence). Called by wa_event_apply
-- (events.sql) with the change's value, which wa_event also keeps whole.
--
--   value.history[]: one chunk each, metadata {phase, chunk_order,
--     progress} or errors[] (the business declined: 2593109), and
--     threads[] {id: the customer's phone, messages[]};
--   value.messages[]: the contents of a media message that an earlier
--     chunk described as a media_placeholder.
--
-- Each message becomes a whatsapp_message row through the functions that
-- store live messages (wa_ingest_in_message, wa_ingest_echo), keyed by
-- its wamid like every message: a redelivered or overlapping chunk adds
-- nothing, and a message already stored live (an echo, a send) keeps its
-- row. Its history_context.status then moves an outbound row the way a
-- receipt does (wa_msg_merge: only forward, failed terminal), without a
-- time: Meta does not say when it was delivered or read.


-- a readable body: the text, or the caption (or the text) of the object
-- named by the type
CREATE OR REPLACE FUNCTION wa_history_body(m jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN jsonb_typeof(m -> (m ->> 'type')) = 'object' THEN
                coalesce(m -> (m ->> 'type') ->> 'body',
                         m -> (m ->> 'type') ->> 'caption',
                         m -> (m ->> 'type') ->> 'text',
                         m -> (m ->> 'type') ->> 'emoji')
           END
$$;


-- history_context.status as a message status (NULL: moves nothing)
CREATE OR REPLACE FUNCTION wa_history_status(p text)
RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE upper(p) WHEN 'SENT' THEN 'sent'
                         WHEN 'DELIVERED' THEN 'delivered'
                         WHEN 'READ' THEN 'read'
                         WHEN 'PLAYED' THEN 'played'
                         WHEN 'ERROR' THEN 'failed' END
$$;


-- One message of the history. p_customer is the thread's id (NULL for the
-- media contents of value.messages[]); from the business when it says so
-- (history_context.from_me), when `from` is the business's display
-- number, or when `from` is not the thread's customer (a phone; a thread
-- named by a business-scoped user id goes by the first two only).
CREATE OR REPLACE FUNCTION wa_history_message(p_business bigint,
    p_phone_number_id text, p_display text, p_customer text, m jsonb,
    p_received_ms text)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_wamid     text := nullif(m ->> 'id', '');
    v_from      text := nullif(m ->> 'from', '');
    v_type      text := m ->> 'type';
    v_ts        text := CASE WHEN m ->> 'timestamp' ~ '^[0-9]{1,11}$'
                             THEN m ->> 'timestamp' END;
    v_out       boolean;
    v_customer  text;
    v_uid       text;
    v_result    text;
    v_id        bigint;
    v_cur       text;
    v_status    text := wa_history_status(m #>> '{history_context,status}');
BEGIN
    IF v_wamid IS NULL OR jsonb_typeof(m) <> 'object' THEN
        RETURN 'skipped';
    END IF;

    v_out := coalesce((m #>> '{history_context,from_me}') = 'true'
                      OR wa_norm_phone(v_from) = wa_norm_phone(p_display)
                      OR (p_customer !~ '[A-Za-z]'
                          AND wa_norm_phone(v_from)
                              <> wa_norm_phone(p_customer)),
                      false);

    v_customer := coalesce(p_customer,
                           CASE WHEN v_out THEN m ->> 'to' ELSE v_from END);

    -- the contents of a media message stored as a placeholder
    IF v_type IS DISTINCT FROM 'media_placeholder' THEN
        UPDATE whatsapp_message
           SET type = v_type, body = wa_history_body(m), payload = m,
               updated_at = now()
         WHERE business_id = p_business AND provider_message_id = v_wamid
           AND type = 'media_placeholder';

        IF FOUND THEN
            RETURN 'updated';
        END IF;
    END IF;

    -- a thread of a user known by a business-scoped user id, not a phone
    IF v_customer ~ '[A-Za-z]' THEN
        v_uid := v_customer;
        v_customer := NULL;
    END IF;

    IF wa_norm_phone(v_customer) IS NULL AND v_uid IS NULL THEN
        RETURN 'skipped';    -- no lead to give it: kept in wa_event only
    END IF;

    IF v_out THEN
        v_result := wa_ingest_echo(p_business::text, p_phone_number_id,
                        v_customer, v_uid, v_wamid, v_type,
                        wa_history_body(m), v_ts, m::text, p_received_ms);
    ELSE
        v_result := wa_ingest_in_message(p_business::text,
                        p_phone_number_id, v_customer, v_uid, NULL, v_wamid,
                        v_type, wa_history_body(m), v_ts, m::text,
                        p_received_ms);
    END IF;

    SELECT w.id, w.status INTO v_id, v_cur
      FROM whatsapp_message w
     WHERE w.business_id = p_business AND w.provider_message_id = v_wamid;

    IF v_result = 'inserted' THEN
        UPDATE whatsapp_message SET source = 'history' WHERE id = v_id;
    END IF;

    -- the receipt the history carries, when it moves the row
    IF v_out AND v_status IS NOT NULL AND v_cur IS DISTINCT FROM 'failed'
       AND v_cur IS DISTINCT FROM 'received'
       AND (v_status = 'failed'
            OR wa_status_rank(v_status) > coalesce(wa_status_rank(v_cur), -1))
    THEN
        PERFORM wa_msg_merge(v_id, v_status, NULL, v_wamid, NULL,
                             CASE WHEN v_status = 'failed'
                                  THEN 'history: ERROR' END,
                             NULL, NULL, NULL);
    END IF;

    RETURN v_result;
END
$$;


CREATE OR REPLACE FUNCTION wa_event_history(p_business bigint,
    p_phone_number_id text, p_waba_id text, p_value jsonb,
    p_received_ms text)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_display  text := p_value #>> '{metadata,display_phone_number}';
    v_pnid     text := coalesce(p_phone_number_id, '');
    h          jsonb;
    t          jsonb;
    m          jsonb;
    v_n        int;
BEGIN
    FOR h IN SELECT x FROM jsonb_array_elements(
                 CASE jsonb_typeof(p_value -> 'history')
                      WHEN 'array' THEN p_value -> 'history'
                      ELSE '[]' END) x
    LOOP
        CONTINUE WHEN jsonb_typeof(h) <> 'object';
        v_n := 0;

        FOR t IN SELECT x FROM jsonb_array_elements(
                     CASE jsonb_typeof(h -> 'threads')
                          WHEN 'array' THEN h -> 'threads'
                          ELSE '[]' END) x
        LOOP
            CONTINUE WHEN jsonb_typeof(t) <> 'object'
                          OR jsonb_typeof(t -> 'messages') <> 'array';

            FOR m IN SELECT x FROM jsonb_array_elements(t -> 'messages') x
            LOOP
                v_n := v_n + 1;
                -- one message PostgreSQL refuses does not cost the chunk
                BEGIN
                    PERFORM wa_history_message(p_business, p_phone_number_id,
                                v_display, t ->> 'id', m, p_received_ms);
                EXCEPTION
                    WHEN data_exception OR integrity_constraint_violation
                         OR program_limit_exceeded
                    THEN
                        RAISE WARNING 'history message % of number % kept '
                                      'in wa_event only: % (%)',
                                      left(m ->> 'id', 80), p_phone_number_id,
                                      SQLERRM, SQLSTATE;
                END;
            END LOOP;
        END LOOP;

        -- the chunk's progress; a redelivery finds it as it is
        INSERT INTO wa_history_sync AS s
               (business_id, phone_number_id, waba_id, phase, chunk_order,
                progress, messages, errors, received_at)
        VALUES (p_business, v_pnid, p_waba_id,
                CASE WHEN h #>> '{metadata,phase}' ~ '^[0-9]{1,9}$'
                     THEN (h #>> '{metadata,phase}')::int ELSE -1 END,
                CASE WHEN h #>> '{metadata,chunk_order}' ~ '^[0-9]{1,9}$'
                     THEN (h #>> '{metadata,chunk_order}')::int ELSE -1 END,
                CASE WHEN h #>> '{metadata,progress}' ~ '^[0-9]{1,9}$'
                     THEN (h #>> '{metadata,progress}')::int END,
                v_n,
                CASE WHEN jsonb_typeof(h -> 'errors') = 'array'
                     THEN h -> 'errors' END,
                coalesce(wa_ts_ms(p_received_ms), now()))
        ON CONFLICT (phone_number_id, business_id, phase, chunk_order)
        DO UPDATE SET progress = greatest(s.progress, excluded.progress),
                      messages = greatest(s.messages, excluded.messages),
                      errors = coalesce(excluded.errors, s.errors),
                      updated_at = now()
         WHERE s.progress IS DISTINCT FROM greatest(s.progress,
                                                    excluded.progress)
            OR s.messages < excluded.messages
            OR s.errors IS DISTINCT FROM coalesce(excluded.errors, s.errors);
    END LOOP;

    -- the contents of media messages described earlier as placeholders
    FOR m IN SELECT x FROM jsonb_array_elements(
                 CASE jsonb_typeof(p_value -> 'messages')
                      WHEN 'array' THEN p_value -> 'messages'
                      ELSE '[]' END) x
    LOOP
        PERFORM wa_history_message(p_business, p_phone_number_id, v_display,
                                   NULL, m, p_received_ms);
    END LOOP;
END
$$;
