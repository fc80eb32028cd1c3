-- 013: structured homes for the webhook fields 012 stored only raw.
--
-- wa_event keeps every change as it came (the never-drop guarantee); the
-- ingest of a change now also fills these tables from the same value, in
-- the same call (sql/functions/events.sql dispatches on the field).
-- Every row is keyed so that a redelivered body changes nothing, and
-- every "current state" column moves only for an event at least as
-- recent as the one that set it (its *_at column): an older event that
-- arrives later is kept in its history table, never applied over a newer
-- one.

-- history: the progress of a coexistence chat history sync, one row per
-- (business, phone number, phase, chunk): what a CRM polls to know how far
-- the import went and whether the business declined it.
CREATE TABLE IF NOT EXISTS wa_history_sync (
    id               bigserial PRIMARY KEY,
    business_id      bigint NOT NULL,
    phone_number_id  text NOT NULL,
    waba_id          text,
    phase            int NOT NULL,       -- -1: a chunk without metadata
    chunk_order      int NOT NULL,       -- -1: idem
    progress         int,
    messages         int NOT NULL DEFAULT 0, -- message objects in the chunk
    errors           jsonb,              -- history[].errors[], e.g. 2593109
    received_at      timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

SELECT wa_ensure_unique('wa_history_sync', 'wa_history_sync_chunk_key',
    ARRAY['phone_number_id', 'business_id', 'phase', 'chunk_order']);


-- user_preferences: every stop / resume of a lead, with its time
CREATE TABLE IF NOT EXISTS wa_lead_preference (
    id               bigserial PRIMARY KEY,
    business_id      bigint NOT NULL,
    lead_id          bigint REFERENCES leads (id) ON DELETE SET NULL,
    phone            text,
    wa_user_id       text,
    phone_number_id  text,
    category         text NOT NULL,      -- marketing_messages
    value            text NOT NULL,      -- stop, resume
    detail           text,
    event_time       timestamptz NOT NULL,
    payload          jsonb NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX IF NOT EXISTS wa_lead_preference_key
    ON wa_lead_preference (business_id, coalesce(phone, ''),
                           coalesce(wa_user_id, ''), category, event_time,
                           value);
CREATE INDEX IF NOT EXISTS wa_lead_preference_lead_idx
    ON wa_lead_preference (lead_id, event_time);

-- the lead's current marketing preference (the latest by event time) and
-- the name the business gave it in the WhatsApp Business app's contacts
ALTER TABLE leads ADD COLUMN IF NOT EXISTS marketing_preference text;
ALTER TABLE leads ADD COLUMN IF NOT EXISTS marketing_preference_at timestamptz;
ALTER TABLE leads ADD COLUMN IF NOT EXISTS contact_name text;
ALTER TABLE leads ADD COLUMN IF NOT EXISTS contact_name_at timestamptz;


-- smb_app_state_sync: every contact add / edit / remove of the Business
-- app's address book, as Meta sent it
CREATE TABLE IF NOT EXISTS wa_contact_sync (
    id               bigserial PRIMARY KEY,
    business_id      bigint NOT NULL,
    lead_id          bigint REFERENCES leads (id) ON DELETE SET NULL,
    phone_number_id  text,
    phone            text NOT NULL,
    action           text NOT NULL,      -- add (also an edit), remove
    full_name        text,
    first_name       text,
    event_time       timestamptz,
    payload          jsonb NOT NULL,
    dedupe_key       text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);

SELECT wa_ensure_unique('wa_contact_sync', 'wa_contact_sync_dedupe_key',
                        ARRAY['dedupe_key']);
CREATE INDEX IF NOT EXISTS wa_contact_sync_lead_idx
    ON wa_contact_sync (lead_id);


-- calls: one row per call id and business, its current state; every
-- event of the call in wa_call_event
CREATE TABLE IF NOT EXISTS wa_call (
    id               bigserial PRIMARY KEY,
    business_id      bigint NOT NULL,
    call_id          text NOT NULL,      -- wacid.…
    lead_id          bigint REFERENCES leads (id) ON DELETE SET NULL,
    phone_number_id  text,
    phone            text,               -- the customer
    wa_user_id       text,
    direction        text,               -- in (user initiated), out
    status           text,               -- RINGING, ACCEPTED, REJECTED,
                                         -- COMPLETED, FAILED, ...
    status_at        timestamptz,
    connected_at     timestamptz,        -- the connect event
    started_at       timestamptz,        -- terminate's start_time
    ended_at         timestamptz,        -- terminate's end_time
    duration         int,                -- seconds
    callback_data    text,               -- biz_opaque_callback_data
    errors           jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

SELECT wa_ensure_unique('wa_call', 'wa_call_call_id_business_key',
                        ARRAY['call_id', 'business_id']);
CREATE INDEX IF NOT EXISTS wa_call_lead_idx ON wa_call (lead_id);

CREATE TABLE IF NOT EXISTS wa_call_event (
    id               bigserial PRIMARY KEY,
    call_row_id      bigint NOT NULL REFERENCES wa_call (id) ON DELETE CASCADE,
    kind             text NOT NULL,      -- connect, terminate, status
    status           text,
    event_time       timestamptz,
    payload          jsonb NOT NULL,
    dedupe_key       text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);

SELECT wa_ensure_unique('wa_call_event', 'wa_call_event_dedupe_key',
                        ARRAY['dedupe_key']);
CREATE INDEX IF NOT EXISTS wa_call_event_call_idx
    ON wa_call_event (call_row_id, id);


-- message templates: current status, category and quality of each
-- template (per WABA, template id, name, language), each from the newest
-- event (the entry's time) that set it
CREATE TABLE IF NOT EXISTS wa_template (
    id               bigserial PRIMARY KEY,
    business_id      bigint NOT NULL,
    waba_id          text NOT NULL,
    template_id      text NOT NULL,
    name             text NOT NULL DEFAULT '',
    language         text NOT NULL DEFAULT '',
    status           text,               -- APPROVED, REJECTED, PAUSED, ...
    status_reason    text,
    status_at        timestamptz,
    category         text,               -- MARKETING, UTILITY, ...
    previous_category text,
    category_at      timestamptz,
    quality          text,               -- GREEN, YELLOW, RED, UNKNOWN
    previous_quality text,
    quality_at       timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

SELECT wa_ensure_unique('wa_template', 'wa_template_key',
    ARRAY['template_id', 'waba_id', 'name', 'language']);


-- business phone numbers: current messaging limit, quality event and
-- display name decision. Meta's account level events name the number
-- by its display number only; phone_number_id is learnt from the events
-- whose metadata carries both.
CREATE TABLE IF NOT EXISTS wa_phone_number (
    id                    bigserial PRIMARY KEY,
    business_id           bigint NOT NULL,
    waba_id               text,
    display_phone_number  text NOT NULL,
    phone_number_id       text,
    quality_event         text,          -- FLAGGED, UNFLAGGED, UPGRADE, ...
    messaging_limit       text,          -- TIER_1K, TIER_UNLIMITED, ...
    previous_limit        text,
    quality_at            timestamptz,
    name_decision         text,          -- APPROVED, REJECTED, DEFERRED
    requested_name        text,
    name_rejection_reason text,
    name_at               timestamptz,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);

SELECT wa_ensure_unique('wa_phone_number', 'wa_phone_number_display_key',
                        ARRAY['display_phone_number']);
CREATE UNIQUE INDEX IF NOT EXISTS wa_phone_number_id_key
    ON wa_phone_number (phone_number_id) WHERE phone_number_id IS NOT NULL;
