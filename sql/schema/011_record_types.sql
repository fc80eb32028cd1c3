-- 011: the row types the set functions take, one per kind of run, and the
-- state of a message that the merge rules compute.
--
-- A run goes to PostgreSQL as one array of these instead of one array per
-- field: the fields are described here once. Every field is text, exactly
-- as the ring record carries it (casts happen in the functions, where a
-- bad value fails with a class 22 SQLSTATE), in the order of the fields
-- of the per-record functions, which is the order the writer sends
-- (writer/wa_db.c, writer/wa_set.c). A type is changed by a later
-- migration, never here.

DO $$
BEGIN
    IF to_regtype('wa_in_rec') IS NULL THEN
        -- WA_REC_IN_MESSAGE
        CREATE TYPE wa_in_rec AS (
            business         text,
            phone_number_id  text,
            phone            text,
            wa_user_id       text,
            name             text,
            wamid            text,
            msg_type         text,
            body             text,
            "timestamp"      text,
            payload          text,
            received_ms      text);
    END IF;

    IF to_regtype('wa_status_rec') IS NULL THEN
        -- WA_REC_STATUS
        CREATE TYPE wa_status_rec AS (
            business         text,
            phone_number_id  text,
            wamid            text,
            status           text,
            "timestamp"      text,
            phone            text,
            wa_user_id       text,
            error_code       text,
            error_title      text,
            error_detail     text,
            callback_data    text,
            payload          text,
            received_ms      text);
    END IF;

    IF to_regtype('wa_send_rec') IS NULL THEN
        -- WA_REC_OUT_PENDING ('p') and WA_REC_OUT_RESULT ('r') mixed: the
        -- kind, the fields of a send, then those of an outcome a send
        -- lacks; those a record's kind lacks are NULL
        CREATE TYPE wa_send_rec AS (
            kind             text,
            local_id         text,
            business         text,
            phone_number_id  text,
            phone            text,
            lead_id          text,
            source           text,
            client_ref       text,
            msg_type         text,
            body             text,
            payload          text,
            received_ms      text,
            attempt          text,
            status           text,
            wamid            text,
            error_code       text,
            error_title      text,
            error_detail     text,
            fbtrace_id       text,
            retryable        text,
            http_status      text);
    END IF;

    IF to_regtype('wa_msg_state') IS NULL THEN
        -- what a receipt or a send outcome may change in a message
        -- (wa_msg_merged)
        CREATE TYPE wa_msg_state AS (
            status               text,
            provider_message_id  text,
            sent_at              timestamptz,
            delivered_at         timestamptz,
            read_at              timestamptz,
            error_code           integer,
            error_title          text,
            error_detail         text,
            retryable            boolean,
            fbtrace_id           text);
    END IF;
END
$$;
