-- Inbound media queue (schema 019): a trigger queues every stored message
-- that carries a media object, whoever stored it (the ring's functions,
-- set statements, echoes, history); `wa-writer media` drains the queue.

CREATE OR REPLACE FUNCTION wa_media_enqueue()
RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_obj  jsonb := NEW.payload -> NEW.type;
BEGIN
    -- what we sent by media id is ours already; what the customer, the
    -- Business app or a history import holds exists only at Meta
    IF v_obj IS NULL OR jsonb_typeof(v_obj) <> 'object'
       OR v_obj ->> 'id' IS NULL
       OR (NEW.direction = 'out'
           AND NEW.source IS DISTINCT FROM 'business_app'
           AND NEW.source IS DISTINCT FROM 'history')
    THEN
        RETURN NULL;
    END IF;

    INSERT INTO wa_media (message_id, business_id, phone_number_id,
                          media_id, kind, mime_type, sha256_announced,
                          filename)
    VALUES (NEW.id, NEW.business_id, NEW.phone_number_id, v_obj ->> 'id',
            NEW.type, v_obj ->> 'mime_type', v_obj ->> 'sha256',
            v_obj ->> 'filename')
    ON CONFLICT (message_id) DO NOTHING;

    -- wakes a fetcher that LISTENs, at COMMIT
    PERFORM pg_notify('wa_media', '');

    RETURN NULL;
END
$$;

-- WHEN keeps the common case (text) free of any trigger call; a set
-- statement of inbound messages (wa_ingest_in_messages) queues its run's
-- media itself, in one statement, and says so for the time of its insert
DROP TRIGGER IF EXISTS wa_media_enqueue ON whatsapp_message;
CREATE TRIGGER wa_media_enqueue AFTER INSERT ON whatsapp_message
    FOR EACH ROW
    WHEN (NEW.type IN ('image', 'video', 'audio', 'document', 'sticker')
          AND current_setting('wa.media_enqueue', true)
              IS DISTINCT FROM 'run')
    EXECUTE FUNCTION wa_media_enqueue();

-- a history import's media_placeholder row that later learns its contents
-- (wa_history_message) becomes a media message by an UPDATE
DROP TRIGGER IF EXISTS wa_media_enqueue_typed ON whatsapp_message;
CREATE TRIGGER wa_media_enqueue_typed AFTER UPDATE OF type ON whatsapp_message
    FOR EACH ROW
    WHEN (OLD.type IS DISTINCT FROM NEW.type
          AND NEW.type IN ('image', 'video', 'audio', 'document', 'sticker'))
    EXECUTE FUNCTION wa_media_enqueue();


-- The next media due, claimed for p_lease_sec: a fetcher that dies with
-- it leaves it due again after the lease; several fetchers (hosts) never
-- take the same one.
CREATE OR REPLACE FUNCTION wa_media_claim(p_lease_sec integer)
RETURNS TABLE (id bigint, media_id text, phone_number_id text, kind text,
               attempts integer, age_sec double precision)
LANGUAGE sql AS $$
    UPDATE wa_media m
       SET attempts = m.attempts + 1,
           next_try_at = now() + make_interval(secs => p_lease_sec)
     WHERE m.id = (SELECT d.id FROM wa_media d
                    WHERE d.state = 'waiting' AND d.next_try_at <= now()
                    ORDER BY d.next_try_at
                    LIMIT 1
                    FOR UPDATE SKIP LOCKED)
    RETURNING m.id, m.media_id, m.phone_number_id, m.kind, m.attempts,
              extract(epoch FROM now() - m.created_at)::double precision
$$;

CREATE OR REPLACE FUNCTION wa_media_fetched(p_id bigint, p_path text,
    p_size bigint, p_mime text, p_sha256 text)
RETURNS void
LANGUAGE sql AS $$
    UPDATE wa_media
       SET state = 'fetched', path = p_path, size = p_size,
           mime_type = coalesce(p_mime, mime_type), sha256 = p_sha256,
           fetched_at = now(), last_error = NULL
     WHERE id = p_id
$$;

-- p_retry_sec NULL: given up for good
DROP FUNCTION IF EXISTS wa_media_failed(bigint, text, integer);
CREATE OR REPLACE FUNCTION wa_media_failed(p_id bigint, p_error text,
    p_retry_sec double precision)
RETURNS void
LANGUAGE sql AS $$
    UPDATE wa_media
       SET last_error = p_error,
           state = CASE WHEN p_retry_sec IS NULL THEN 'failed'
                        ELSE 'waiting' END,
           failed_at = CASE WHEN p_retry_sec IS NULL THEN now() END,
           next_try_at = CASE WHEN p_retry_sec IS NULL THEN next_try_at
                              ELSE now() + make_interval(secs => p_retry_sec)
                         END
     WHERE id = p_id
$$;
