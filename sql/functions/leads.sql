-- Leads: found by phone or wa_user_id, created when missing, filled in.
--
-- Safe with several writers on one database: leads are created with
-- INSERT ... ON CONFLICT DO NOTHING and looked up again in a new statement
-- (hence a new snapshot), never through a join that could miss a lead a
-- concurrent writer just committed.
--
-- The functions that look a run's rows up by key set enable_seqscan off
-- for themselves: plpgsql caches a plan for the session, and one made
-- while a table looked small would scan the whole table at every batch
-- once it is not. A run is at most a batch: a thousand index probes always
-- beat reading a table that only grows.



-- What a sender's contacts[] entry (c) tells of the user: the username
-- (contacts[].profile.username), the parent user id, the country code
-- (contacts[].country_code, or the prefix of a business-scoped user id
-- such as "US.13491208655302741918"). NULL when absent.
CREATE OR REPLACE FUNCTION wa_contact_username(c jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(c->'profile'->>'username', c->>'username')
$$;

CREATE OR REPLACE FUNCTION wa_contact_parent(c jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT c->>'parent_user_id'
$$;

CREATE OR REPLACE FUNCTION wa_contact_country(c jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(c->>'country_code',
                    substring(c->>'user_id' from '^([A-Z]{2})\.'))
$$;


-- The lead of (business, phone), or of (business, wa_user_id) when there
-- is no phone; created when missing; a phone or user id the lead had
-- before a number change finds it too (wa_lead_former_id). What the
-- caller knows and the lead lacks (its wa_user_id, its name) is filled
-- in, never at the price of a unique violation; the WhatsApp profile name
-- (p_name) and what the sender's contacts[] entry (p_contact) says of the
-- user are kept up to date in their own columns, never in name, which is
-- the CRM's once set.
DROP FUNCTION IF EXISTS wa_lead_resolve(bigint, text, text, text);

CREATE OR REPLACE FUNCTION wa_lead_resolve(p_business bigint, p_phone text,
    p_wa_user_id text, p_name text, p_contact jsonb DEFAULT NULL,
    OUT lead_id bigint, OUT created boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_id     bigint;
    v_uid    text;
    v_phone  text;
    v_name   text;
    v_new    text;
    v_un     text;
    v_par    text;
    v_cc     text;
    v_pn     text;
    v_un0    text;
    v_par0   text;
    v_cc0    text;
BEGIN
    created := false;

    IF p_phone IS NULL AND p_wa_user_id IS NULL THEN
        RAISE EXCEPTION 'neither a phone nor a WhatsApp user id to find '
                        'the lead by'
              USING ERRCODE = 'not_null_violation';
    END IF;

    v_new := p_wa_user_id;

    IF p_contact IS NOT NULL THEN
        v_un := wa_contact_username(p_contact);
        v_par := wa_contact_parent(p_contact);
        v_cc := wa_contact_country(p_contact);
    END IF;

    FOR i IN 1 .. 8 LOOP
        IF p_phone IS NOT NULL THEN
            SELECT l.id, l.wa_user_id, l.name, l.wa_profile_name, l.wa_username,
                   l.wa_parent_user_id, l.wa_country_code
              INTO v_id, v_uid, v_name, v_pn, v_un0, v_par0, v_cc0
              FROM leads l
             WHERE l.business_id = p_business AND l.phone = p_phone;
        ELSE
            SELECT l.id, l.wa_user_id, l.name, l.wa_profile_name, l.wa_username,
                   l.wa_parent_user_id, l.wa_country_code
              INTO v_id, v_uid, v_name, v_pn, v_un0, v_par0, v_cc0
              FROM leads l
             WHERE l.business_id = p_business AND l.wa_user_id = p_wa_user_id;
        END IF;

        -- leads written before ngx_wa may keep the '+'
        IF NOT FOUND AND p_phone IS NOT NULL THEN
            SELECT l.id, l.wa_user_id, l.name, l.wa_profile_name, l.wa_username,
                   l.wa_parent_user_id, l.wa_country_code
              INTO v_id, v_uid, v_name, v_pn, v_un0, v_par0, v_cc0
              FROM leads l
             WHERE l.business_id = p_business AND l.phone = '+' || p_phone;
        END IF;

        -- a phone or user id the lead had before it changed: the former
        -- id first, then its lead by key (a join could be planned as a
        -- scan of leads, which only grows)
        IF NOT FOUND THEN
            SELECT f.lead_id INTO v_id
              FROM wa_lead_former_id f
             WHERE f.business_id = p_business
               AND f.kind = CASE WHEN p_phone IS NOT NULL THEN 'phone'
                                 ELSE 'wa_user_id' END
               AND f.value = coalesce(p_phone, p_wa_user_id)
             ORDER BY f.id DESC
             LIMIT 1;

            IF FOUND THEN
                SELECT l.id, l.wa_user_id, l.name, l.wa_profile_name,
                       l.wa_username, l.wa_parent_user_id, l.wa_country_code
                  INTO v_id, v_uid, v_name, v_pn, v_un0, v_par0, v_cc0
                  FROM leads l
                 WHERE l.id = v_id;
            END IF;
        END IF;

        IF FOUND THEN
            IF p_wa_user_id IS NOT NULL AND v_uid IS NULL
               AND NOT EXISTS (SELECT 1 FROM leads l
                                WHERE l.business_id = p_business
                                  AND l.wa_user_id = p_wa_user_id)
            THEN
                BEGIN
                    UPDATE leads SET wa_user_id = p_wa_user_id
                     WHERE id = v_id AND wa_user_id IS NULL;
                EXCEPTION
                    WHEN unique_violation THEN
                        NULL;    -- a concurrent writer gave it to another
                END;
            END IF;

            IF p_name IS NOT NULL AND v_name IS NULL THEN
                UPDATE leads SET name = p_name
                 WHERE id = v_id AND name IS NULL;
            END IF;

            -- what WhatsApp says of the user now, written only when it
            -- changed (the usual message writes nothing here)
            IF (v_pn, v_un0, v_par0, v_cc0) IS DISTINCT FROM
               (coalesce(p_name, v_pn), coalesce(v_un, v_un0),
                coalesce(v_par, v_par0), coalesce(v_cc, v_cc0))
            THEN
                UPDATE leads l
                   SET wa_profile_name = coalesce(p_name, l.wa_profile_name),
                       wa_username = coalesce(v_un, l.wa_username),
                       wa_parent_user_id = coalesce(v_par,
                                                    l.wa_parent_user_id),
                       wa_country_code = coalesce(v_cc, l.wa_country_code)
                 WHERE l.id = v_id;
            END IF;

            lead_id := v_id;
            RETURN;
        END IF;

        -- the phone is new: a lead known so far only by its wa_user_id
        -- gets it; a wa_user_id held by a lead of another phone stays there
        -- (the phone decides) and the new lead is created without it
        IF p_phone IS NOT NULL AND p_wa_user_id IS NOT NULL THEN
            SELECT l.id, l.phone INTO v_id, v_phone
              FROM leads l
             WHERE l.business_id = p_business AND l.wa_user_id = p_wa_user_id;

            IF FOUND THEN
                IF v_phone IS NULL THEN
                    BEGIN
                        UPDATE leads SET phone = p_phone
                         WHERE id = v_id AND phone IS NULL;
                    EXCEPTION
                        WHEN unique_violation THEN
                            NULL;    -- the phone's lead appeared meanwhile
                    END;

                    CONTINUE;
                END IF;

                v_new := NULL;
            END IF;
        END IF;

        INSERT INTO leads AS l (business_id, phone, wa_user_id, name,
                                wa_profile_name, wa_username,
                                wa_parent_user_id, wa_country_code)
        VALUES (p_business, p_phone, v_new, p_name, p_name, v_un, v_par,
                v_cc)
        ON CONFLICT DO NOTHING
        RETURNING l.id INTO v_id;

        IF v_id IS NOT NULL THEN
            lead_id := v_id;
            created := true;
            RETURN;
        END IF;

        -- lost a race with a concurrent writer: look again
    END LOOP;

    RAISE EXCEPTION 'cannot find or create the lead of business % phone % '
                    'user %', p_business, p_phone, p_wa_user_id
          USING ERRCODE = 'unique_violation',
                HINT = 'is leads_id_seq behind max(leads.id)?';
END
$$;


-- the existing lead of each message that wa_lead_resolve would return
-- without changing it, or NULL. plpgsql rather than sql: its plan is
-- cached for the session, where a sql function is planned at every call,
-- which costs more than a short run saves.
DROP FUNCTION IF EXISTS wa_leads_known(bigint[], text[], text[], text[]);

CREATE OR REPLACE FUNCTION wa_leads_known(p_business bigint[],
    p_phone text[], p_wa_user_id text[], p_name text[],
    p_contact jsonb[] DEFAULT NULL)
RETURNS bigint[]
LANGUAGE plpgsql STABLE
SET enable_seqscan = off
AS $$
BEGIN
    RETURN (
    SELECT array_agg(k.id ORDER BY r.o)
      FROM unnest(p_business, p_phone, p_wa_user_id, p_name,
                  coalesce(p_contact, array_fill(NULL::jsonb,
                                         ARRAY[cardinality(p_business)])))
           WITH ORDINALITY AS r(b, ph, u, nm, c, o)
      LEFT JOIN LATERAL (
           SELECT l.id FROM leads l
            WHERE r.ph IS NOT NULL AND l.phone = r.ph AND l.business_id = r.b
              AND (r.u IS NULL OR l.wa_user_id IS NOT NULL)
              AND (r.nm IS NULL OR (l.name IS NOT NULL
                                    AND l.wa_profile_name = r.nm))
              AND (r.c IS NULL OR wa_lead_has_contact(l.wa_username,
                                                l.wa_parent_user_id,
                                                l.wa_country_code, r.c))
           UNION ALL
           SELECT l.id FROM leads l
            WHERE r.ph IS NULL AND l.wa_user_id = r.u AND l.business_id = r.b
              AND (r.nm IS NULL OR (l.name IS NOT NULL
                                    AND l.wa_profile_name = r.nm))
              AND (r.c IS NULL OR wa_lead_has_contact(l.wa_username,
                                                l.wa_parent_user_id,
                                                l.wa_country_code, r.c))
           LIMIT 1) k ON true);
END
$$;


-- the lead already keeps what contacts[] entry c says of the user
CREATE OR REPLACE FUNCTION wa_lead_has_contact(p_username text,
    p_parent text, p_country text, c jsonb)
RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT (p_username IS NOT DISTINCT FROM
                coalesce(wa_contact_username(c), p_username))
       AND (p_parent IS NOT DISTINCT FROM
                coalesce(wa_contact_parent(c), p_parent))
       AND (p_country IS NOT DISTINCT FROM
                coalesce(wa_contact_country(c), p_country))
$$;


-- For the rows without a lead in p_lead: the leads of their phones when no
-- lead has the phone, with or without a '+', created in one INSERT, the
-- first row of each phone giving its wa_user_id and name. A wa_user_id
-- another lead holds, or a lead another writer has just made, stops the
-- INSERT (ON CONFLICT) and leaves the row to the caller's careful path.
-- p_lead, with the new lead of each row it satisfies as it is. A row with
-- no phone is left alone.
DROP FUNCTION IF EXISTS wa_leads_create(bigint[], text[], text[], text[],
    bigint[]);

CREATE OR REPLACE FUNCTION wa_leads_create(p_business bigint[],
    p_phone text[], p_wa_user_id text[], p_name text[], p_lead bigint[],
    p_contact jsonb[] DEFAULT NULL)
RETURNS bigint[]
LANGUAGE plpgsql
-- each phone looked up by its index, whatever the statistics say: a plan
-- cached while the table looked small must not scan it once it is not
SET enable_seqscan = off
AS $$
DECLARE
    v_lead  bigint[];
    v_c     jsonb[] := coalesce(p_contact,
                           array_fill(NULL::jsonb,
                                      ARRAY[cardinality(p_business)]));
BEGIN
    WITH ins AS (
        INSERT INTO leads AS l (business_id, phone, wa_user_id, name,
                                wa_profile_name, wa_username,
                                wa_parent_user_id, wa_country_code)
        SELECT DISTINCT ON (r.b, r.ph) r.b, r.ph, r.u, r.nm, r.nm,
               wa_contact_username(r.c), wa_contact_parent(r.c),
               wa_contact_country(r.c)
          FROM unnest(p_business, p_phone, p_wa_user_id, p_name, p_lead, v_c)
               WITH ORDINALITY AS r(b, ph, u, nm, lead, c, o)
          LEFT JOIN LATERAL (
               SELECT true AS found FROM leads x
                WHERE x.phone IN (r.ph, '+' || r.ph) AND x.business_id = r.b
               UNION ALL
               -- a former phone: its lead is found by wa_lead_resolve
               SELECT true FROM wa_lead_former_id f
                WHERE f.value = r.ph AND f.kind = 'phone'
                  AND f.business_id = r.b
                LIMIT 1) e ON true
         WHERE r.lead IS NULL AND r.ph IS NOT NULL AND e.found IS NULL
         ORDER BY r.b, r.ph, r.o
        ON CONFLICT DO NOTHING
        RETURNING l.id, l.business_id, l.phone, l.wa_user_id,
                  l.wa_profile_name, l.wa_username, l.wa_parent_user_id,
                  l.wa_country_code)
    SELECT array_agg(coalesce(r.lead, i.id) ORDER BY r.o) INTO v_lead
      FROM unnest(p_business, p_phone, p_wa_user_id, p_name, p_lead, v_c)
           WITH ORDINALITY AS r(b, ph, u, nm, lead, c, o)
      LEFT JOIN ins i
        ON r.lead IS NULL AND i.business_id = r.b AND i.phone = r.ph
           AND (r.u IS NULL OR i.wa_user_id IS NOT NULL)
           AND (r.nm IS NULL OR i.wa_profile_name = r.nm)
           AND (r.c IS NULL OR wa_lead_has_contact(i.wa_username, i.wa_parent_user_id,
                                          i.wa_country_code, r.c));

    RETURN v_lead;
END
$$;


-- wa-writer backfill-leads: repair rows stored without their lead.
--
-- One call links up to p_limit rows with a NULL lead_id and an id above
-- p_after, in one short transaction; wa-writer backfill-leads calls it
-- until it finds nothing, so the table is never locked for long. Rows
-- locked by a running writer are skipped (the writer links them itself).
-- Rows with neither phone nor wa_user_id cannot be linked and are counted.

CREATE OR REPLACE FUNCTION wa_backfill_leads(p_after bigint, p_limit int,
    OUT last_id bigint, OUT scanned int, OUT linked int, OUT created int,
    OUT unresolved int)
LANGUAGE plpgsql AS $$
DECLARE
    r      record;
    v      record;
    v_phone text;
BEGIN
    last_id := p_after;
    scanned := 0;
    linked := 0;
    created := 0;
    unresolved := 0;

    FOR r IN SELECT m.id, m.business_id, m.phone, m.wa_user_id
               FROM whatsapp_message m
              WHERE m.lead_id IS NULL AND m.id > p_after
              ORDER BY m.id
              LIMIT p_limit
                FOR UPDATE SKIP LOCKED
    LOOP
        last_id := r.id;
        scanned := scanned + 1;
        v_phone := wa_norm_phone(r.phone);

        IF r.business_id IS NULL OR (v_phone IS NULL AND r.wa_user_id IS NULL)
        THEN
            unresolved := unresolved + 1;
            CONTINUE;
        END IF;

        SELECT * INTO v
          FROM wa_lead_resolve(r.business_id, v_phone, r.wa_user_id, NULL);

        UPDATE whatsapp_message SET lead_id = v.lead_id, updated_at = now()
         WHERE id = r.id;

        linked := linked + 1;

        IF v.created THEN
            created := created + 1;
        END IF;
    END LOOP;
END
$$;
