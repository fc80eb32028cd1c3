-- 009: a run's rows looked up by index, never by scanning a table.
--
-- wa_leads_create (005) checked that no lead had a phone, with or without
-- its '+', by NOT EXISTS (... phone IN (ph, '+' || ph)). PostgreSQL made
-- that an anti join hashed on business_id alone, so every new phone of a
-- batch was compared with every lead of its business: 1,000,000
-- comparisons for 500 new phones among 2,000 leads, 120 ms a batch, and
-- growing with the table. Each phone is now one probe of the
-- (phone, business_id) index, from a LATERAL subquery that cannot be
-- turned into a join.
--
-- Every function that looks a run's rows up by key now sets
-- enable_seqscan off for itself, as wa_msg_merge_many (006) already did:
-- plpgsql caches a plan for the session, and one made while a table
-- looked small scans the whole table at every batch once it is not
-- (until an ANALYZE invalidates it). A run is at most a batch: a thousand
-- index probes always beat reading a table that only grows. Measured
-- before this, a writer draining 40,000 records into empty tables (20,000
-- inbound messages, then 20,000 sends, outcomes and receipts) made 20
-- sequential scans of whatsapp_message (352,536 rows read) and 5 of leads
-- (50,005 rows); after it, none.

-- For the rows without a lead in p_lead: the leads of their phones when no
-- lead has the phone, with or without a '+', created in one INSERT, the
-- first row of each phone giving its wa_user_id and name. A wa_user_id
-- another lead holds, or a lead another writer has just made, stops the
-- INSERT (ON CONFLICT) and leaves the row to the caller's careful path.
-- p_lead, with the new lead of each row it satisfies as it is. A row with
-- no phone is left alone.
CREATE OR REPLACE FUNCTION wa_leads_create(p_business bigint[],
    p_phone text[], p_wa_user_id text[], p_name text[], p_lead bigint[])
RETURNS bigint[]
LANGUAGE plpgsql
-- each phone looked up by its index, whatever the statistics say: a plan
-- cached while the table looked small must not scan it once it is not
SET enable_seqscan = off
AS $$
DECLARE
    v_lead  bigint[];
BEGIN
    WITH ins AS (
        INSERT INTO leads AS l (business_id, phone, wa_user_id, name)
        SELECT DISTINCT ON (r.b, r.ph) r.b, r.ph, r.u, r.nm
          FROM unnest(p_business, p_phone, p_wa_user_id, p_name, p_lead)
               WITH ORDINALITY AS r(b, ph, u, nm, lead, o)
          LEFT JOIN LATERAL (
               SELECT true AS found FROM leads x
                WHERE x.phone IN (r.ph, '+' || r.ph) AND x.business_id = r.b
                LIMIT 1) e ON true
         WHERE r.lead IS NULL AND r.ph IS NOT NULL AND e.found IS NULL
         ORDER BY r.b, r.ph, r.o
        ON CONFLICT DO NOTHING
        RETURNING l.id, l.business_id, l.phone,
                  l.wa_user_id IS NOT NULL AS has_u,
                  l.name IS NOT NULL AS has_nm)
    SELECT array_agg(coalesce(r.lead, i.id) ORDER BY r.o) INTO v_lead
      FROM unnest(p_business, p_phone, p_wa_user_id, p_name, p_lead)
           WITH ORDINALITY AS r(b, ph, u, nm, lead, o)
      LEFT JOIN ins i
        ON r.lead IS NULL AND i.business_id = r.b AND i.phone = r.ph
           AND (r.u IS NULL OR i.has_u) AND (r.nm IS NULL OR i.has_nm);

    RETURN v_lead;
END
$$;


ALTER FUNCTION wa_leads_known(bigint[], text[], text[], text[])
    SET enable_seqscan = off;
ALTER FUNCTION wa_ingest_in_messages(text[], text[], text[], text[], text[],
    text[], text[], text[], text[], text[], text[])
    SET enable_seqscan = off;
ALTER FUNCTION wa_ingest_statuses(text[], text[], text[], text[], text[],
    text[], text[], text[], text[], text[], text[], text[], text[])
    SET enable_seqscan = off;
ALTER FUNCTION wa_ingest_sends(text[], text[], text[], text[], text[],
    text[], text[], text[], text[], text[], text[], text[], text[], text[],
    text[], text[], text[], text[], text[], text[])
    SET enable_seqscan = off;
