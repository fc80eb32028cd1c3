-- 012: every webhook change is stored, whatever its field.
--
-- wa_event keeps the changes that have no structured home (account and
-- template updates, quality, security, calls, history, ...): the value as
-- jsonb with its field, WABA (entry.id) and entry time, so that a 200
-- never stands for a change thrown away.
--
-- dedupe_key is md5 of [field, waba_id, phone_number_id, entry time,
-- value] rendered as one jsonb array: a redelivered body is the same array
-- (jsonb drops the key order and spacing of the sender) and stores
-- nothing new, while the same value sent again later (a quality rating
-- back to where it was) carries another entry time and is a row of its
-- own. Not keyed by business: the business comes from nginx's channel
-- list, which may change between a delivery and its retry.
--
-- wa_webhook_error.event_time: the entry time of an error, which its
-- dedupe key now uses instead of the time nginx received it (a redelivery
-- was stored again).

CREATE TABLE IF NOT EXISTS wa_event (
    id               bigserial PRIMARY KEY,
    business_id      bigint NOT NULL,
    phone_number_id  text,
    waba_id          text,
    field            text,
    payload          jsonb NOT NULL,
    event_time       timestamptz,
    received_at      timestamptz,
    dedupe_key       text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);

SELECT wa_ensure_unique('wa_event', 'wa_event_dedupe_key',
                        ARRAY['dedupe_key']);

CREATE INDEX IF NOT EXISTS wa_event_business_field_idx
    ON wa_event (business_id, field, id);

ALTER TABLE wa_webhook_error ADD COLUMN IF NOT EXISTS event_time timestamptz;
