-- Media uploads (WA_REC_MEDIA_UPLOAD): the upload, recorded before the
-- file leaves (status 'pending', its type and size), then its outcome
-- ('uploaded' with the media id and the SHA-256 of the bytes sent,
-- 'failed' or 'unknown') under the same local id.

-- 'inserted', 'duplicate' (a replay) or 'updated' (an outcome); an
-- outcome whose upload was never recorded makes the row itself
CREATE OR REPLACE FUNCTION wa_ingest_media_upload(p_local_id text,
    p_business text, p_phone_number_id text, p_status text, p_media_type text,
    p_mime_type text, p_filename text, p_size text, p_media_id text,
    p_sha256 text, p_error_code text, p_error_title text,
    p_error_detail text, p_fbtrace_id text, p_retryable text,
    p_http_status text, p_received_ms text)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_business  bigint := p_business::bigint;
    v_ts        timestamptz := coalesce(wa_ts_ms(p_received_ms), now());
    v_status    text := p_status;
    v_id        bigint;
BEGIN
    IF p_local_id IS NULL THEN
        RAISE EXCEPTION 'media upload without a local id'
              USING ERRCODE = 'not_null_violation';
    END IF;

    IF v_status IS NULL
       OR v_status NOT IN ('pending', 'uploaded', 'failed', 'unknown')
    THEN
        v_status := 'unknown';
    END IF;

    IF v_status = 'pending' THEN
        INSERT INTO wa_media_upload AS u
               (business_id, phone_number_id, local_id, media_type,
                mime_type, filename, size, status, created_at, updated_at)
        VALUES (v_business, p_phone_number_id, p_local_id, p_media_type,
                p_mime_type, p_filename, p_size::bigint, 'pending', v_ts,
                now())
        ON CONFLICT DO NOTHING
        RETURNING u.id INTO v_id;

        RETURN CASE WHEN v_id IS NULL THEN 'duplicate' ELSE 'inserted' END;
    END IF;

    UPDATE wa_media_upload u
       SET status = v_status, media_id = p_media_id,
           sha256 = coalesce(p_sha256, u.sha256),
           size = coalesce(p_size::bigint, u.size),
           http_status = p_http_status::int, error_code = p_error_code::int,
           error_title = p_error_title, error_detail = p_error_detail,
           fbtrace_id = p_fbtrace_id, retryable = p_retryable::boolean,
           uploaded_at = CASE WHEN v_status = 'uploaded' THEN v_ts END,
           updated_at = now()
     WHERE u.local_id = p_local_id AND u.business_id = v_business
       AND u.status = 'pending'
    RETURNING u.id INTO v_id;

    IF v_id IS NULL THEN
        INSERT INTO wa_media_upload AS u
               (business_id, phone_number_id, local_id, media_type,
                mime_type, filename, size, sha256, media_id, status,
                http_status, error_code, error_title, error_detail,
                fbtrace_id, retryable, created_at, uploaded_at, updated_at)
        VALUES (v_business, p_phone_number_id, p_local_id, p_media_type,
                p_mime_type, p_filename, p_size::bigint, p_sha256,
                p_media_id, v_status, p_http_status::int, p_error_code::int,
                p_error_title, p_error_detail, p_fbtrace_id,
                p_retryable::boolean, v_ts,
                CASE WHEN v_status = 'uploaded' THEN v_ts END, now())
        ON CONFLICT DO NOTHING;
    END IF;

    RETURN 'updated';
END
$$;
