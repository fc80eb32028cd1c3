-- 015: parked receipts are swept and, when their message never comes,
-- reported once.
--
-- A receipt parked by one writer while another writer inserts its message
-- in a transaction neither sees is applied by a later sweep
-- (wa_pending_sweep, sql/functions/pending.sql), which looks at the
-- receipts parked recently: created_at, indexed. One whose message has not
-- come after wa-writer's --pending-warn-after is reported once
-- (wa_pending_overdue) and keeps the time it was in warned_at; it stays
-- parked, and is still applied if its message comes.

ALTER TABLE wa_pending_receipt ADD COLUMN IF NOT EXISTS warned_at timestamptz;

CREATE INDEX IF NOT EXISTS wa_pending_receipt_created_idx
    ON wa_pending_receipt (created_at);

-- the receipts not reported yet, oldest first: what the overdue check
-- looks at
CREATE INDEX IF NOT EXISTS wa_pending_receipt_unwarned_idx
    ON wa_pending_receipt (created_at)
    WHERE warned_at IS NULL;
