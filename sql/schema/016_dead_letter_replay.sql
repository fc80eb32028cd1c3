-- 016: dead letters can be replayed once their cause is fixed
-- (`wa-writer dead-letters replay`), and the writer counts what waits.
--
-- A replayed dead letter is kept, marked with when and what its ingest
-- function answered; one refused again keeps its first reason and gets
-- the new one, with the count of replays tried. The partial index is what
-- the writer's census (sql/functions/dead_letters.sql) and `list` read: the dead
-- letters still waiting. The index on wa_pending_receipt.created_at gives
-- the census the oldest receipt still waiting for its message without a
-- scan.

ALTER TABLE wa_dead_letter ADD COLUMN IF NOT EXISTS first_reason text;
ALTER TABLE wa_dead_letter ADD COLUMN IF NOT EXISTS replay_attempts integer
    NOT NULL DEFAULT 0;
ALTER TABLE wa_dead_letter ADD COLUMN IF NOT EXISTS last_attempt_at
    timestamptz;
ALTER TABLE wa_dead_letter ADD COLUMN IF NOT EXISTS replayed_at timestamptz;
ALTER TABLE wa_dead_letter ADD COLUMN IF NOT EXISTS replay_outcome text;

CREATE INDEX IF NOT EXISTS wa_dead_letter_waiting_idx
    ON wa_dead_letter (id) WHERE replayed_at IS NULL;

CREATE INDEX IF NOT EXISTS wa_pending_receipt_created_idx
    ON wa_pending_receipt (created_at);
