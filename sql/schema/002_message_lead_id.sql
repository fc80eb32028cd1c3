-- 002: whatsapp_message.lead_id, its foreign key and its index.
--
-- Tables created by the seed code had no lead_id at all, which is how
-- messages ended up detached from their leads. This adds what is missing
-- and leaves what exists: a lead_id column of another integer type is kept,
-- and the foreign key is added only when none on lead_id exists yet.
-- Rows already stored keep a NULL lead_id: `wa-writer backfill-leads` links
-- them.

ALTER TABLE whatsapp_message ADD COLUMN IF NOT EXISTS lead_id bigint;

DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1
          FROM pg_constraint c
          JOIN pg_attribute a ON a.attrelid = c.conrelid
                             AND a.attnum = ANY (c.conkey)
         WHERE c.conrelid = 'whatsapp_message'::regclass
           AND c.contype = 'f'
           AND c.confrelid = 'leads'::regclass
           AND cardinality(c.conkey) = 1
           AND a.attname = 'lead_id')
    THEN
        -- NOT VALID skips the scan of old rows (they may point nowhere);
        -- new and updated rows are checked from now on
        ALTER TABLE whatsapp_message
            ADD CONSTRAINT whatsapp_message_lead_id_fkey
            FOREIGN KEY (lead_id) REFERENCES leads (id) ON DELETE SET NULL
            NOT VALID;
    END IF;
END
$$;

-- an existing key that cascades deletes or blocks them is left as it is
-- (it is the owner's choice) but reported
DO $$
BEGIN
    IF EXISTS (
        SELECT 1
          FROM pg_constraint c
          JOIN pg_attribute a ON a.attrelid = c.conrelid
                             AND a.attnum = ANY (c.conkey)
         WHERE c.conrelid = 'whatsapp_message'::regclass
           AND c.contype = 'f' AND c.confrelid = 'leads'::regclass
           AND a.attname = 'lead_id' AND c.confdeltype <> 'n')
    THEN
        RAISE WARNING 'the foreign key of whatsapp_message.lead_id is not '
                      'ON DELETE SET NULL; left unchanged';
    END IF;
END
$$;

-- validate when the old rows allow it; otherwise leave it NOT VALID and say
-- so (still enforced for every new row)
DO $$
BEGIN
    ALTER TABLE whatsapp_message
        VALIDATE CONSTRAINT whatsapp_message_lead_id_fkey;
EXCEPTION
    WHEN foreign_key_violation THEN
        RAISE WARNING 'whatsapp_message has rows whose lead_id points to no '
                      'lead; the foreign key stays NOT VALID';
    WHEN undefined_object THEN
        NULL;    -- an equivalent key of another name exists
END
$$;

CREATE INDEX IF NOT EXISTS whatsapp_message_lead_id_idx
    ON whatsapp_message (lead_id);
