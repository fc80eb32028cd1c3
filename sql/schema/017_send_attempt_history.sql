-- 017: the refused attempts of a send.
--
-- A send refused for a transient reason (a rate limit, a 5xx, a provider
-- out of reach) is attempted again under its local id, automatically by
-- nginx or by the CRM with the same client_ref; its whatsapp_message row
-- is the latest attempt (attempts, status, error). When an attempt starts
-- over a refused one, the refused attempt's outcome moves here, so every
-- attempt and its error stays on record.

CREATE TABLE IF NOT EXISTS whatsapp_send_attempt (
    message_id    bigint NOT NULL
                  REFERENCES whatsapp_message (id) ON DELETE CASCADE,
    attempt       int NOT NULL,
    status        text NOT NULL,
    error_code    integer,
    error_title   text,
    error_detail  text,
    fbtrace_id    text,
    retryable     boolean,
    ended_at      timestamptz NOT NULL,
    PRIMARY KEY (message_id, attempt)
);
