-- 020: client_ref claims across hosts (issue 19). With nginx's
-- wa_send_idempotency_db, a send with a client_ref claims it here before
-- anything is sent: one claim per (business, client_ref), whichever nginx
-- host the key reached. The module writes this table directly, over its
-- own connection; wa-writer never does. Rows mirror the module's
-- idempotency zone: the local id and attempt of the send, and its answer,
-- replayed to every later call.

CREATE TABLE IF NOT EXISTS wa_send_claim (
    business_id  bigint NOT NULL,
    client_ref   text NOT NULL,
    local_id     text NOT NULL,
    attempts     integer NOT NULL DEFAULT 1,
    -- claimed: a send is in flight; answered: it has its answer (verdict
    -- s sent, u unknown, f failed: a failed one may be attempted again)
    state        text NOT NULL DEFAULT 'claimed'
                 CHECK (state IN ('claimed', 'answered')),
    verdict      text CHECK (verdict IN ('s', 'u', 'f')),
    http_status  integer,
    answer       text,            -- the JSON the first caller got, as sent
    host         text,            -- who claimed it last (hostname/nonce)
    claimed_at   timestamptz NOT NULL DEFAULT now(),
    answered_at  timestamptz,
    PRIMARY KEY (business_id, client_ref)
);
