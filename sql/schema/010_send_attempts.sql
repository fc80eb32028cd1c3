-- 010: a send attempted again under its local id.
--
-- Numbers 003 to 009 were migrations of functions alone; their functions
-- now live in sql/functions/, re-applied whenever a file changes, and a
-- database they were applied to keeps their rows in wa_schema_migrations
-- as history. Schema numbers go on from 010 so that a database still at
-- 009 reads as older than this one.
--
-- When the provider refuses a send, the CRM may try it again under the
-- same local id: the message row is the latest attempt (attempts), and an
-- outcome of an earlier attempt no longer moves it. A parked outcome keeps
-- its attempt for when its row appears.

ALTER TABLE whatsapp_message ADD COLUMN IF NOT EXISTS attempts int
    NOT NULL DEFAULT 1;
ALTER TABLE wa_pending_receipt ADD COLUMN IF NOT EXISTS attempt int;
