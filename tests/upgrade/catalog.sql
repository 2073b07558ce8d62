-- Everything the extension puts into a database, one line per fact, in a stable order: run in a
-- database upgraded from 0.1.0 and in a fresh install, the two outputs must be equal. Object ids,
-- sequence values and the order of creation are left out; column order is kept (SELECT * sees it).
\pset format unaligned
\pset tuples_only on
\pset pager off
WITH ext AS (SELECT oid FROM pg_catalog.pg_extension WHERE extname = 'customer_unify'),
members AS (
    SELECT d.classid, d.objid FROM pg_catalog.pg_depend d, ext
    WHERE d.refclassid = 'pg_catalog.pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'
),
acl(kind, name, acl) AS (
    -- ACLs as sorted grantee=privileges lists, so the order of GRANTs does not matter.
    SELECT 'function', p.oid::regprocedure::text,
           (SELECT string_agg(pg_catalog.format('%s:%s%s', CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END,
                                                a.privilege_type, CASE WHEN a.is_grantable THEN '*' ELSE '' END), ',' ORDER BY 1)
            FROM pg_catalog.aclexplode(coalesce(p.proacl, pg_catalog.acldefault('f'::"char", p.proowner))) a)
    FROM pg_catalog.pg_proc p WHERE p.pronamespace = 'unify'::regnamespace
    UNION ALL
    SELECT 'relation', c.oid::regclass::text,
           (SELECT string_agg(pg_catalog.format('%s:%s%s', CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END,
                                                a.privilege_type, CASE WHEN a.is_grantable THEN '*' ELSE '' END), ',' ORDER BY 1)
            FROM pg_catalog.aclexplode(coalesce(c.relacl, pg_catalog.acldefault((CASE c.relkind WHEN 'S' THEN 's' ELSE 'r' END)::"char", c.relowner))) a)
    FROM pg_catalog.pg_class c WHERE c.relnamespace = 'unify'::regnamespace AND c.relkind IN ('r', 'v', 'm', 'S', 'p', 'f')
    UNION ALL
    SELECT 'column', pg_catalog.format('%s.%s', a.attrelid::regclass, a.attname),
           (SELECT string_agg(pg_catalog.format('%s:%s', CASE x.grantee WHEN 0 THEN 'PUBLIC' ELSE x.grantee::regrole::text END, x.privilege_type), ',' ORDER BY 1)
            FROM pg_catalog.aclexplode(a.attacl) x)
    FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
    WHERE c.relnamespace = 'unify'::regnamespace AND a.attacl IS NOT NULL
    UNION ALL
    SELECT 'schema', n.nspname,
           (SELECT string_agg(pg_catalog.format('%s:%s', CASE x.grantee WHEN 0 THEN 'PUBLIC' ELSE x.grantee::regrole::text END, x.privilege_type), ',' ORDER BY 1)
            FROM pg_catalog.aclexplode(n.nspacl) x)
    FROM pg_catalog.pg_namespace n WHERE n.nspname = 'unify'
),
facts(fact) AS (
    SELECT pg_catalog.format('extension %s version %s relocatable %s schema %s', e.extname, e.extversion, e.extrelocatable, e.extnamespace::regnamespace)
    FROM pg_catalog.pg_extension e WHERE e.extname = 'customer_unify'
    UNION ALL
    SELECT 'member ' || pg_catalog.pg_describe_object(m.classid, m.objid, 0)
    FROM members m
    WHERE m.classid <> 'pg_catalog.pg_type'::regclass  -- row types come with their tables
    UNION ALL
    SELECT 'config table ' || c::regclass::text || coalesce(' where ' || w, '')
    FROM pg_catalog.pg_extension e, LATERAL ROWS FROM (pg_catalog.unnest(e.extconfig), pg_catalog.unnest(e.extcondition)) AS u(c, w)
    WHERE e.extname = 'customer_unify'
    UNION ALL
    SELECT pg_catalog.format('function %s returns %s kind %s language %s volatility %s strict %s security_definer %s leakproof %s parallel %s cost %s rows %s owner %s config %s',
                             p.oid::regprocedure, pg_catalog.pg_get_function_result(p.oid), p.prokind, l.lanname,
                             p.provolatile, p.proisstrict, p.prosecdef, p.proleakproof, p.proparallel, p.procost, p.prorows,
                             p.proowner::regrole, p.proconfig)
    FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_language l ON l.oid = p.prolang
    WHERE p.pronamespace = 'unify'::regnamespace
    UNION ALL
    SELECT pg_catalog.format('function %s arguments (%s)', p.oid::regprocedure, pg_catalog.pg_get_function_arguments(p.oid))
    FROM pg_catalog.pg_proc p WHERE p.pronamespace = 'unify'::regnamespace
    UNION ALL
    -- Bodies of SQL and PL/pgSQL functions line by line (a C function's body is its symbol).
    SELECT pg_catalog.format('function %s body %s: %s', p.oid::regprocedure, lpad(l.n::text, 4, '0'), l.line)
    FROM pg_catalog.pg_proc p,
         LATERAL pg_catalog.regexp_split_to_table(p.prosrc, E'\n') WITH ORDINALITY AS l(line, n)
    WHERE p.pronamespace = 'unify'::regnamespace
    UNION ALL
    SELECT pg_catalog.format('%s %s acl %s', kind, name, acl) FROM acl
    UNION ALL
    SELECT pg_catalog.format('relation %s kind %s persistence %s owner %s rls %s force_rls %s options %s',
                             c.oid::regclass, c.relkind, c.relpersistence, c.relowner::regrole, c.relrowsecurity, c.relforcerowsecurity, c.reloptions)
    FROM pg_catalog.pg_class c WHERE c.relnamespace = 'unify'::regnamespace AND c.relkind <> 'i'
    UNION ALL
    SELECT pg_catalog.format('column %s %s %s type %s not_null %s default %s identity %s generated %s collation %s',
                             a.attrelid::regclass, lpad(pg_catalog.row_number() OVER (PARTITION BY a.attrelid ORDER BY a.attnum)::text, 3, '0'),
                             a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull,
                             pg_catalog.pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated,
                             CASE WHEN a.attcollation <> 0 THEN a.attcollation::regcollation::text END)
    FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
    LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE c.relnamespace = 'unify'::regnamespace AND c.relkind IN ('r', 'v', 'm', 'p', 'c', 'f') AND a.attnum > 0 AND NOT a.attisdropped
    UNION ALL
    SELECT 'index ' || pg_catalog.pg_get_indexdef(i.indexrelid)
    FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indrelid WHERE c.relnamespace = 'unify'::regnamespace
    UNION ALL
    SELECT pg_catalog.format('constraint %s %s %s', co.conrelid::regclass, co.conname, pg_catalog.pg_get_constraintdef(co.oid))
    FROM pg_catalog.pg_constraint co WHERE co.connamespace = 'unify'::regnamespace
    UNION ALL
    SELECT pg_catalog.format('trigger %s enabled %s', pg_catalog.pg_get_triggerdef(t.oid), t.tgenabled)
    FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
    WHERE c.relnamespace = 'unify'::regnamespace AND NOT t.tgisinternal
    UNION ALL
    SELECT pg_catalog.format('view %s: %s', c.oid::regclass, pg_catalog.regexp_replace(pg_catalog.pg_get_viewdef(c.oid), '\s+', ' ', 'g'))
    FROM pg_catalog.pg_class c WHERE c.relnamespace = 'unify'::regnamespace AND c.relkind IN ('v', 'm')
    UNION ALL
    SELECT pg_catalog.format('sequence %s type %s start %s increment %s min %s max %s cycle %s owned_by %s',
                             s.seqrelid::regclass, s.seqtypid::regtype, s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcycle,
                             (SELECT pg_catalog.format('%s.%s', d.refobjid::regclass, a.attname) FROM pg_catalog.pg_depend d
                              JOIN pg_catalog.pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                              WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = s.seqrelid AND d.deptype IN ('a', 'i')))
    FROM pg_catalog.pg_sequence s JOIN pg_catalog.pg_class c ON c.oid = s.seqrelid WHERE c.relnamespace = 'unify'::regnamespace
    UNION ALL
    SELECT pg_catalog.format('policy %s %s %s %s roles %s using %s check %s', po.polrelid::regclass, po.polname, po.polcmd, po.polpermissive,
                             po.polroles::regrole[], pg_catalog.pg_get_expr(po.polqual, po.polrelid), pg_catalog.pg_get_expr(po.polwithcheck, po.polrelid))
    FROM pg_catalog.pg_policy po JOIN pg_catalog.pg_class c ON c.oid = po.polrelid WHERE c.relnamespace = 'unify'::regnamespace
    UNION ALL
    SELECT pg_catalog.format('event trigger %s on %s calls %s tags %s enabled %s owner %s', e.evtname, e.evtevent, e.evtfoid::regproc, e.evttags, e.evtenabled, e.evtowner::regrole)
    FROM pg_catalog.pg_event_trigger e WHERE e.evtfoid IN (SELECT oid FROM pg_catalog.pg_proc WHERE pronamespace = 'unify'::regnamespace)
    UNION ALL
    SELECT pg_catalog.format('role %s login %s inherit %s createrole %s member of %s', r.rolname, r.rolcanlogin, r.rolinherit, r.rolcreaterole,
                             (SELECT array_agg(m.roleid::regrole::text ORDER BY 1) FROM pg_catalog.pg_auth_members m WHERE m.member = r.oid))
    FROM pg_catalog.pg_roles r WHERE r.rolname LIKE 'unify\_%'
    UNION ALL
    SELECT pg_catalog.format('schema %s owner %s', n.nspname, n.nspowner::regrole) FROM pg_catalog.pg_namespace n WHERE n.nspname = 'unify'
)
SELECT fact FROM facts ORDER BY fact COLLATE "C";
