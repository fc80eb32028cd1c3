-- Templates and business phone numbers: their current state from the
-- account level events, called by wa_event_apply (events.sql), which
-- passes the event's time (the entry's `time`, else when nginx received
-- it). Every event stays in wa_event; a column here moves only for an
-- event strictly newer than the one that set it (its *_at column), so an
-- older event that arrives later, or a redelivery, changes nothing.


-- message_template_status_update {event, message_template_id,
-- message_template_name, message_template_language, reason,
-- message_template_category}, message_template_quality_update
-- {previous_quality_score, new_quality_score, ...}, template_category_update
-- {previous_category, new_category (or correct_category), ...}
CREATE OR REPLACE FUNCTION wa_event_template(p_business bigint,
    p_waba_id text, p_field text, p_value jsonb, p_time timestamptz)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_tid   text := p_value ->> 'message_template_id';
    v_name  text := coalesce(p_value ->> 'message_template_name', '');
    v_lang  text := coalesce(p_value ->> 'message_template_language', '');
    v_id    bigint;
BEGIN
    IF coalesce(v_tid, '') = '' THEN
        RETURN;
    END IF;

    INSERT INTO wa_template AS t (business_id, waba_id, template_id, name,
                                  language)
    VALUES (p_business, coalesce(p_waba_id, ''), v_tid, v_name, v_lang)
    ON CONFLICT (template_id, waba_id, name, language) DO NOTHING;

    SELECT t.id INTO v_id FROM wa_template t
     WHERE t.template_id = v_tid AND t.waba_id = coalesce(p_waba_id, '')
       AND t.name = v_name AND t.language = v_lang;

    IF p_field = 'message_template_status_update' THEN
        UPDATE wa_template t
           SET status = p_value ->> 'event',
               status_reason = p_value ->> 'reason',
               category = CASE WHEN p_value ? 'message_template_category'
                                    AND (t.category_at IS NULL
                                         OR t.category_at < p_time)
                               THEN p_value ->> 'message_template_category'
                               ELSE t.category END,
               category_at = CASE WHEN p_value ? 'message_template_category'
                                       AND (t.category_at IS NULL
                                            OR t.category_at < p_time)
                                  THEN p_time ELSE t.category_at END,
               status_at = p_time, updated_at = now()
         WHERE t.id = v_id AND (t.status_at IS NULL OR t.status_at < p_time);

    ELSIF p_field = 'message_template_quality_update' THEN
        UPDATE wa_template t
           SET quality = p_value ->> 'new_quality_score',
               previous_quality = p_value ->> 'previous_quality_score',
               quality_at = p_time, updated_at = now()
         WHERE t.id = v_id
           AND (t.quality_at IS NULL OR t.quality_at < p_time);

    ELSE
        UPDATE wa_template t
           SET category = coalesce(p_value ->> 'new_category',
                                   p_value ->> 'correct_category'),
               previous_category = p_value ->> 'previous_category',
               category_at = p_time, updated_at = now()
         WHERE t.id = v_id
           AND (t.category_at IS NULL OR t.category_at < p_time);
    END IF;
END
$$;


-- the row of a display number, created when missing
CREATE OR REPLACE FUNCTION wa_phone_number_row(p_business bigint,
    p_waba_id text, p_display text)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_id  bigint;
BEGIN
    INSERT INTO wa_phone_number AS n (business_id, waba_id,
                                      display_phone_number)
    VALUES (p_business, p_waba_id, p_display)
    ON CONFLICT (display_phone_number) DO NOTHING;

    SELECT n.id INTO v_id FROM wa_phone_number n
     WHERE n.display_phone_number = p_display;

    RETURN v_id;
END
$$;


-- a value whose metadata names a number's id and display number: the
-- number's row learns its id (never taken from another row)
CREATE OR REPLACE FUNCTION wa_phone_number_learn(p_business bigint,
    p_waba_id text, p_display text, p_phone_number_id text)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_display  text := wa_norm_phone(p_display);
    v_id       bigint;
BEGIN
    IF v_display IS NULL OR coalesce(p_phone_number_id, '') = ''
       OR EXISTS (SELECT 1 FROM wa_phone_number n
                   WHERE n.phone_number_id = p_phone_number_id)
    THEN
        RETURN;
    END IF;

    v_id := wa_phone_number_row(p_business, p_waba_id, v_display);

    UPDATE wa_phone_number n
       SET phone_number_id = p_phone_number_id,
           waba_id = coalesce(n.waba_id, p_waba_id), updated_at = now()
     WHERE n.id = v_id AND n.phone_number_id IS NULL;
END
$$;


-- phone_number_quality_update {display_phone_number, event, current_limit,
-- old_limit, max_daily_conversations_per_business},
-- phone_number_name_update {display_phone_number, decision,
-- requested_verified_name, rejection_reason}
CREATE OR REPLACE FUNCTION wa_event_phone_number(p_business bigint,
    p_waba_id text, p_field text, p_value jsonb, p_time timestamptz)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_display  text := wa_norm_phone(p_value ->> 'display_phone_number');
    v_id       bigint;
BEGIN
    IF v_display IS NULL THEN
        RETURN;
    END IF;

    v_id := wa_phone_number_row(p_business, p_waba_id, v_display);

    IF p_field = 'phone_number_quality_update' THEN
        UPDATE wa_phone_number n
           SET quality_event = p_value ->> 'event',
               messaging_limit = coalesce(
                   p_value ->> 'max_daily_conversations_per_business',
                   p_value ->> 'current_limit', n.messaging_limit),
               previous_limit = p_value ->> 'old_limit',
               quality_at = p_time, updated_at = now()
         WHERE n.id = v_id
           AND (n.quality_at IS NULL OR n.quality_at < p_time);
    ELSE
        UPDATE wa_phone_number n
           SET name_decision = p_value ->> 'decision',
               requested_name = p_value ->> 'requested_verified_name',
               name_rejection_reason = p_value ->> 'rejection_reason',
               name_at = p_time, updated_at = now()
         WHERE n.id = v_id AND (n.name_at IS NULL OR n.name_at < p_time);
    END IF;
END
$$;
