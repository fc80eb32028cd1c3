-- client_ref claims across hosts (schema 020), called by nginx workers
-- (ngx_http_wa_claim.c), one statement each, autocommit.

-- The claim of a send about to be made. result:
--   ours         send it: local_id and attempt are the send's (a failed
--                attempt's key is attempted again under its first id)
--   answered     another send has the key and its answer: replay it
--   busy         another send is in flight
--   interrupted  another send outlived p_life_sec without an answer: its
--                worker died mid-call, it may have reached WhatsApp, so
--                it is "unknown" from now on, for every caller
CREATE OR REPLACE FUNCTION wa_send_claim(p_business bigint,
    p_client_ref text, p_local_id text, p_host text, p_life_sec integer)
RETURNS TABLE (result text, local_id text, attempt integer,
               http_status integer, answer text)
LANGUAGE plpgsql AS $$
DECLARE
    v  wa_send_claim%ROWTYPE;
BEGIN
    FOR i IN 1 .. 3 LOOP
        INSERT INTO wa_send_claim AS c (business_id, client_ref, local_id,
                                        host)
        VALUES (p_business, p_client_ref, p_local_id, p_host)
        ON CONFLICT (business_id, client_ref) DO UPDATE
           SET state = 'claimed', attempts = c.attempts + 1,
               host = EXCLUDED.host, claimed_at = now()
         WHERE c.state = 'answered' AND c.verdict = 'f'
        RETURNING c.* INTO v;

        IF FOUND THEN
            RETURN QUERY SELECT 'ours'::text, v.local_id, v.attempts,
                                NULL::integer, NULL::text;
            RETURN;
        END IF;

        SELECT * INTO v FROM wa_send_claim c
         WHERE c.business_id = p_business AND c.client_ref = p_client_ref
           FOR UPDATE;

        -- released between the two statements: claim it again
        CONTINUE WHEN NOT FOUND;

        IF v.state = 'answered' THEN
            RETURN QUERY SELECT 'answered'::text, v.local_id, v.attempts,
                                v.http_status, v.answer;
            RETURN;
        END IF;

        IF v.claimed_at + make_interval(secs => p_life_sec) > now() THEN
            RETURN QUERY SELECT 'busy'::text, v.local_id, v.attempts,
                                NULL::integer, NULL::text;
            RETURN;
        END IF;

        UPDATE wa_send_claim c
           SET state = 'answered', verdict = 'u', http_status = 504,
               answered_at = now(),
               answer = json_build_object(
                   'id', v.local_id, 'status', 'unknown', 'lead_id', NULL,
                   'retryable', false,
                   'error', json_build_object('code', NULL, 'title',
                       'interrupted: the nginx worker that held this '
                       'client_ref exited while the provider call was in '
                       'flight; it may have reached WhatsApp, so it is not '
                       'sent again'))::text
         WHERE c.business_id = p_business AND c.client_ref = p_client_ref
        RETURNING c.* INTO v;

        RETURN QUERY SELECT 'interrupted'::text, v.local_id, v.attempts,
                            v.http_status, v.answer;
        RETURN;
    END LOOP;

    RAISE EXCEPTION 'client_ref % of business %: claimed and released '
                    'three times in a row', p_client_ref, p_business;
END
$$;


-- A claimed send ended. p_http_status 0: nothing was sent; a first
-- attempt gives the key back, a later one leaves the last answer as it
-- was. Else its answer and verdict, for every later call, and its last
-- attempt (nginx retries a refused send by itself, under the same claim:
-- the next claim's attempt comes after them). Only the claim still held
-- by p_local_id moves.
CREATE OR REPLACE FUNCTION wa_send_claim_end(p_business bigint,
    p_client_ref text, p_local_id text, p_http_status integer,
    p_answer text, p_verdict text, p_attempt integer)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF p_http_status = 0 THEN
        DELETE FROM wa_send_claim c
         WHERE c.business_id = p_business AND c.client_ref = p_client_ref
           AND c.local_id = p_local_id AND c.state = 'claimed'
           AND c.attempts = 1;

        UPDATE wa_send_claim c
           SET state = 'answered', verdict = 'f', attempts = c.attempts - 1
         WHERE c.business_id = p_business AND c.client_ref = p_client_ref
           AND c.local_id = p_local_id AND c.state = 'claimed';
        RETURN;
    END IF;

    UPDATE wa_send_claim c
       SET state = 'answered', verdict = p_verdict,
           http_status = p_http_status, answer = p_answer,
           attempts = greatest(c.attempts, coalesce(p_attempt, 0)),
           answered_at = now()
     WHERE c.business_id = p_business AND c.client_ref = p_client_ref
       AND c.local_id = p_local_id AND c.state = 'claimed';
END
$$;


-- as nginx called it before its own retries (a module not yet reloaded
-- after the migration)
CREATE OR REPLACE FUNCTION wa_send_claim_end(p_business bigint,
    p_client_ref text, p_local_id text, p_http_status integer,
    p_answer text, p_verdict text)
RETURNS void
LANGUAGE sql AS $$
    SELECT wa_send_claim_end(p_business, p_client_ref, p_local_id,
                             p_http_status, p_answer, p_verdict, NULL);
$$;
