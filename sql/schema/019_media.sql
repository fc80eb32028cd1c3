-- 019: inbound media kept (issue 17). One row per message with a media
-- object (image, video, audio, document, sticker) that came from the
-- customer, the Business app (echoes) or a history import. `wa-writer
-- media` fetches each through nginx's wa_media_fetch location (the token
-- stays in nginx.conf), stores the file once per content, and fills the
-- row. Rows are made by a trigger on whatsapp_message (sql/functions/
-- media.sql), so every path that stores a message queues its media.

CREATE TABLE IF NOT EXISTS wa_media (
    id               bigserial PRIMARY KEY,
    message_id       bigint NOT NULL
                     REFERENCES whatsapp_message (id) ON DELETE CASCADE,
    business_id      bigint NOT NULL,
    phone_number_id  text,
    media_id         text NOT NULL,
    kind             text NOT NULL,              -- image, video, ...
    -- as the webhook announced them
    mime_type        text,
    sha256_announced text,
    filename         text,
    -- waiting: to fetch (next_try_at); fetched: path is set; failed: given
    -- up for good (last_error says why)
    state            text NOT NULL DEFAULT 'waiting'
                     CHECK (state IN ('waiting', 'fetched', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    next_try_at      timestamptz NOT NULL DEFAULT now(),
    last_error       text,
    -- the stored file: path relative to the media directory, named by its
    -- content's sha256, so identical files are one file
    path             text,
    size             bigint,
    sha256           text,                        -- hex
    fetched_at       timestamptz,
    failed_at        timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT wa_media_message_key UNIQUE (message_id)
);

CREATE INDEX IF NOT EXISTS wa_media_due_idx ON wa_media (next_try_at)
    WHERE state = 'waiting';
CREATE INDEX IF NOT EXISTS wa_media_failed_idx ON wa_media (failed_at)
    WHERE state = 'failed';
CREATE INDEX IF NOT EXISTS wa_media_media_id_idx ON wa_media (media_id);
