-- 018: replies, reads by the business, and media uploads through the
-- gateway.
--
-- whatsapp_message.context_message_id: the wamid a message replies to (a
-- send's "context": {"message_id"}), indexed so a conversation's replies
-- are found from the message they answer. The inbound side (context.id of
-- a received message) adds the same column and index in 014 (issue 15):
-- both are IF NOT EXISTS, of one definition, so either order leaves one
-- column and one index.
--
-- whatsapp_message.read_by_business_at: when the business marked an
-- inbound message read through the gateway (Meta then shows the sender
-- the blue ticks). Set once, by the first successful mark.
--
-- wa_mark_read: each mark-as-read call (with or without the typing
-- indicator), recorded before it is made and given its outcome after, as
-- a send is. It names its message by (provider_message_id, business_id),
-- the message's own unique key, not by a foreign key: a CRM that empties
-- or archives whatsapp_message is not stopped by the log of its reads.
--
-- wa_media_upload: each file uploaded to the Cloud API's media endpoint:
-- recorded before the upload (type, size), given its media id and the
-- SHA-256 of the bytes that left after.

ALTER TABLE whatsapp_message ADD COLUMN IF NOT EXISTS context_message_id text;
ALTER TABLE whatsapp_message ADD COLUMN IF NOT EXISTS read_by_business_at
    timestamptz;

CREATE INDEX IF NOT EXISTS whatsapp_message_context_idx
    ON whatsapp_message (context_message_id, business_id)
    WHERE context_message_id IS NOT NULL;


CREATE TABLE IF NOT EXISTS wa_mark_read (
    id           bigserial PRIMARY KEY,
    business_id  bigint NOT NULL
);

ALTER TABLE wa_mark_read ADD COLUMN IF NOT EXISTS phone_number_id text;
ALTER TABLE wa_mark_read ADD COLUMN IF NOT EXISTS local_id text;
ALTER TABLE wa_mark_read ADD COLUMN IF NOT EXISTS provider_message_id text;
ALTER TABLE wa_mark_read ADD COLUMN IF NOT EXISTS typing_indicator text;
ALTER TABLE wa_mark_read ADD COLUMN IF NOT EXISTS status text;
ALTER TABLE wa_mark_read ADD COLUMN IF NOT EXISTS http_status integer;
ALTER TABLE wa_mark_read ADD COLUMN IF NOT EXISTS error_code integer;
ALTER TABLE wa_mark_read ADD COLUMN IF NOT EXISTS error_title text;
ALTER TABLE wa_mark_read ADD COLUMN IF NOT EXISTS error_detail text;
ALTER TABLE wa_mark_read ADD COLUMN IF NOT EXISTS fbtrace_id text;
ALTER TABLE wa_mark_read ADD COLUMN IF NOT EXISTS payload jsonb;
ALTER TABLE wa_mark_read ADD COLUMN IF NOT EXISTS created_at timestamptz
    NOT NULL DEFAULT now();
ALTER TABLE wa_mark_read ADD COLUMN IF NOT EXISTS done_at timestamptz;
ALTER TABLE wa_mark_read ADD COLUMN IF NOT EXISTS updated_at timestamptz
    NOT NULL DEFAULT now();

SELECT wa_ensure_unique('wa_mark_read', 'wa_mark_read_local_id_business_key',
                        ARRAY['local_id', 'business_id']);
CREATE INDEX IF NOT EXISTS wa_mark_read_wamid_idx
    ON wa_mark_read (provider_message_id, business_id);


CREATE TABLE IF NOT EXISTS wa_media_upload (
    id           bigserial PRIMARY KEY,
    business_id  bigint NOT NULL
);

ALTER TABLE wa_media_upload ADD COLUMN IF NOT EXISTS phone_number_id text;
ALTER TABLE wa_media_upload ADD COLUMN IF NOT EXISTS local_id text;
ALTER TABLE wa_media_upload ADD COLUMN IF NOT EXISTS media_id text;
ALTER TABLE wa_media_upload ADD COLUMN IF NOT EXISTS media_type text;
ALTER TABLE wa_media_upload ADD COLUMN IF NOT EXISTS mime_type text;
ALTER TABLE wa_media_upload ADD COLUMN IF NOT EXISTS filename text;
ALTER TABLE wa_media_upload ADD COLUMN IF NOT EXISTS size bigint;
ALTER TABLE wa_media_upload ADD COLUMN IF NOT EXISTS sha256 text;
ALTER TABLE wa_media_upload ADD COLUMN IF NOT EXISTS status text;
ALTER TABLE wa_media_upload ADD COLUMN IF NOT EXISTS http_status integer;
ALTER TABLE wa_media_upload ADD COLUMN IF NOT EXISTS error_code integer;
ALTER TABLE wa_media_upload ADD COLUMN IF NOT EXISTS error_title text;
ALTER TABLE wa_media_upload ADD COLUMN IF NOT EXISTS error_detail text;
ALTER TABLE wa_media_upload ADD COLUMN IF NOT EXISTS fbtrace_id text;
ALTER TABLE wa_media_upload ADD COLUMN IF NOT EXISTS retryable boolean;
ALTER TABLE wa_media_upload ADD COLUMN IF NOT EXISTS created_at timestamptz
    NOT NULL DEFAULT now();
ALTER TABLE wa_media_upload ADD COLUMN IF NOT EXISTS uploaded_at timestamptz;
ALTER TABLE wa_media_upload ADD COLUMN IF NOT EXISTS updated_at timestamptz
    NOT NULL DEFAULT now();

SELECT wa_ensure_unique('wa_media_upload',
                        'wa_media_upload_local_id_business_key',
                        ARRAY['local_id', 'business_id']);
CREATE INDEX IF NOT EXISTS wa_media_upload_media_id_idx
    ON wa_media_upload (media_id, business_id) WHERE media_id IS NOT NULL;
