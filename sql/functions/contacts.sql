-- What a customer's lead learns from events that are not messages, called
-- by wa_event_apply (events.sql) with the change's value, which wa_event
-- also keeps whole:
--
--   smb_app_state_sync: the WhatsApp Business app's address book (add,
--     which is also an edit, and remove), in wa_contact_sync, and the
--     name the business gave the contact on the lead (contact_name);
--   user_preferences: a customer's marketing stop / resume, in
--     wa_lead_preference, and the current one on the lead
--     (marketing_preference).
--
-- A lead's column moves only for an event strictly newer than the one
-- that set it (its *_at column): an older event that arrives later, or a
-- redelivery, is kept in the history table and changes nothing.


-- the lead of a phone, never created (NULL when there is none)
CREATE OR REPLACE FUNCTION wa_lead_of_phone(p_business bigint, p_phone text)
RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT l.id FROM leads l
     WHERE l.phone IN (p_phone, '+' || p_phone) AND l.business_id = p_business
     ORDER BY l.phone = p_phone DESC
     LIMIT 1
$$;


-- value.state_sync[]: {type: contact, action: add | remove,
-- contact {full_name, first_name, phone_number}, metadata {timestamp}}.
-- An add finds or creates the lead of the phone (wa_lead_resolve: its
-- name is filled only when it has none, so a name the CRM set stays) and
-- sets contact_name; a remove clears contact_name and deletes nothing.
CREATE OR REPLACE FUNCTION wa_event_state_sync(p_business bigint,
    p_phone_number_id text, p_value jsonb, p_time timestamptz)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    s        jsonb;
    v_phone  text;
    v_full   text;
    v_name   text;
    v_action text;
    v_time   timestamptz;
    v_lead   bigint;
    v_id     bigint;
BEGIN
    FOR s IN SELECT x FROM jsonb_array_elements(
                 CASE jsonb_typeof(p_value -> 'state_sync')
                      WHEN 'array' THEN p_value -> 'state_sync'
                      ELSE '[]' END) x
    LOOP
        CONTINUE WHEN jsonb_typeof(s) <> 'object'
                      OR coalesce(s ->> 'type', 'contact') <> 'contact';

        v_phone := wa_norm_phone(s #>> '{contact,phone_number}');
        v_action := lower(s ->> 'action');
        CONTINUE WHEN v_phone IS NULL OR v_action IS NULL;

        v_full := nullif(btrim(s #>> '{contact,full_name}'), '');
        v_name := coalesce(v_full,
                           nullif(btrim(s #>> '{contact,first_name}'), ''));
        v_time := coalesce(wa_any_ts(s #>> '{metadata,timestamp}'), p_time);

        IF v_action = 'remove' THEN
            v_lead := wa_lead_of_phone(p_business, v_phone);
        ELSE
            v_lead := (wa_lead_resolve(p_business, v_phone, NULL,
                                       v_name)).lead_id;
        END IF;

        INSERT INTO wa_contact_sync AS c
               (business_id, lead_id, phone_number_id, phone, action,
                full_name, first_name, event_time, payload, dedupe_key)
        VALUES (p_business, v_lead, p_phone_number_id, v_phone, v_action,
                v_full, s #>> '{contact,first_name}', v_time, s,
                md5(jsonb_build_array(p_business, p_phone_number_id,
                                      s)::text))
        ON CONFLICT DO NOTHING
        RETURNING c.id INTO v_id;

        CONTINUE WHEN v_id IS NULL OR v_lead IS NULL;

        UPDATE leads l
           SET contact_name = CASE WHEN v_action = 'remove' THEN NULL
                                   ELSE v_name END,
               contact_name_at = v_time
         WHERE l.id = v_lead
           AND (l.contact_name_at IS NULL OR l.contact_name_at < v_time);
    END LOOP;
END
$$;


-- value.user_preferences[]: {wa_id, user_id, detail, category: 
-- marketing_messages, value: stop | resume, timestamp}, the customer's
-- name in value.contacts[]
CREATE OR REPLACE FUNCTION wa_event_user_preferences(p_business bigint,
    p_phone_number_id text, p_value jsonb, p_time timestamptz)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    u        jsonb;
    v_phone  text;
    v_uid    text;
    v_time   timestamptz;
    v_lead   bigint;
    v_id     bigint;
BEGIN
    FOR u IN SELECT x FROM jsonb_array_elements(
                 CASE jsonb_typeof(p_value -> 'user_preferences')
                      WHEN 'array' THEN p_value -> 'user_preferences'
                      ELSE '[]' END) x
    LOOP
        CONTINUE WHEN jsonb_typeof(u) <> 'object'
                      OR coalesce(u ->> 'value', '') = '';

        v_phone := wa_norm_phone(u ->> 'wa_id');
        v_uid := nullif(u ->> 'user_id', '');
        CONTINUE WHEN v_phone IS NULL AND v_uid IS NULL;

        v_time := coalesce(wa_any_ts(u ->> 'timestamp'), p_time);

        v_lead := (wa_lead_resolve(p_business, v_phone, v_uid,
                      (SELECT k #>> '{profile,name}'
                         FROM jsonb_array_elements(
                                  CASE jsonb_typeof(p_value -> 'contacts')
                                       WHEN 'array' THEN p_value -> 'contacts'
                                       ELSE '[]' END) k
                        WHERE wa_norm_phone(k ->> 'wa_id') = v_phone
                           OR k ->> 'user_id' = v_uid
                        LIMIT 1))).lead_id;

        INSERT INTO wa_lead_preference AS p
               (business_id, lead_id, phone, wa_user_id, phone_number_id,
                category, value, detail, event_time, payload)
        VALUES (p_business, v_lead, v_phone, v_uid, p_phone_number_id,
                coalesce(u ->> 'category', 'marketing_messages'),
                lower(u ->> 'value'), u ->> 'detail', v_time, u)
        ON CONFLICT DO NOTHING
        RETURNING p.id INTO v_id;

        CONTINUE WHEN v_id IS NULL
                      OR coalesce(u ->> 'category', 'marketing_messages')
                         <> 'marketing_messages';

        UPDATE leads l
           SET marketing_preference = lower(u ->> 'value'),
               marketing_preference_at = v_time
         WHERE l.id = v_lead
           AND (l.marketing_preference_at IS NULL
                OR l.marketing_preference_at < v_time);
    END LOOP;
END
$$;
