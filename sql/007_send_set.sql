-- 007: sends and their outcomes a run at a time: the careful path.
--
-- wa_ingest_sends, the set function this careful path serves, was created
-- here until 008 replaced it; it now lives in 008 alone, so its one body
-- is the one a fresh database and an upgraded one both end with.

-- the careful path: each record of kind p_which (NULL: either) that has
-- no outcome in p_out yet, through its 003 function, in order; p_out with
-- their outcomes filled in
CREATE OR REPLACE FUNCTION wa_ingest_sends_one_by_one(p_which text,
    p_out text[], p_kind text[], p_local_id text[], p_business text[],
    p_phone_number_id text[], p_phone text[], p_lead_id text[],
    p_source text[], p_client_ref text[], p_type text[], p_body text[],
    p_payload text[], p_received_ms text[], p_status text[],
    p_wamid text[], p_error_code text[], p_error_title text[],
    p_error_detail text[], p_fbtrace_id text[], p_retryable text[],
    p_http_status text[])
RETURNS text[]
LANGUAGE plpgsql AS $$
DECLARE
    v_out  text[] := p_out;
BEGIN
    FOR i IN 1 .. cardinality(p_kind) LOOP
        CONTINUE WHEN v_out[i] IS NOT NULL
                      OR p_kind[i] IS DISTINCT FROM coalesce(p_which,
                                                             p_kind[i]);

        IF p_kind[i] = 'p' THEN
            v_out[i] := wa_ingest_out_pending(p_local_id[i], p_business[i],
                            p_phone_number_id[i], p_phone[i], p_lead_id[i],
                            p_source[i], p_client_ref[i], p_type[i],
                            p_body[i], p_payload[i], p_received_ms[i]);
        ELSE
            v_out[i] := wa_ingest_out_result(p_local_id[i], p_business[i],
                            p_status[i], p_wamid[i], p_error_code[i],
                            p_error_title[i], p_error_detail[i],
                            p_fbtrace_id[i], p_retryable[i],
                            p_http_status[i], p_received_ms[i]);
        END IF;
    END LOOP;

    RETURN v_out;
END
$$;
