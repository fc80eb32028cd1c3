-- Helpers every concern uses. The files of sql/functions/ hold every
-- function wa-writer calls, by concern; `wa-writer migrate` applies them
-- after the schema, in the order of their names, and again whenever a
-- file changes: each is CREATE OR REPLACE throughout, and drops what an
-- earlier layout defined and nothing calls any more.
--
-- The ingest functions take every field as text, exactly as the record
-- carries it: casts happen here, so a record PostgreSQL can never accept
-- fails with a class 22 or 23 SQLSTATE, which the writer turns into a dead
-- letter. Every one is idempotent: a record replayed after a crash changes
-- nothing. Each per-record function sits next to its set twin, which takes
-- a run of records as an array of the record's row type (011) and leaves
-- what the per-record function would have left, record by record, in
-- order.

-- the arrays of runs were checked for equal lengths: one array now
DROP FUNCTION IF EXISTS wa_run_length(text, VARIADIC int[]);


CREATE OR REPLACE FUNCTION wa_norm_phone(p text)
RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p IS NULL OR p ~ '^[0-9]+$' THEN p
                ELSE nullif(regexp_replace(p, '[^0-9]', '', 'g'), '') END
$$;


-- delivery order of statuses; NULL for statuses that do not move a message
-- (deleted, warning, ...). failed is handled apart: it is terminal.
CREATE OR REPLACE FUNCTION wa_status_rank(p text)
RETURNS int
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE p WHEN 'pending' THEN 0 WHEN 'unknown' THEN 0
                  WHEN 'sent' THEN 1 WHEN 'delivered' THEN 2
                  WHEN 'read' THEN 3 WHEN 'played' THEN 4
                  WHEN 'failed' THEN 5 END
$$;


CREATE OR REPLACE FUNCTION wa_ts(p_unix text)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE AS $$
    SELECT to_timestamp(p_unix::bigint)
$$;


CREATE OR REPLACE FUNCTION wa_ts_ms(p_ms text)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE AS $$
    SELECT to_timestamp(p_ms::bigint::float8 / 1000)
$$;
