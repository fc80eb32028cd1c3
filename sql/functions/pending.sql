-- Parked receipts (wa_pending_receipt) that the transaction creating
-- their message did not see.
--
-- A receipt is parked when its message is not there (wa_ingest_status,
-- wa_ingest_out_result), and applied by the transaction that creates the
-- message or gives it its wamid (wa_apply_pending). With several writers
-- on one database, writer B may park a receipt while writer A inserts its
-- message: neither sees the other's uncommitted row, both commit, and
-- nothing would revisit the receipt. Each writer sweeps, between batches,
-- the receipts parked in the last minutes whose message exists now, and
-- checks now and then for receipts whose message never came, which it
-- reports once and keeps.
--
-- Locks: a sweep takes the rows it applies, the message and the parked
-- receipt, with FOR UPDATE SKIP LOCKED, in message id order, before it
-- changes anything. It never waits for a row another transaction holds,
-- so it cannot be part of a deadlock with ingest or with another writer's
-- sweep; a row it skips is still parked and the next sweep sees it. A
-- receipt is applied once (its row is deleted as it is applied) and the
-- merge rules are monotonic (wa_msg_merged), so a sweep that races the
-- ingest of the same receipt changes nothing twice.


-- Apply the parked receipts of p_ids whose message exists, as
-- wa_apply_pending would have: by wamid first, else by local id; a parked
-- outcome of an attempt before the message's is stale and dropped; a
-- parked 'change' (edits or revokes that came first) applies them. The
-- number applied.
CREATE OR REPLACE FUNCTION wa_pending_settle(p_ids bigint[])
RETURNS int
LANGUAGE plpgsql
-- by the indexes, whatever the statistics say: a plan cached while the
-- tables looked empty must not scan them once they are not
SET enable_seqscan = off
AS $$
DECLARE
    r  record;
    n  int := 0;
BEGIN
    IF coalesce(cardinality(p_ids), 0) = 0 THEN
        RETURN 0;
    END IF;

    FOR r IN
        SELECT p.*, m.id AS msg_id, m.attempts AS msg_attempts
          FROM (SELECT x.id AS pid,
                       coalesce((SELECT m.id FROM whatsapp_message m
                                  WHERE m.provider_message_id
                                        = x.provider_message_id
                                    AND m.business_id = x.business_id),
                                (SELECT m.id FROM whatsapp_message m
                                  WHERE m.local_id = x.local_id
                                    AND m.business_id = x.business_id))
                       AS mid
                  FROM wa_pending_receipt x
                 WHERE x.id = ANY (p_ids)) c
          JOIN wa_pending_receipt p ON p.id = c.pid
          JOIN whatsapp_message m ON m.id = c.mid
         ORDER BY m.id, p.id
           FOR UPDATE OF p, m SKIP LOCKED
    LOOP
        DELETE FROM wa_pending_receipt p WHERE p.id = r.id;

        -- edits and revokes stored before their message
        IF r.kind = 'change' THEN
            PERFORM wa_msg_apply_early_changes(r.business_id,
                                               r.provider_message_id);
            n := n + 1;
            CONTINUE;
        END IF;

        CONTINUE WHEN r.kind = 'result'
                      AND coalesce(r.attempt, 1) < r.msg_attempts;

        PERFORM wa_msg_merge(r.msg_id, r.status, r.provider_ts,
                             r.provider_message_id, r.error_code,
                             r.error_title, r.error_detail, r.fbtrace_id,
                             r.retryable,
                             CASE WHEN r.kind = 'status' THEN r.payload END);
        n := n + 1;
    END LOOP;

    RETURN n;
END
$$;


-- The sweep a writer runs between batches: the receipts parked in the
-- last p_recent (those a concurrent transaction may have missed) whose
-- message exists now. A send outcome applied here may give its message a
-- wamid that other parked receipts wait for: the next sweep applies them.
CREATE OR REPLACE FUNCTION wa_pending_sweep(p_recent interval)
RETURNS int
LANGUAGE plpgsql
SET enable_seqscan = off
AS $$
BEGIN
    RETURN wa_pending_settle(ARRAY(
        SELECT p.id FROM wa_pending_receipt p
         WHERE p.created_at >= now() - p_recent));
END
$$;


-- Receipts parked for longer than p_after that were never reported: the
-- ones whose message exists after all are applied (a sweep may have missed
-- them: no writer ran then), the others are marked reported
-- (warned_at) and returned, at most p_limit of the oldest, for the
-- writer to log once each. They stay parked: a message that comes later still
-- gets them. Each is returned to one writer only.
CREATE OR REPLACE FUNCTION wa_pending_overdue(p_after interval, p_limit int)
RETURNS TABLE (o_business bigint, o_wamid text, o_local_id text,
               o_kind text, o_status text, o_age_s bigint)
LANGUAGE plpgsql
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off
AS $$
BEGIN
    PERFORM wa_pending_settle(ARRAY(
        SELECT p.id FROM wa_pending_receipt p
         WHERE p.warned_at IS NULL AND p.created_at < now() - p_after
         ORDER BY p.created_at
         LIMIT p_limit));

    -- not one whose message is there (its row was locked just now)
    RETURN QUERY
    UPDATE wa_pending_receipt p
       SET warned_at = now()
     WHERE p.id IN (
            SELECT x.id FROM wa_pending_receipt x
             WHERE x.warned_at IS NULL AND x.created_at < now() - p_after
               AND NOT EXISTS (
                       SELECT 1 FROM whatsapp_message m
                        WHERE m.provider_message_id = x.provider_message_id
                          AND m.business_id = x.business_id)
               AND NOT EXISTS (
                       SELECT 1 FROM whatsapp_message m
                        WHERE m.local_id = x.local_id
                          AND m.business_id = x.business_id)
             ORDER BY x.created_at
             LIMIT p_limit
               FOR UPDATE SKIP LOCKED)
    RETURNING p.business_id, p.provider_message_id, p.local_id, p.kind,
              p.status,
              extract(epoch FROM now() - p.created_at)::bigint;
END
$$;
