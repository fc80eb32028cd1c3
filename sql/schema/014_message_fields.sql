-- 014: what messages, statuses and leads keep beyond the raw payload.
--
-- whatsapp_message gets first-class columns for what a CRM queries (reply
-- context, reaction, interactive reply, button payload, referral, media,
-- location), for edits and revokes applied to their original, for what
-- statuses carry (pricing, conversation, callback data, every error, the
-- time it failed, the recipient type) and for the sender's contacts[]
-- entry. They are computed in SQL from the payload by the ingest functions
-- (wa_msg_fields, sql/functions/messages.sql): rows stored before this
-- migration keep them NULL, their payload still has everything.
--
-- leads get the WhatsApp profile name apart from the CRM's name, the
-- username, parent user id and country code of the user, and
-- wa_lead_former_id keeps the phones and user ids a lead had before a
-- user_changed_number / user_changed_user_id system message moved it.
--
-- wa_in_rec gets the sender's contacts[] entry (WA_F_CONTACT), last: a
-- record of the previous format has none, and reads as NULL.
--
-- Every index on a new column is partial (WHERE col IS NOT NULL): a plain
-- text message writes none of them, and building them over old rows reads
-- the table once and adds nothing.

ALTER TABLE whatsapp_message
    ADD COLUMN IF NOT EXISTS context_message_id text,
    ADD COLUMN IF NOT EXISTS context_from text,
    ADD COLUMN IF NOT EXISTS forwarded boolean,
    ADD COLUMN IF NOT EXISTS frequently_forwarded boolean,
    ADD COLUMN IF NOT EXISTS reaction_message_id text,
    ADD COLUMN IF NOT EXISTS reaction_emoji text,
    ADD COLUMN IF NOT EXISTS reply_type text,
    ADD COLUMN IF NOT EXISTS reply_id text,
    ADD COLUMN IF NOT EXISTS reply_title text,
    ADD COLUMN IF NOT EXISTS button_payload text,
    ADD COLUMN IF NOT EXISTS referral_source_url text,
    ADD COLUMN IF NOT EXISTS referral_source_id text,
    ADD COLUMN IF NOT EXISTS referral_source_type text,
    ADD COLUMN IF NOT EXISTS referral_ctwa_clid text,
    ADD COLUMN IF NOT EXISTS media_id text,
    ADD COLUMN IF NOT EXISTS media_mime_type text,
    ADD COLUMN IF NOT EXISTS media_sha256 text,
    ADD COLUMN IF NOT EXISTS media_filename text,
    ADD COLUMN IF NOT EXISTS latitude double precision,
    ADD COLUMN IF NOT EXISTS longitude double precision,
    ADD COLUMN IF NOT EXISTS location_name text,
    ADD COLUMN IF NOT EXISTS location_address text,
    -- an edit or revoke row: the wamid of the message it changes
    ADD COLUMN IF NOT EXISTS target_message_id text,
    -- the original, once an edit or revoke applied to it
    ADD COLUMN IF NOT EXISTS original_body text,
    ADD COLUMN IF NOT EXISTS edited_at timestamptz,
    ADD COLUMN IF NOT EXISTS revoked_at timestamptz,
    -- the sender's contacts[] entry, whole, and its wa_id
    ADD COLUMN IF NOT EXISTS contact jsonb,
    ADD COLUMN IF NOT EXISTS contact_wa_id text,
    -- statuses
    ADD COLUMN IF NOT EXISTS pricing_billable boolean,
    ADD COLUMN IF NOT EXISTS pricing_model text,
    ADD COLUMN IF NOT EXISTS pricing_category text,
    ADD COLUMN IF NOT EXISTS pricing_type text,
    ADD COLUMN IF NOT EXISTS conversation_id text,
    ADD COLUMN IF NOT EXISTS conversation_origin text,
    ADD COLUMN IF NOT EXISTS conversation_expires_at timestamptz,
    ADD COLUMN IF NOT EXISTS callback_data text,
    ADD COLUMN IF NOT EXISTS recipient_type text,
    ADD COLUMN IF NOT EXISTS errors jsonb,
    ADD COLUMN IF NOT EXISTS failed_at timestamptz;

CREATE INDEX IF NOT EXISTS whatsapp_message_context_idx
    ON whatsapp_message (context_message_id, business_id)
    WHERE context_message_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS whatsapp_message_reaction_idx
    ON whatsapp_message (reaction_message_id, business_id)
    WHERE reaction_message_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS whatsapp_message_target_idx
    ON whatsapp_message (target_message_id, business_id)
    WHERE target_message_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS whatsapp_message_reply_idx
    ON whatsapp_message (reply_id, business_id)
    WHERE reply_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS whatsapp_message_button_payload_idx
    ON whatsapp_message (button_payload, business_id)
    WHERE button_payload IS NOT NULL;
CREATE INDEX IF NOT EXISTS whatsapp_message_ctwa_clid_idx
    ON whatsapp_message (referral_ctwa_clid)
    WHERE referral_ctwa_clid IS NOT NULL;
CREATE INDEX IF NOT EXISTS whatsapp_message_referral_source_idx
    ON whatsapp_message (referral_source_id, business_id)
    WHERE referral_source_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS whatsapp_message_media_id_idx
    ON whatsapp_message (media_id)
    WHERE media_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS whatsapp_message_conversation_idx
    ON whatsapp_message (conversation_id)
    WHERE conversation_id IS NOT NULL;


ALTER TABLE leads
    ADD COLUMN IF NOT EXISTS wa_profile_name text,
    ADD COLUMN IF NOT EXISTS wa_username text,
    ADD COLUMN IF NOT EXISTS wa_parent_user_id text,
    ADD COLUMN IF NOT EXISTS wa_country_code text;


-- a phone or user id a lead had before WhatsApp told us it changed
CREATE TABLE IF NOT EXISTS wa_lead_former_id (
    id           bigserial PRIMARY KEY,
    business_id  bigint NOT NULL,
    lead_id      bigint NOT NULL REFERENCES leads (id) ON DELETE CASCADE,
    kind         text NOT NULL CHECK (kind IN ('phone', 'wa_user_id')),
    value        text NOT NULL,
    new_value    text,
    changed_at   timestamptz,
    provider_message_id text,
    created_at   timestamptz NOT NULL DEFAULT now()
);

SELECT wa_ensure_unique('wa_lead_former_id', 'wa_lead_former_id_key',
                        ARRAY['value', 'kind', 'business_id', 'lead_id']);
CREATE INDEX IF NOT EXISTS wa_lead_former_id_lead_idx
    ON wa_lead_former_id (lead_id);


-- the receipts of a message sent to a group, one per participant and
-- status (the message row keeps the group's delivery state)
CREATE TABLE IF NOT EXISTS wa_group_receipt (
    id              bigserial PRIMARY KEY,
    business_id     bigint NOT NULL,
    provider_message_id text NOT NULL,
    recipient_id    text,
    participant_id  text NOT NULL,
    status          text NOT NULL,
    provider_ts     timestamptz,
    payload         jsonb,
    created_at      timestamptz NOT NULL DEFAULT now()
);

SELECT wa_ensure_unique('wa_group_receipt', 'wa_group_receipt_key',
                        ARRAY['provider_message_id', 'participant_id',
                              'status', 'business_id']);


-- the contact of a run's inbound messages; the composites of what
-- wa_msg_fields derives from a message's payload and of what a receipt
-- merges into its message
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_attribute
                    WHERE attrelid = 'wa_in_rec'::regclass
                      AND attname = 'contact' AND NOT attisdropped)
    THEN
        ALTER TYPE wa_in_rec ADD ATTRIBUTE contact text;
    END IF;

    IF to_regtype('wa_msg_fields') IS NULL THEN
        CREATE TYPE wa_msg_fields AS (
            body                  text,
            context_message_id    text,
            context_from          text,
            forwarded             boolean,
            frequently_forwarded  boolean,
            reaction_message_id   text,
            reaction_emoji        text,
            reply_type            text,
            reply_id              text,
            reply_title           text,
            button_payload        text,
            referral_source_url   text,
            referral_source_id    text,
            referral_source_type  text,
            referral_ctwa_clid    text,
            media_id              text,
            media_mime_type       text,
            media_sha256          text,
            media_filename        text,
            latitude              double precision,
            longitude             double precision,
            location_name         text,
            location_address      text,
            target_message_id     text);
    END IF;

    -- what a status receipt may change in a message beside its delivery
    -- state (wa_receipt_merged)
    IF to_regtype('wa_receipt_state') IS NULL THEN
        CREATE TYPE wa_receipt_state AS (
            pricing_billable         boolean,
            pricing_model            text,
            pricing_category         text,
            pricing_type             text,
            conversation_id          text,
            conversation_origin      text,
            conversation_expires_at  timestamptz,
            callback_data            text,
            recipient_type           text,
            errors                   jsonb,
            failed_at                timestamptz);
    END IF;
END
$$;
