"""One class per database engine, each with the same small surface:

preflight(), stats(), size_estimate(), dump(path), verify_dump(path), restore(path, manifest).

The command builders and error explanations are plain functions, tested without a server.
"""
import contextlib
import hashlib
import json
import posixpath
import re
import secrets
import threading
import time

from psycopg import sql

from tasks import bundle as B
from tasks.console import PROGRESS, RemigrateError, Timer, say, warn
from tasks.faults import inject_fault
from tasks.target import CommandFailed, command_line, group, parallel, pipeline

import remigrate_schema as S  # noqa: E402  (scripts/, put on the path by tasks.console; shared with the probe)

PG_TOOLS = ("pg_dump", "pg_restore", "psql")
# Django OPTIONS keys that libpq also reads from the environment.
PG_OPTION_ENV = {
    "sslmode": "PGSSLMODE", "sslrootcert": "PGSSLROOTCERT", "sslcert": "PGSSLCERT", "sslkey": "PGSSLKEY",
    "sslcrl": "PGSSLCRL", "connect_timeout": "PGCONNECT_TIMEOUT", "options": "PGOPTIONS", "service": "PGSERVICE",
    "passfile": "PGPASSFILE", "target_session_attrs": "PGTARGETSESSIONATTRS", "gssencmode": "PGGSSENCMODE",
}


def pgpass_line(user, password):
    """A .pgpass entry for any host, port and database of this run (':' and '\\' escaped)."""

    def esc(value):
        return str(value).replace("\\", "\\\\").replace(":", "\\:")

    return f"*:*:*:{esc(user) if user else '*'}:{esc(password)}\n"


def pg_env(db, pgpass_path=None):
    """Environment for libpq tools: no secret in it, only the path of a 0600 password file."""
    env = {"PGCONNECT_TIMEOUT": "10", "PGAPPNAME": "remigrate"}
    for key, var in PG_OPTION_ENV.items():
        if key in db.options and db.options[key] not in (None, ""):
            env[var] = str(db.options[key])
    if pgpass_path:
        env["PGPASSFILE"] = pgpass_path
    return env


# TCP keepalives for every connection (libpq has no environment variables for them): a session
# idle for minutes (the one holding the run's lock during a long load) would otherwise be
# dropped unseen by a firewall or NAT, and its next statement wait for a connection long dead.
# The project's own OPTIONS win.
KEEPALIVES = {"keepalives": "1", "keepalives_idle": "30", "keepalives_interval": "10", "keepalives_count": "6"}


def conninfo_value(value):
    """A libpq connection string value, quoted (backslashes and single quotes escaped)."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def pg_conn_args(db, dbname=None):
    """Connection flags: -w so a missing password fails at once instead of prompting; the database
    as a connection string (so no name is taken for one) with TCP keepalives."""
    args = ["-w"]
    host = db.host or db.options.get("host")
    if host:
        args.append(f"--host={host}")
    if db.port:
        args.append(f"--port={db.port}")
    if db.user:
        args.append(f"--username={db.user}")
    params = {"dbname": dbname or db.name,
              **{k: db.options.get(k) if db.options.get(k) not in (None, "") else v for k, v in KEEPALIVES.items()}}
    args.append("--dbname=" + " ".join(f"{k}={conninfo_value(v)}" for k, v in params.items()))
    return args


def parse_tool_version(text):
    """(major, minor) from `pg_dump (PostgreSQL) 15.18 (Debian ...)`."""
    match = re.search(r"\)\s+(\d+)(?:\.(\d+))?", text or "")
    if not match:
        return None
    return int(match.group(1)), int(match.group(2) or 0)


def explain_pg_error(stderr, db):
    """One line that says what failed talking to PostgreSQL and what to do (else its last line)."""
    lines = [ln for ln in (stderr or "").strip().splitlines() if ln.strip()]
    return known_pg_error(stderr, db) or (lines[-1] if lines else "unknown error")


def known_pg_error(stderr, db):
    """What to do about a PostgreSQL error this tool knows (a connection refused, a password
    wrong, a role missing or not ours to act for, rows hidden by row level security), or None."""
    where = f"{db.host or 'local socket'}:{db.port or 5432}"
    text = stderr or ""
    if "password authentication failed" in text:
        return f"password authentication failed for user {db.user!r} at {where}; check DB_PASSWORD or DATABASE_URL"
    if "no password supplied" in text or "fe_sendauth" in text:
        return f"the server at {where} wants a password for {db.user!r} and none is configured; set DB_PASSWORD or DATABASE_URL"
    if re.search(r'database "[^"]*" does not exist', text):
        return f"database {db.name!r} does not exist at {where}; check DB_NAME or DATABASE_URL"
    missing = re.search(r'role "([^"]*)" does not exist', text)
    if missing and missing.group(1) == db.user:
        return f"role {db.user!r} does not exist at {where}; check DB_USER or DATABASE_URL"
    if missing:  # a role the backup names (an owner, a grantee) that this server has not
        return (f"role {missing.group(1)!r}, which the backup names (an owner or a grantee), does not exist at {where}; "
                f"create it first (CREATE ROLE {sql.Identifier(missing.group(1)).as_string(None)})")
    hidden = re.search(r'query would be affected by row-level security policy for table "([^"]*)"', text)
    if hidden:  # FORCE ROW LEVEL SECURITY: even its owner sees only some rows, so no backup could hold them all
        return (f"table {hidden.group(1)!r} forces row level security on its owner, so {db.user!r} cannot read all its "
                "rows; run it as a role with BYPASSRLS (or a superuser), or ALTER TABLE ... NO FORCE ROW LEVEL SECURITY "
                "while it runs")
    acting = re.search(r'permission denied to set session authorization(?: "([^"]*)")?', text)
    if acting:  # pg_dump gives a privilege granted by a role that does not own the object back as that role
        return (f"the backup holds privileges granted by {acting.group(1) or 'another role'} on objects it does not own "
                f"(WITH GRANT OPTION), which only a superuser can give back as it; restore as a superuser, or grant "
                "them again as the owner before the next backup")
    member = re.search(r'must be member of role "([^"]*)"', text)
    if member:  # ALTER DEFAULT PRIVILEGES FOR ROLE, OWNER TO: another role's
        return (f"{db.user!r} may not act for role {member.group(1)!r}, whose objects or default privileges the backup "
                f"holds; run it as a superuser, or first GRANT {sql.Identifier(member.group(1)).as_string(None)} TO "
                f"{sql.Identifier(db.user).as_string(None)}")
    if any(s in text for s in ("Connection refused", "could not connect", "timeout expired", "could not translate host name", "No route to host")):
        return f"cannot reach PostgreSQL at {where}; is the server running and are DB_HOST/DB_PORT right?"
    return None


def pg_identifier(schema, name):
    return sql.Identifier(schema, name).as_string(None)


# Before a restore's --clean script: every foreign key of the project's tables goes (in the same
# transaction; the script makes the backup's again). The script drops what the backup holds by
# the backup's names, so a key that a reset has given another name since (a renamed model's)
# would keep the key it points at from being dropped. One that cannot go on its own (a
# partition's copy of its parent's) goes with its parent's.
DROP_FOREIGN_KEYS = (
    "DO $remigrate$ DECLARE r record; BEGIN FOR r IN SELECT c.conrelid::regclass AS tbl, c.conname FROM pg_constraint c "
    "JOIN pg_class t ON t.oid = c.conrelid JOIN pg_namespace n ON n.oid = t.relnamespace WHERE c.contype = 'f' AND "
    f"{S.USER_SCHEMAS} AND {S.NOT_FROM_EXTENSION.format(oid='t.oid', catalog='pg_class')} LOOP BEGIN "
    "EXECUTE format('ALTER TABLE %s DROP CONSTRAINT IF EXISTS %I', r.tbl, r.conname); "
    "EXCEPTION WHEN invalid_table_definition THEN NULL; END; END LOOP; END $remigrate$;\n")
# Then every partitioned table at the top goes whole, with its partitions (the script makes them
# again): its --clean drops a partition's key or index, which its parent's holds, before the parent's.
DROP_PARTITIONED = (
    "DO $remigrate$ DECLARE r record; BEGIN FOR r IN SELECT t.oid::regclass AS tbl FROM pg_class t JOIN pg_namespace n "
    f"ON n.oid = t.relnamespace WHERE t.relkind = 'p' AND NOT t.relispartition AND {S.USER_SCHEMAS} AND "
    f"{S.NOT_FROM_EXTENSION.format(oid='t.oid', catalog='pg_class')} LOOP "
    "EXECUTE format('DROP TABLE IF EXISTS %s CASCADE', r.tbl); END LOOP; END $remigrate$;\n")


def drop_statements(relations):
    """DROP statements for relations that exist now but not in the backup."""
    kinds = {"r": "TABLE", "p": "TABLE", "v": "VIEW", "m": "MATERIALIZED VIEW", "S": "SEQUENCE", "f": "FOREIGN TABLE"}
    # A serial or identity column's sequence cannot be dropped on its own; it goes with its table.
    return "".join(f"DROP {kinds[r['kind']]} IF EXISTS {pg_identifier(r['schema'], r['name'])} CASCADE;\n"
                   for r in relations if not r.get("owned_by_column"))


def toc_entries(listing):
    """(line, description) of each entry of `pg_restore --list`: the description is what follows
    "<dump id>; <table oid> <oid> ", with a space added so prefixes match whole words."""
    for line in listing.splitlines():
        head, sep, entry = line.partition("; ")
        parts = entry.split(" ", 2)
        if line.startswith(";") or not sep or len(parts) < 3:
            continue
        yield line, parts[2] + " "


def filter_toc(listing, keep):
    """The archive's table-of-contents lines to load: the TABLE DATA of the `keep` tables
    ((schema, name, owner) read from the catalog, matched as whole entries since the listing
    prints names unquoted) and large objects. Sequences are set afterwards by (table, column)."""
    wanted = {f"TABLE DATA {schema} {name} {owner}" for schema, name, owner in keep}
    out = [line for line, desc in toc_entries(listing)
           if desc[:-1] in wanted or desc.startswith(("BLOBS ", "BLOB DATA ", "LARGE OBJECT "))]
    return "\n".join(out) + "\n"


def table_entries(listing, tables):
    """The archive's table-of-contents lines that make the given tables again, whole: the table,
    its rows, column defaults, constraints (foreign keys included), triggers, indexes, owned
    sequences with their values, privileges (column ones too), row security and its policies,
    and comments (not extended statistics: a --table dump has none). `tables`: {"name" or
    "schema.name": {"indexes": [names], "sequences": [names]}} (index and sequence entries do
    not name their table)."""
    prefixes, constraint_comments = [], []  # "COMMENT schema CONSTRAINT name ON table owner"
    for key, objects in tables.items():
        schema, name = S.pg_key_parts(key)
        for kind in ("TABLE", "TABLE DATA", "DEFAULT", "CONSTRAINT", "FK CONSTRAINT", "TRIGGER"):
            prefixes.append(f"{kind} {schema} {name} ")
        prefixes += [f"POLICY {schema} {name} ", f"ROW SECURITY {schema} {name} "]
        prefixes += [f"{entry} {schema} {kind} {tag}{end}" for entry in ("ACL", "COMMENT") for tag in as_tagged(name)
                     for kind, end in (("TABLE", " "), ("COLUMN", "."))]
        constraint_comments.append((f"COMMENT {schema} CONSTRAINT ", f" ON {name} "))
        for index in objects.get("indexes", []):
            prefixes += [f"INDEX {schema} {index} ", f"COMMENT {schema} INDEX {index} "]
        for sequence in objects.get("sequences", []):
            prefixes += [f"{kind} {schema} {sequence} " for kind in ("SEQUENCE", "SEQUENCE SET", "SEQUENCE OWNED BY")]
            prefixes += [f"ACL {schema} SEQUENCE {tag} " for tag in as_tagged(sequence)]
    out = [line for line, desc in toc_entries(listing)
           if desc.startswith(tuple(prefixes)) or any(desc.startswith(a) and b in desc for a, b in constraint_comments)]
    return "\n".join(out) + "\n"


def as_tagged(name):
    """The ways pg_dump writes a name in an ACL or COMMENT entry's tag: as it is, or quoted when it
    must be (capitals, spaces, a keyword: pg_dump's fmtId); an entry's own name column is never
    quoted, nor a POLICY or ROW SECURITY entry's tag."""
    return (name, '"' + name.replace('"', '""') + '"')


COMMENTED = ("TABLE", "VIEW", "MATERIALIZED VIEW", "FOREIGN TABLE", "SEQUENCE")


def after_load_toc(listing, relations, schemas, matviews=(), routines=(), types=(), collations=(), parts=()):
    """The archive's table-of-contents lines that a rebuilt database needs once its rows are in,
    beyond them: the access rules its rows do not carry (the privileges on the `schemas` it has,
    a REVOKE ... FROM PUBLIC on public included, on the columns of its `relations` (tables,
    views and sequences, as (schema, name) pairs), the default privileges from ALTER DEFAULT
    PRIVILEGES, for the whole database or a schema it has), the live database's comments on
    them, their columns, its `routines` ((schema, name, identity arguments as pg_dump prints
    them)), `types` and `collations` ((schema, name)), and its indexes, triggers, table and
    domain constraints (`parts`: (kind, schema, name, table or domain or None)), whether the old
    history made them or a hand did, and the refresh of the materialized views `matviews` that
    the backup had filled (the migrations made them over empty tables). pg_dump writes each
    relative to a new database's own, which a rebuilt one is."""
    wanted = tuple(f"{entry} - SCHEMA {tag} " for entry in ("ACL", "COMMENT") for schema in schemas for tag in as_tagged(schema))
    wanted += tuple(f"{entry} {schema} COLUMN {tag}." for entry in ("ACL", "COMMENT") for schema, name in relations
                    for tag in as_tagged(name))
    wanted += tuple(f"COMMENT {schema} {kind} {tag} " for schema, name in relations for tag in as_tagged(name)
                    for kind in COMMENTED)
    wanted += tuple(f"COMMENT {schema} {kind} {tag}({args}) " for schema, name, args in routines for tag in as_tagged(name)
                    for kind in ("FUNCTION", "PROCEDURE"))
    wanted += tuple(f"COMMENT {schema} {kind} {tag} " for schema, name in types for tag in as_tagged(name)
                    for kind in ("TYPE", "DOMAIN"))
    wanted += tuple(f"COMMENT {schema} COLLATION {tag} " for schema, name in collations for tag in as_tagged(name))
    wanted += tuple(f"COMMENT {schema} {kind.removeprefix('DOMAIN ')} {tag}" + (f" ON {'DOMAIN ' if kind.startswith('DOMAIN') else ''}"
                                                                            f"{on} " if table else " ")
                    for kind, schema, name, table in parts for tag in as_tagged(name)
                    for on in (as_tagged(table) if table else [None]))
    wanted += tuple(f"MATERIALIZED VIEW DATA {schema} {name} " for schema, name in matviews)
    wanted += tuple(f"DEFAULT ACL {schema} " for schema in ("-", *schemas))
    out = [line for line, desc in toc_entries(listing) if desc.startswith(wanted)]
    return "\n".join(out) + "\n" if out else ""


BUILD_SUFFIX = "__remigrate_build"


def build_name(name, suffix=BUILD_SUFFIX):
    """The name the new database is built under, so the live name stays free while it is built:
    no application session can reach (and write into) a half-built database. PostgreSQL names
    are at most 63 bytes: a longer one is cut and told apart by a hash of the whole name."""
    if len(name.encode("utf-8")) + len(suffix) <= 63:
        return name + suffix
    tag = "_" + hashlib.sha256(name.encode("utf-8")).hexdigest()[:8]
    room = 63 - len(suffix) - len(tag)
    return name.encode("utf-8")[:room].decode("utf-8", errors="ignore") + tag + suffix


def kept_name(name, run_id):
    """The name a swap gives the database it replaces, kept until `inv cleanup`."""
    return build_name(name, f"__remigrate_old_{run_id}")


def rejected_name(name, run_id):
    """The name a rollback gives the new database it takes out of service (the application may
    have written to it), kept until `inv cleanup`."""
    return build_name(name, f"__remigrate_rejected_{run_id}")


def retarget(statement, old, new):
    """A database-level statement of the archive (CREATE/ALTER/COMMENT/GRANT) aimed at another name."""
    for written in (sql.Identifier(old).as_string(None), old):
        for head in ("CREATE DATABASE ", "ALTER DATABASE ", "COMMENT ON DATABASE ", " ON DATABASE ", " IN DATABASE "):
            needle = head + written
            at = statement.find(needle)
            end = at + len(needle)
            if at >= 0 and statement[end:end + 1] in (" ", ";", ""):
                return statement[:at] + head + sql.Identifier(new).as_string(None) + statement[end:]
    raise RemigrateError(f"cannot find database {old} in the backup's statement {statement[:60]!r}")


def sql_statements(script):
    """The statements of a pg_dump script: split at semicolons outside quoted strings and
    identifiers (a comment may span lines); psql's backslash commands and SQL comments left out."""
    out, current, quote = [], [], None
    for line in script.splitlines(keepends=True):
        if quote is None and not "".join(current).strip() and line.lstrip().startswith(("\\", "--")):
            continue
        for char in line:
            current.append(char)
            if quote:
                quote = None if char == quote else quote  # a doubled quote closes and reopens: same result
            elif char in "'\"":
                quote = char
            elif char == ";":
                out.append("".join(current).strip())
                current = []
    return out


def database_statements(create_script):
    """CREATE DATABASE and the database-level settings (its own and its roles' in it: ALTER ROLE
    ... IN DATABASE ... SET), owner, grants and comment from the output of `pg_restore --create
    --schema-only`."""
    keep = ("CREATE DATABASE ", "ALTER DATABASE ", "COMMENT ON DATABASE ")
    return [st for st in sql_statements(create_script)
            if st.startswith(keep) or (st.startswith(("GRANT ", "REVOKE ")) and " ON DATABASE " in st)
            or (st.startswith("ALTER ROLE ") and " IN DATABASE " in st)]


LOAD_PRE_SQL = """\
-- Empty every table the fresh migrate filled (content types, permissions...), so the old rows
-- come back with their ids; django_migrations keeps the new history. User triggers stay off
-- until the rows are in (a trigger's effects are in the backup's rows already).
DO $$
DECLARE t text;
BEGIN
  SELECT string_agg(format('%I.%I', schemaname, tablename), ', ') INTO t FROM pg_tables
   WHERE schemaname NOT IN ('pg_catalog', 'information_schema') AND NOT (schemaname = 'public' AND tablename = 'django_migrations');
  IF t IS NOT NULL THEN EXECUTE 'TRUNCATE ' || t; END IF;
  FOR t IN SELECT DISTINCT format('%I.%I', n.nspname, c.relname) FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace WHERE NOT g.tgisinternal LOOP
    EXECUTE 'ALTER TABLE ' || t || ' DISABLE TRIGGER USER';
  END LOOP;
END $$;
"""


def counter(label, total, unit, counts):
    """An output-line watcher that shows progress: one more done for each line `counts` accepts."""
    done = [0]

    def on_line(line):
        if counts(line.strip()):
            done[0] += 1
            PROGRESS(label, done[0], total, unit)
    return on_line


def after_index(schema, table, index_oid):
    """SQL text that marks an index again as its table's CLUSTER index or REPLICA IDENTITY, as it was."""
    return ("coalesce((SELECT CASE WHEN x.indisclustered THEN format(' ALTER TABLE %I.%I CLUSTER ON %I;', "
            f"{schema}, {table}, xc.relname) ELSE '' END || CASE WHEN x.indisreplident THEN "
            f"format(' ALTER TABLE %I.%I REPLICA IDENTITY USING INDEX %I;', {schema}, {table}, xc.relname) ELSE '' END "
            f"FROM pg_index x JOIN pg_class xc ON xc.oid = x.indexrelid WHERE x.indexrelid = {index_oid}), '')")


def in_tablespace(index_oid):
    """SQL text: the SET that builds an index again in the tablespace it was in (pg_get_indexdef
    leaves it out); the default tablespace is set as '' so every statement says where it goes."""
    return ("format('SET default_tablespace = %L; ', coalesce((SELECT t.spcname FROM pg_class x JOIN pg_tablespace t "
            f"ON t.oid = x.reltablespace WHERE x.oid = {index_oid}), ''))")


def seen_by_views(catalog, oid):
    """SQL condition: a view (a rewrite rule) depends on this object (a view grouping by a
    primary key does): it cannot be dropped for the load, so it stays in place."""
    return (f"EXISTS (SELECT 1 FROM pg_depend d WHERE d.refclassid = '{catalog}'::regclass AND d.refobjid = {oid} "
            "AND d.classid = 'pg_rewrite'::regclass)")


def keys_query(tables):
    """JSON of what makes loading slow on the `tables` ((schema, name) pairs): their primary
    keys, unique and exclusion constraints and other indexes, and every foreign key on them or
    pointing at them, each with the statements that make it again as it was (with its comment,
    CLUSTER mark and REPLICA IDENTITY). A validated foreign key of an ordinary table also comes
    as two statements that do the same in two steps: added unchecked (NOT VALID), then
    validated, which another session may do for another table at the same time. (One made NOT
    VALID on purpose comes back as it was, unchecked.) A partition's index or key that its
    partitioned table's makes stays: it cannot be taken out on its own."""
    wanted = sql.Literal(json.dumps([list(t) for t in tables])).as_string(None)
    return f"""WITH wanted AS (SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 JOIN json_array_elements({wanted}::json) w ON w->>0 = n.nspname AND w->>1 = c.relname
                WHERE c.relkind = 'r'),
cons AS (SELECT con.contype, con.conname, con.conindid, format('%I.%I', n.nspname, c.relname) AS tbl,
                CASE WHEN con.contype <> 'f' THEN {in_tablespace("con.conindid")} ELSE '' END
                || format('ALTER TABLE ONLY %I.%I ADD CONSTRAINT %I %s;', n.nspname, c.relname, con.conname,
                          pg_get_constraintdef(con.oid))
                || note.text
                || CASE WHEN con.contype <> 'f' THEN {after_index("n.nspname", "c.relname", "con.conindid")} ELSE '' END AS make,
                format('ALTER TABLE ONLY %I.%I DROP CONSTRAINT %I;', n.nspname, c.relname, con.conname) AS drop,
                CASE WHEN con.contype = 'f' AND c.relkind = 'r' AND con.convalidated THEN
                  format('ALTER TABLE ONLY %I.%I ADD CONSTRAINT %I %s NOT VALID;', n.nspname, c.relname, con.conname,
                         pg_get_constraintdef(con.oid)) || note.text END AS unchecked,
                CASE WHEN con.contype = 'f' AND c.relkind = 'r' AND con.convalidated THEN
                  format('ALTER TABLE %I.%I VALIDATE CONSTRAINT %I;', n.nspname, c.relname, con.conname) END AS validate
           FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
          CROSS JOIN LATERAL (SELECT coalesce(format(' COMMENT ON CONSTRAINT %I ON %I.%I IS ', con.conname, n.nspname, c.relname)
                              || quote_literal(obj_description(con.oid, 'pg_constraint')) || ';', '') AS text) note
          WHERE con.conislocal AND con.conparentid = 0 AND (con.contype = 'f' AND (con.conrelid IN (SELECT oid FROM wanted)
                                                          OR con.confrelid IN (SELECT oid FROM wanted))
                                    OR con.contype IN ('p', 'u', 'x') AND con.conrelid IN (SELECT oid FROM wanted)
                                       AND NOT {seen_by_views("pg_constraint", "con.oid")}
                                       AND NOT {seen_by_views("pg_class", "con.conindid")})),
idx AS (SELECT format('%I.%I', n.nspname, c.relname) AS tbl, ci.relname,
               {in_tablespace("i.indexrelid")} || pg_get_indexdef(i.indexrelid) || ';'
               || coalesce(format(' COMMENT ON INDEX %I.%I IS ', n.nspname, ci.relname)
                           || quote_literal(obj_description(ci.oid, 'pg_class')) || ';', '')
               || {after_index("n.nspname", "c.relname", "i.indexrelid")} AS make,
               format('DROP INDEX %I.%I;', n.nspname, ci.relname) AS drop
          FROM pg_index i JOIN pg_class ci ON ci.oid = i.indexrelid JOIN pg_class c ON c.oid = i.indrelid
          JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE i.indrelid IN (SELECT oid FROM wanted) AND NOT EXISTS (SELECT 1 FROM pg_constraint x WHERE x.conindid = i.indexrelid)
           AND NOT ci.relispartition
           AND NOT {seen_by_views("pg_class", "i.indexrelid")})
SELECT json_build_object(
  'foreign_keys', (SELECT coalesce(json_agg(json_build_array(tbl, make, drop, unchecked, validate) ORDER BY tbl, conname), '[]')
                   FROM cons WHERE contype = 'f'),
  'keys', (SELECT coalesce(json_agg(json_build_array(tbl, make, drop) ORDER BY tbl, conname), '[]') FROM cons WHERE contype <> 'f'),
  'indexes', (SELECT coalesce(json_agg(json_build_array(tbl, make, drop) ORDER BY tbl, relname), '[]') FROM idx))"""


def table_sizes_query():
    """JSON: every table's size ("sizes"), and the partitioned tables at the top ("parents") and
    the partitions below them ("partitions"), which are analyzed through their parents."""
    return ("SELECT json_build_object('sizes', coalesce(json_object_agg(format('%I.%I', n.nspname, c.relname), "
            "pg_total_relation_size(c.oid)), '{}'), 'parents', coalesce(json_agg(format('%I.%I', n.nspname, c.relname)) "
            "FILTER (WHERE c.relkind = 'p' AND NOT c.relispartition), '[]'), 'partitions', "
            "coalesce(json_agg(format('%I.%I', n.nspname, c.relname)) FILTER (WHERE c.relispartition), '[]')) "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') "
            "AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'")


def share_out(keys, sizes, jobs):
    """Statements on tables ((table, statement, ...) entries: building keys and indexes, checking
    foreign keys, analyzing), in `jobs` groups of about the same work: a table's statements stay
    together (one session per table: no waiting on each other's locks), the biggest tables
    first, each to the group with the least work so far."""
    by_table = {}
    for tbl, make, *_rest in keys:
        by_table.setdefault(tbl, []).append(make)
    groups = S.share_out({tbl: sizes.get(tbl, 0) for tbl in by_table}, jobs)
    return [[make for tbl in group for make in by_table[tbl]] for group in groups]


def literal(value):
    return sql.Literal(value).as_string(None)


def schema_owner_sql(grants):
    """The schemas' owners given back, before their privileges (after_load_toc): pg_dump writes
    those for the owner it recorded."""
    return "".join(f"DO $remigrate$ BEGIN IF EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = {literal(g['schema'])} "
                   f"AND pg_get_userbyid(nspowner) <> {literal(g['grantee'])}) THEN EXECUTE format('ALTER SCHEMA %I "
                   f"OWNER TO %I', {literal(g['schema'])}, {literal(g['grantee'])}); END IF; END $remigrate$;\n"
                   for g in grants if g["kind"] == "SCHEMA OWNER")


OWNED_KINDS = ("TABLE", "VIEW", "MATERIALIZED VIEW", "SEQUENCE", "FOREIGN TABLE", "FUNCTION", "PROCEDURE", "TYPE",
               "DOMAIN", "COLLATION")


def grant_sql(grants):
    """The owners and the privileges other roles had, given again on the relations and routines
    the new schema has (the migrations make everything the connected role's, its own privileges
    only): the owners first (ALTER ... OWNER TO hands the old owner's privileges to the new one),
    once the schemas' privileges are back (the new owner must be allowed to create there) and
    the materialized views refreshed (their owner's right)."""
    out = []
    for g in sorted(grants, key=lambda g: g["kind"] != "OWNER"):
        if g["kind"] == "OWNER":
            if g["what"] not in OWNED_KINDS:
                raise RemigrateError(f"the backup names an owned object of an unknown kind {g['what']!r}")
            if g["what"] in ("FUNCTION", "PROCEDURE"):  # by its arguments' types, whatever the search path
                find = (f"SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                        f"WHERE n.nspname = {literal(g['schema'])} AND " + (
                            f"{S.SIGNATURE} = {literal(g['signature'])}" if g.get("signature") else  # (older bundles)
                            f"p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')' = {literal(g['name'])}"))
            elif g["what"] in ("TYPE", "DOMAIN"):
                find = (f"SELECT t.oid::regtype::text FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
                        f"WHERE n.nspname = {literal(g['schema'])} AND t.typname = {literal(g['name'])}")
            elif g["what"] == "COLLATION":
                find = (f"SELECT format('%I.%I', n.nspname, c.collname) FROM pg_collation c JOIN pg_namespace n ON "
                        f"n.oid = c.collnamespace WHERE n.nspname = {literal(g['schema'])} AND c.collname = {literal(g['name'])}")
            else:
                find = (f"SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                        f"WHERE n.nspname = {literal(g['schema'])} AND c.relname = {literal(g['name'])}")
            out.append(f"DO $remigrate$ DECLARE target text; BEGIN {find} INTO target; IF target IS NOT NULL THEN "
                       f"EXECUTE format('ALTER {g['what']} %s OWNER TO %I', target, {literal(g['grantee'])}); "
                       "END IF; END $remigrate$;\n")
        if g["kind"] not in ("TABLE", "SEQUENCE"):  # the rest: schema_owner_sql and after_load_toc
            continue
        grantee = "PUBLIC" if g["grantee"] == "PUBLIC" else sql.Identifier(g["grantee"]).as_string(None)
        tail = f" TO {grantee}" + (" WITH GRANT OPTION" if g["grantable"] else "")
        if g.get("owned_by"):  # a column's sequence: found again by its column, whatever its name now
            table, column = g["owned_by"].rsplit(".", 1)
            target = (f"pg_get_serial_sequence({sql.Literal(pg_identifier(g['schema'], table)).as_string(None)}, "
                      f"{sql.Literal(column).as_string(None)})")
            body = (f"IF to_regclass({sql.Literal(pg_identifier(g['schema'], table)).as_string(None)}) IS NOT NULL "
                    f"AND {target} IS NOT NULL THEN EXECUTE 'GRANT {g['privilege']} ON SEQUENCE ' || {target} || "
                    f"{sql.Literal(tail).as_string(None)}; END IF;")
        else:
            name = pg_identifier(g["schema"], g["name"])
            statement = f"GRANT {g['privilege']} ON {g['kind']} {name}{tail}"
            body = (f"IF to_regclass({sql.Literal(name).as_string(None)}) IS NOT NULL THEN "
                    f"EXECUTE {sql.Literal(statement).as_string(None)}; END IF;")
        out.append(f"DO $remigrate$ BEGIN {body} END $remigrate$;\n")
    return "".join(out)


def load_post_sql(high_waters):
    """Triggers back on; every sequence set as sequences_sql sets it."""
    return """\
DO $$
DECLARE t text;
BEGIN
  FOR t IN SELECT DISTINCT format('%I.%I', n.nspname, c.relname) FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace WHERE NOT g.tgisinternal LOOP
    EXECUTE 'ALTER TABLE ' || t || ' ENABLE TRIGGER USER';
  END LOOP;
END $$;
""" + sequences_sql(high_waters)


def merged_high_waters(*lists):
    """{key: the highest high-water mark} over lists of sequences (the probe's pg_sequence_marks:
    how far each has gone, a descending one's value negated); see B.sequence_key."""
    out = {}
    for sequences in lists:
        for s in sequences or []:
            key = B.sequence_key(s)
            out[key] = max(out.get(key, s["high_water"]), s["high_water"])
    return out


def sequences_sql(high_waters):
    """Every sequence set by (table, column) to the greater of max(column) and the old high-water
    mark, so no id is ever reused (a renamed model's old sequence name is moot); a sequence of its
    own ((None, its quoted name)) moved on to its old mark, never back (either direction)."""
    ordered = sorted(high_waters.items(), key=lambda kv: (kv[0][0] or "", kv[0][1] or ""))
    rows = ",\n  ".join(
        f"({sql.Literal(t).as_string(None)}, {sql.Literal(c).as_string(None)}, {int(h)})" for (t, c), h in ordered
    ) or "(NULL, NULL, NULL)"
    return f"""\
CREATE TEMP TABLE remigrate_high_water (tbl text, col text, hw bigint);
INSERT INTO remigrate_high_water VALUES
  {rows};
DO $$
DECLARE r record; top bigint; old bigint;
BEGIN
  FOR r IN SELECT n.nspname, c.relname, a.attname,
                  pg_get_serial_sequence(format('%I.%I', n.nspname, c.relname), a.attname) AS seq
             FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
              AND n.nspname NOT IN ('pg_catalog', 'information_schema') LOOP
    CONTINUE WHEN r.seq IS NULL;
    EXECUTE format('SELECT max(%I)::bigint FROM %I.%I', r.attname, r.nspname, r.relname) INTO top;
    SELECT hw INTO old FROM remigrate_high_water
     WHERE col = r.attname AND tbl = CASE WHEN r.nspname = 'public' THEN r.relname ELSE r.nspname || '.' || r.relname END;
    top := GREATEST(coalesce(top, 0), coalesce(old, 0));
    IF top > 0 THEN PERFORM setval(r.seq, top, true); ELSE PERFORM setval(r.seq, 1, false); END IF;
  END LOOP;
END $$;
DO $$
DECLARE r record; dir int; now_value bigint; now_called boolean;
BEGIN
  -- a mark says how far a sequence has gone: its last value, negated for a descending one
  FOR r IN SELECT to_regclass(col) AS seq, hw FROM remigrate_high_water WHERE tbl IS NULL AND col IS NOT NULL LOOP
    CONTINUE WHEN r.seq IS NULL;
    SELECT sign(seqincrement) INTO dir FROM pg_sequence WHERE seqrelid = r.seq;
    EXECUTE format('SELECT last_value, is_called FROM %s', r.seq) INTO now_value, now_called;
    CONTINUE WHEN r.hw <= CASE WHEN now_called THEN dir * now_value ELSE dir * now_value - 1 END;
    PERFORM setval(r.seq, dir * r.hw, true);
  END LOOP;
END $$;
DROP TABLE remigrate_high_water;
"""


# A session held for a whole run must not be ended by the server's idle timeouts.
KEEP_SESSION = ("SET idle_in_transaction_session_timeout = 0; DO $$BEGIN PERFORM set_config('idle_session_timeout', "
                "'0', false); EXCEPTION WHEN undefined_object THEN NULL; END$$;")


SESSION_END = "REMIGRATE-END-"  # then 16 hex digits: where a statement's output in a held psql ends


class SessionEnded(RemigrateError):
    """A held psql ended while it was given a statement."""


def in_session(held, statement, db, ended):
    """Feed one statement to a held psql reading its standard input (no ON_ERROR_STOP), then lines
    that tell how it went and where its output ends; returns its output. An error is raised
    and leaves the session as it was; a session that ended raises `ended` (a text, or a
    function of nothing that makes the text)."""
    end = f"{SESSION_END}{secrets.token_hex(8)}"
    # the ";" on a line of its own: a statement may end in a -- comment
    held.stdin.write(f"\\set ON_ERROR_STOP off\n{statement.strip().rstrip(';')}\n;\n"
                     f"\\if :ERROR\n\\echo {end}-failed :LAST_ERROR_MESSAGE\n\\endif\n\\echo {end}\n")
    lines = []
    while (line := held.next_line()) != end:
        if line is None:
            raise SessionEnded(ended() if callable(ended) else ended)
        lines.append(line)
        if re.fullmatch(f"{SESSION_END}[0-9a-f]{{16}}", line):  # the end of an earlier statement whose
            lines = []  # reader was interrupted (Ctrl-C): its output is not this one's
    failed = next((i for i, line in enumerate(lines) if line.startswith(f"{end}-failed ")), None)
    if failed is not None:
        message = "\n".join([lines[failed][len(end) + 8:], *lines[failed + 1:]])
        raise RemigrateError(explain_pg_error(f"ERROR:  {message}", db))
    return "\n".join(lines).strip()


def advisory_key(name):
    """The server-side lock key of a database: 60 bits of a hash of its name (the lock lives on
    its server, so however a client spells the host, one database has one key)."""
    return int(hashlib.sha256(f"remigrate:{name}".encode("utf-8")).hexdigest()[:15], 16)


def lock_holder_sql(key):
    """Who holds the advisory lock `key`: pid, client, application and since when."""
    return ("SELECT format('pid %s from %s (%s) since %s', a.pid, coalesce(host(a.client_addr), 'the local socket'), "
            "a.application_name, a.backend_start::timestamp(0)) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
            f"AND ((l.classid::bigint << 32) | l.objid::bigint) = {int(key)}")


class LiveDatabaseKept(RemigrateError):
    """The reset stopped before the live database was changed (writes found, sessions still open):
    a rollback puts back the migration files only."""


class StrangerDatabase(RemigrateError):
    """A database under the live name that the reset did not make nor replace: nothing is done to
    it, no rollback either (it would refuse the same way); the run stays interrupted."""


WRITES = "writes during the reset: "  # the probe's words for it


def keep_live(call):
    """Run a probe call that checks the live database before changing it; its refusals mean the
    database was left as it is."""
    try:
        return call()
    except RemigrateError as exc:
        text = str(exc)
        if text.startswith(WRITES) or "other sessions are still connected" in text:
            raise LiveDatabaseKept(text.replace(WRITES, "", 1)) from None
        raise


def content_args(content, upto, digest=None):
    """The probe's arguments for a stats call: with `content`, every table's digest, made the
    way `digest` says (a bundle's; default: the best the server has)."""
    return (["content", json.dumps(upto or {}), *(["digest", digest] if digest else [])] if content else [])


class Engine:
    name = ""
    dump_file = ""
    dumps_tables = False
    # whether a reset that does not touch the live database before it is verified may check the
    # backup's dump while it builds the new one (SQLite: the live file is replaced last); such an
    # engine has start_deferred_check(path) and deferred_check(path) too
    defers_dump_check = False

    def __init__(self, project):
        self.project = project
        self.target = project.target
        self.db = project.db

    def check_running(self):
        """Whether a deferred check of this run's dump is running."""
        return False

    def settle(self):
        """A deferred check still running is waited for (a run that failed before it needed it)."""


class Postgres(Engine):
    name = "postgresql"
    dump_file = "db.dump"
    dumps_tables = True  # dump_tables: some tables only

    def __init__(self, project):
        super().__init__(project)
        self._pgpass = None
        self._lock = None  # the session holding the server lock, while a run holds it
        self._lock_use = threading.Lock()  # one statement at a time in it
        self.versions = {}
        self.missing = False  # the database does not exist (found by preflight)

    def env(self):
        if self.db.password and self._pgpass is None:
            self._pgpass = posixpath.join(self.project.workdir, "pgpass")
            self.target.write_private(self._pgpass, pgpass_line(self.db.user, self.db.password))
        return pg_env(self.db, self._pgpass)

    def tool(self, argv, what, **kw):
        return self.target.run(argv, env=self.env(), what=what, **kw)

    def psql(self, statement, dbname=None, what="psql"):
        argv = ["psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", *pg_conn_args(self.db, dbname), "-c", statement]
        result = self.target.run(argv, env=self.env(), what=what, check=False)
        if result.exited != 0:
            raise RemigrateError(explain_pg_error(result.stderr, self.db))
        return result.stdout.strip()

    def tool_versions(self, tools=PG_TOOLS):
        """(major, minor) of each client program, asked in one command on the target."""
        script = 'for t in "$@"; do printf "%s: " "$t"; "$t" --version 2>/dev/null || echo; done'
        lines = self.target.run(["sh", "-c", script, "sh", *tools], check=False).stdout.splitlines()
        answers = dict(line.split(": ", 1) for line in lines if ": " in line)
        versions = {}
        for tool in tools:
            versions[tool] = parse_tool_version(answers.get(tool))
            if not versions[tool]:
                raise RemigrateError(f"{tool} not found on {self.target.name}; install the PostgreSQL client programs "
                                     "(Debian/Ubuntu: apt-get install postgresql-client) or put them on PATH")
        return versions

    def preflight(self, archive_version=None, digest=None):
        """Client programs present and new enough, server reachable with these credentials
        (checked once per task; a later call only compares the archive's version, and whether
        the server can make a bundle's `digest` to check the rows against)."""
        if "server" not in self.versions:
            self.versions.update(self.tool_versions())
            try:
                server = int(self.psql("SHOW server_version_num", what="connecting to PostgreSQL"))
            except RemigrateError as exc:
                text = str(exc)
                closed = "not currently accepting connections" in text
                if not closed and not ("does not exist" in text and "database" in text):
                    raise
                # a reset killed after closing the database, or between DROP and CREATE: the server
                # answers on its maintenance database; rollback or restore put the database back
                server = int(self.maintenance("SHOW server_version_num", "connecting to PostgreSQL"))
                self.missing = not closed
            self.versions["server"] = (server // 10000, server % 10000)
        major, minor = self.versions["server"]
        compress = self.project.options.compress
        if not compress.isdigit() and compress != "auto" and self.versions["pg_dump"][0] < 16:
            raise RemigrateError(f"--compress {compress}: pg_dump {self.versions['pg_dump'][0]} takes only a level 0-9 "
                                 "(methods need pg_dump 16 or newer); nothing was changed")
        if self.versions["pg_dump"][0] < major:
            raise RemigrateError(f"pg_dump {self.versions['pg_dump'][0]} is older than the server ({major}); "
                                 f"install postgresql-client-{major} or newer")
        if archive_version and self.versions["pg_restore"] < tuple(archive_version):
            raise RemigrateError(f"the backup was made by pg_dump {archive_version[0]}, newer than pg_restore "
                                 f"{self.versions['pg_restore'][0]} here; install a newer postgresql-client")
        if digest and digest not in S.KNOWN_DIGESTS:
            raise RemigrateError(f"the bundle's row digests are made the {digest!r} way, which this remigrate does not know "
                                 f"(it knows {', '.join(S.KNOWN_DIGESTS)}): check it with the version that made it; "
                                 "nothing was changed")
        if digest == S.HASH_RECORD and major < 14:
            raise RemigrateError(f"the bundle's row digests ({digest}) need PostgreSQL 14 or newer to be checked and this "
                                 f"server is {major}; restore it on PostgreSQL 14 or newer (or by hand with pg_restore, "
                                 "unchecked); nothing was changed")
        return {"server_version_num": major * 10000 + minor}

    def stats(self, content=False, upto=None, db_name=None, fk_check=True, digest=None, against=None):
        """Row counts, sequences, objects; with content, a digest of every table's rows (`upto`:
        table -> highest key to include; `digest`: a bundle's way of making them); of the database
        built beside when `db_name` names it. (The server enforces foreign keys: there is nothing
        for `fk_check` to count; `against` is SQLite's.)"""
        return self.project.probe("stats", *content_args(content, upto, digest), what="counting rows", db_name=db_name)

    def size_estimate(self, stats):
        return int(stats["properties"]["size_bytes"])

    def dump(self, path, compress="1"):
        """pg_dump (`compress`: its --compress) and the content digests of the manifest at the same
        time, from one snapshot that a session exports and holds meanwhile: the digests describe
        exactly the rows in the dump, and the database is read once for each instead of digests
        before and after."""
        # The write counters are read before the snapshot is taken: a write that commits after it is
        # counted later than this read, whenever its statistics reach the server (see pg-close).
        holder = self.target.hold(["psql", "-X", "-At", "-q", "-v", "ON_ERROR_STOP=1", *pg_conn_args(self.db),
                                   "-c", KEEP_SESSION, "-c", S.WRITE_COUNTERS_SQL,
                                   "-c", "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; "
                                   "SELECT pg_export_snapshot() || ' ' || txid_current_snapshot();", "-f", "-"],
                                  env=self.env())
        try:
            counters = (holder.next_line(timeout=60) or "").strip()
            snapshot, _, xids = (holder.next_line(timeout=60) or "").strip().partition(" ")
            if not re.fullmatch(r"[0-9A-Fa-f]+-[0-9A-Fa-f]+(-[0-9]+)?", snapshot):
                raise RemigrateError("could not export a snapshot for the backup: "
                                     + explain_pg_error(holder.release().stderr, self.db))
            dumping = self.target.hold(["pg_dump", "--format=custom", f"--compress={compress}",
                                        f"--snapshot={snapshot}", f"--file={path}", *pg_conn_args(self.db)], env=self.env())
            try:
                stats = self.project.probe("stats", *content_args(True, None), "snapshot", snapshot,
                                           what="reading the backup's rows")
            finally:
                dumped = dumping.release()
            if dumped.exited != 0:
                failed = CommandFailed("pg_dump", dumped)
                known = known_pg_error(failed.stderr, self.db)
                raise RemigrateError(f"pg_dump failed: {known}") if known else failed
        finally:
            holder.release()
        return {"tool": "pg_dump", "tool_version": self.pg_dump_version(),
                "compress": compress, "xids": xids,
                "write_counters": json.loads(counters) if counters.startswith("{") else None, "stats": stats}

    def pg_dump_version(self):
        return list(self.versions.get("pg_dump") or self.tool_versions(["pg_dump"])["pg_dump"])

    def dump_tables(self, path, tables):
        """pg_dump of only `tables` ("schema.name"), whole (definitions, rows, keys, indexes, owned
        sequences, privileges): what a fake reset run with --no-backup drops, for its rollback."""
        def pattern(key):  # quoted: no wildcard, no case folding
            return ".".join('"' + part.replace('"', '""') + '"' for part in S.pg_key_parts(key))
        self.tool(["pg_dump", "--format=custom", "--compress=0", "--strict-names",
                   *[f"--table={pattern(t)}" for t in tables], f"--file={path}", *pg_conn_args(self.db)],
                  what="dumping the tables the fake drops")
        return {"tool": "pg_dump", "tool_version": self.pg_dump_version(),
                "compress": "0", "scope": sorted(tables)}

    def verify_dump(self, path, meanwhile=lambda: None):
        """A full read of the archive (`pg_restore -l` alone accepts a truncated one), while
        `meanwhile` runs (the checksums: both read the file just written, on two cores)."""
        listing = self.target.run(["pg_restore", "--list", path], what="reading the backup's table of contents").stdout
        reading = self.target.hold(["pg_restore", "--file=/dev/null", path])
        try:
            meanwhile()
        finally:
            read = reading.release()
        if read.exited != 0:
            raise CommandFailed("reading the whole backup", read)
        match = re.search(r"Dumped by pg_dump version: (\d+)\.(\d+)", listing)
        return {"dumped_by": [int(match.group(1)), int(match.group(2))] if match else None,
                "entries": sum(1 for ln in listing.splitlines() if ln and not ln.startswith(";"))}

    def restore(self, path, manifest, current):
        """Put the database back as it was: in one transaction, drop what the backup did not have,
        then the backup's own --clean script (drops and recreates every object it holds)."""
        known = {(r["schema"], r["name"]) for r in manifest["database"]["relations"]}
        extra = [r for r in current["relations"] if (r["schema"], r["name"]) not in known]
        pre = posixpath.join(self.project.workdir, "pre-restore.sql")
        self.target.write_private(pre, DROP_FOREIGN_KEYS + DROP_PARTITIONED + drop_statements(extra))
        restore_script = ["pg_restore", "--clean", "--if-exists", "--file=-", path]
        # The public schema's owner is left as the database has it when this role may not give it
        # back: a superuser's after pg_upgrade from PostgreSQL 14 or older, which a new database
        # does not have (the plan lets that be: every database has a public schema of its own).
        listing = self.target.run(["pg_restore", "--list", path], what="reading the backup's table of contents").stdout
        public = [(line, desc.split()[3]) for line, desc in toc_entries(listing)
                  if desc.startswith("SCHEMA - public ") and len(desc.split()) > 3]
        if public and self.psql(f"SELECT pg_has_role(current_user, oid, 'MEMBER') FROM pg_roles WHERE rolname = "
                                f"{literal(public[0][1])}", dbname="postgres", what="checking who owns public") != "t":
            kept = posixpath.join(self.project.workdir, "restore-toc")
            self.target.write_private(kept, "".join(f"{line}\n" for line, _ in toc_entries(listing)
                                                    if line != public[0][0]), replace=True)
            restore_script.insert(1, f"--use-list={kept}")
        apply = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction", *pg_conn_args(self.db), "-f", "-"]
        line = pipeline(group(["cat", pre], restore_script), apply, env=self.env())
        try:
            self.target.shell(line, what="pg_restore into the database")
        except CommandFailed as exc:
            raise RemigrateError(f"restore failed and was rolled back (one transaction): {explain_pg_error(str(exc), self.db)}")
        return {"dropped_extra": [f"{r['schema']}.{r['name']}" for r in extra]}

    # ---- reset: rebuild in place
    def check_rebuild_rights(self, stats):
        """Dropping is only safe if we can create it again: "dropped, cannot create" is a real incident."""
        props = stats["properties"]
        if not (props["superuser"] or props["createdb"]):
            raise RemigrateError(f"role {props['connected_as']} may not create databases, so the rebuild could drop {self.db.name} "
                                 f"and fail to create it; grant it first: ALTER ROLE {props['connected_as']} CREATEDB")
        if props["owner"] != props["connected_as"] and not props["superuser"]:
            raise RemigrateError(f"database {self.db.name} is owned by {props['owner']}, not {props['connected_as']}; "
                                 "connect as its owner to reset it")

    def _locked_session(self):
        """A psql held on the maintenance database that has taken this database's advisory lock
        (it holds it for as long as it lives); raises if another session holds it."""
        key = advisory_key(self.db.name)
        argv = ["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", *pg_conn_args(self.db, "postgres"),
                "-c", KEEP_SESSION, "-c", f"SELECT pg_try_advisory_lock({key})", "-f", "-"]
        held = self.target.hold(argv, env=self.env())
        answer = held.next_line(timeout=30)
        answer = answer and answer.strip()
        if answer != "t":
            result = held.release()
            if answer == "f":
                who = self.psql(lock_holder_sql(key), dbname="postgres", what="finding who holds the lock")
                raise RemigrateError(f"another remigrate run is working on database {self.db.name}: it holds its lock on "
                                     f"the server (session {who or 'that has just ended'}); wait for it to finish")
            raise RemigrateError("could not take the lock on the server: " + explain_pg_error(result.stderr, self.db))
        return held

    @contextlib.contextmanager
    def server_lock(self):
        """An advisory lock on the server for the length of a run, held by a session on the
        maintenance database (the rebuild drops the database itself): no second run, from this
        machine or another, works on the same database meanwhile. The session ends with this
        process, however it ends, so a killed run never leaves the lock behind."""
        self._lock = self._locked_session()
        try:
            yield
        finally:
            lock, self._lock = self._lock, None
            lock.release()

    def check_lock(self):
        """Before a step that cannot be undone: the lock is still this run's. If the session that
        held it has ended (a server restart, a proxy that cut it, Ctrl-C, which psql takes too),
        it is taken again in a new one; if another run has it by then, the run stops."""
        if self._lock is not None and self._lock.finished:
            self._relock()

    def _relock(self):
        self._lock.release()
        try:
            self._lock = self._locked_session()
        except RemigrateError as exc:
            raise RemigrateError(f"the session holding this run's lock on the server has ended and the lock could not be "
                                 f"taken again ({exc}); stopped before changing the database any further")

    def maintenance(self, statement, what):
        """One statement on the maintenance database (DROP/CREATE DATABASE cannot run in a transaction
        or on the database itself): in the session holding the run's lock while there is one (a
        reset makes some 20 of these; each psql started for one costs a connection), else in a
        psql of its own. A lock's session that has ended is replaced first (check_lock), so every
        statement of a run, its rollback's too, runs while the run holds the lock."""
        if self._lock is None or self.versions.get("psql", (0,)) < (11,):  # psql 11: the ERROR variable
            return self.psql(statement, dbname="postgres", what=what)
        with self._lock_use:
            self.check_lock()
            try:
                return in_session(self._lock, statement, self.db, ended=f"{what}: the lock's session ended")
            except SessionEnded:  # as it was given the statement (Ctrl-C, a cut connection), before answering
                self._relock()
                return in_session(self._lock, statement, self.db, ended=f"{what}: the lock's session ended while "
                                  "it ran (whether it took effect is not known)")

    @contextlib.contextmanager
    def session(self, dbname):
        """A function that runs one statement in a psql kept open on `dbname` for the length of
        the block (statements in a row, not one psql and connection each); a psql of its own
        per statement when the client cannot say how a statement went (before psql 11)."""
        if self.versions.get("psql", (0,)) < (11,):
            yield lambda statement, what: self.psql(statement, dbname=dbname, what=what)
            return
        held = self.target.hold(["psql", "-X", "-q", "-At", *pg_conn_args(self.db, dbname), "-f", "-"], env=self.env())
        try:
            def ask(statement, what):
                return in_session(held, statement, self.db, ended=lambda: f"{what}: the session on {dbname} ended: "
                                  + explain_pg_error(held.release().stderr, self.db))
            yield ask
        finally:
            held.release()

    @property
    def beside(self):
        return build_name(self.db.name)

    def exists(self, name=None):
        return bool(self.oid(name))

    def create_from_archive(self, dump_path, name=None):
        """CREATE DATABASE with the archive's encoding, locale, owner, settings, grants and comment
        (under `name` when it is built beside the live name)."""
        script = self.target.run(["pg_restore", "--create", "--schema-only", "--file=-", dump_path],
                                 what="reading the database properties from the backup").stdout
        for original in database_statements(script):
            statement = retarget(original, self.db.name, name) if name and name != self.db.name else original
            if not statement.startswith("ALTER ROLE "):
                self.maintenance(statement, "creating the database")
                continue
            try:  # another role's setting needs CREATEROLE: its loss is said, never a database left uncreated
                self.maintenance(statement, "giving a role its setting in the database")
            except RemigrateError as exc:
                warn(f"a role's setting in the database could not be given back ({str(exc).splitlines()[0][:200]}); "
                     f"give it as a superuser: {original}")

    def drop(self, name=None):
        ident = sql.Identifier(name or self.db.name).as_string(None)
        # No new sessions while it goes; FORCE ends the open ones (ours and the application's).
        self.maintenance(f"ALTER DATABASE {ident} ALLOW_CONNECTIONS false", "closing the database to new sessions")
        try:
            try:  # a plain DROP stops an autovacuum worker in it (FORCE refuses to end one for an ordinary role)
                self.maintenance(f"DROP DATABASE {ident}", "dropping the database")
            except RemigrateError:  # sessions still in it
                self.maintenance(f"DROP DATABASE {ident} WITH (FORCE)", "dropping the database")
        except RemigrateError:
            self.maintenance(f"ALTER DATABASE {ident} ALLOW_CONNECTIONS true", "reopening the database")
            raise

    def close(self, manifest, sessions):
        """No new sessions; the open ones ended (--end-sessions) or waited for; then proof that
        nothing was written since the backup."""
        expected = posixpath.join(self.project.workdir, "expected-content.json")
        self.target.write_private(expected, json.dumps(manifest["database"]["content"]), replace=True)
        counters = posixpath.join(self.project.workdir, "write-counters.json")
        self.target.write_private(counters, json.dumps(manifest["dump"].get("write_counters")), replace=True)
        closed = keep_live(lambda: self.project.probe("pg-close", "digest", B.content_digest(manifest), expected,
                                                      "1" if sessions.get("end") else "0",
                                                      str(sessions.get("wait", 30)), manifest["dump"].get("xids", ""),
                                                      counters, what="closing the database"))
        say(f"    nothing written since the backup: {closed['checked']}")
        return closed

    def raise_sequences(self, sequences):
        """The new database's sequences raised to the live one's marks (`sequences`, read once it
        was closed): an id handed out since the backup, to a row deleted since, is never reused."""
        self.run_sql([[sequences_sql(merged_high_waters(sequences))]], "raise-sequences",
                     "raising the new database's sequences to the live ones'")

    def swapped(self, phases):
        """Whether the database built beside has taken the live name (the rename consumes it)."""
        return "swap" in phases and not self.exists(self.beside)

    def reopen(self, name=None):
        """Let sessions in again (after a reset stopped between closing and dropping, or before a
        swap), and drop a database left half-built beside it; an open database is left alone (no
        transaction: see the close's proof)."""
        if name is None and self.exists(self.beside):
            self.drop(self.beside)
        closed = self.maintenance(f"SELECT count(*) FROM pg_database WHERE NOT datallowconn AND datname = "
                                  f"{sql.Literal(name or self.db.name).as_string(None)}", "looking for the database") == "1"
        if closed:
            self.maintenance(f"ALTER DATABASE {sql.Identifier(name or self.db.name).as_string(None)} ALLOW_CONNECTIONS true",
                             "reopening the database")

    def rebuild_and_load(self, bundle_path, manifest, skip, journal, sessions=None, strategy="rebuild"):
        """rebuild: the live database closed, checked unchanged and dropped first. swap: the live
        database stays open meanwhile (its writes are looked for when it is closed for the swap).
        Then the new one is built, loaded and given its content types under another name (the
        application cannot reach it: its connections fail with "database does not exist" there)."""
        phases = [p["phase"] for p in journal.data["phases"]]
        if self.swapped(phases):
            return  # a resumed run: the new database has the live name already
        dump = posixpath.join(bundle_path, manifest["dump"]["file"])
        if self.exists():
            journal.data.setdefault("live_oid", self.oid())  # the database this run replaces (a rollback may drop only it)
            journal.save()
        if strategy == "swap":  # a resumed run: the live database may be closed, set aside, a half-built one beside
            if not self.undo_swap(journal.data):
                self.reopen()
        else:
            if self.exists() and "drop" not in phases:  # a resumed run after the drop: the live name is ours
                journal("close")
                self.reopen()  # a resumed run may find it closed by the run that died
                journal.data["live_sequences"] = self.close(manifest, sessions or {}).get("sequences", [])
                journal.save()  # the marks to keep, for a run resumed once the live database is gone
            journal("drop")
            self.check_lock()
            if self.exists():
                self.refuse_a_stranger(journal.data, "then run `inv reset --resume` or `inv rollback`")
                self.drop()
            inject_fault("dropped")  # the moment with no database at all
        if self.exists(self.beside):  # left by a run that died while building
            self.drop(self.beside)
        self.create_from_archive(dump, self.beside)
        journal.data["build_oid"] = self.oid(self.beside)
        journal.save()
        journal("migrate")
        self.project.manage("migrate", "--noinput", db_name=self.beside)
        journal("load")
        self.load(dump, manifest, skip, journal.data.get("live_sequences"))
        journal("content-types")
        self.project.probe("content-types", what="adding content types of new models", db_name=self.beside)

    def refuse_a_stranger(self, journal, then):
        """A database under the live name that is neither the one the run replaces nor the one it
        built (made by someone, or restored by hand, while the run was interrupted) is never
        dropped: the run stops and says so."""
        ours = {journal.get("live_oid"), journal.get("build_oid"), journal.get("restore_oid")} - {None}
        if ours and self.exists() and self.oid() not in ours:
            raise StrangerDatabase(f"a database named {self.db.name} was created by someone else while the reset ran (it is "
                                 "neither the one the reset dropped nor the one it built); it was left as it is: move it "
                                 f"away (ALTER DATABASE ... RENAME), {then}")

    def oid(self, name=None):
        """The database's oid ('' when there is none by that name)."""
        return self.maintenance(f"SELECT oid FROM pg_database WHERE datname = "
                                f"{sql.Literal(name or self.db.name).as_string(None)}", "looking for the database")

    def swap_in(self, manifest, keep=None, bundle_path=None):
        """The verified new database takes the live name; with `keep` (a swap), the live database,
        closed and proven unchanged since the backup, is renamed to `keep` first and stays.
        (`bundle_path` is SQLite's.)"""
        self.check_lock()
        live = sql.Identifier(self.db.name).as_string(None)
        if keep:
            self.maintenance(f"ALTER DATABASE {live} RENAME TO {sql.Identifier(keep).as_string(None)}",
                             "moving the live database aside")
            inject_fault("swap-half")  # the moment between the two renames
        if self.exists():
            raise RemigrateError(f"a database named {self.db.name} was created while the new one was built; "
                                 "the new database was not put in its place")
        self.maintenance(f"ALTER DATABASE {sql.Identifier(self.beside).as_string(None)} RENAME TO {live}",
                         "giving the new database the live name")

    def kept_path(self, run_id):
        return kept_name(self.db.name, run_id)

    def room_for_copy(self):
        """Free bytes where a second copy of the database would go, or (None, why not known): the
        server's data folder is seen only from its own machine, by a role that may read it."""
        if self.db.host and self.db.host not in ("localhost", "127.0.0.1", "::1") and not self.db.host.startswith("/"):
            return None, f"the server {self.db.host} is another machine"
        try:
            folder = self.psql("SHOW data_directory", what="finding the server's data folder")
        except RemigrateError:
            return None, "this role may not see the server's data folder"
        return self.project.probe("free-space", folder, what="measuring free disk")["free_bytes"], folder

    def undo_swap(self, journal):
        """After a swap (or a run killed during it): the database kept aside takes the live name
        back, whatever of the new one is left goes. False when it is no longer there (cleaned
        up): the caller restores from the backup instead."""
        keep, live_oid, build_oid = journal.get("kept"), journal.get("live_oid"), journal.get("build_oid")
        now = self.oid()
        if not keep or (now != live_oid and self.oid(keep) != live_oid):
            return False
        if now and now not in (live_oid, build_oid):
            raise RemigrateError(f"a database named {self.db.name} was created by someone else after the swap (it is "
                                 "neither the one the reset kept nor the one it built); it was left as it is: move it "
                                 "away (ALTER DATABASE ... RENAME), then run `inv rollback`")
        if now == build_oid:  # the application may have written to it since the swap: set aside, never dropped
            journal["rejected"] = self.set_aside(self.db.name, self.rejected_path(journal.get("run_id", "run")))
            inject_fault("rollback-set-aside")  # the moment with the live name free, the kept one not yet renamed
        if self.exists(self.beside):
            self.drop(self.beside)
        if self.oid(keep) == live_oid:
            self.maintenance(f"ALTER DATABASE {sql.Identifier(keep).as_string(None)} RENAME TO "
                             f"{sql.Identifier(self.db.name).as_string(None)}", "giving the kept database its name back")
        self.reopen(self.db.name)
        return True

    def set_aside(self, name, new_name):
        """Rename a database that sessions may be using: closed to new ones, the open ones ended,
        then renamed (and left closed). Returns the new name."""
        ident = sql.Identifier(name).as_string(None)
        self.maintenance(f"ALTER DATABASE {ident} ALLOW_CONNECTIONS false", "closing the database to new sessions")
        for attempt in range(20):  # an ended session may take a moment to go
            self.maintenance(f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = "
                             f"{sql.Literal(name).as_string(None)} AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
                             "ending its sessions")
            try:
                self.maintenance(f"ALTER DATABASE {ident} RENAME TO {sql.Identifier(new_name).as_string(None)}",
                                 "setting the database aside")
                return new_name
            except RemigrateError:
                if attempt == 19:
                    raise
                time.sleep(0.25)

    def restore_tables(self, bundle_path, manifest, tables):
        """Tables a fake dropped made again in the live database from the backup, whole (rows,
        keys, indexes, sequences, privileges), in one transaction; nothing else is touched, so
        what the application wrote elsewhere since the backup stays."""
        dump = posixpath.join(bundle_path, manifest["dump"]["file"])
        listing = self.target.run(["pg_restore", "--list", dump], what="reading the backup's table of contents").stdout
        toc = posixpath.join(self.project.workdir, "tables-toc")
        self.target.write_private(toc, table_entries(listing, tables), replace=True)
        self.tool(["pg_restore", "--exit-on-error", "--single-transaction", f"--use-list={toc}",
                   *pg_conn_args(self.db), dump], what="bringing the dropped tables back from the backup")

    def rejected_path(self, run_id):
        return rejected_name(self.db.name, run_id)

    def kept_exists(self, name):
        return self.exists(name)

    def remove_kept(self, name):
        self.drop(name)

    def new_tables(self, ask):
        out = ask("SELECT coalesce(json_agg(json_build_array(schemaname, tablename)), '[]') FROM pg_tables "
                  "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')", "listing the new tables")
        return {tuple(x) for x in json.loads(out)}

    def load(self, dump, manifest, skip, live_sequences=None):
        """The backup's rows into the new schema the way pg_restore loads a whole archive: its keys,
        indexes and foreign keys are taken out (their definitions kept), the table data is
        loaded by `jobs` sessions at once, then keys and indexes are built in parallel and each
        foreign key is added back and checked with one query (not one check per row). Nothing of
        this is visible: the database is built beside the live one, and a failure drops it.
        django_migrations and the removed tables are not loaded. Sequences: at least the backup's
        marks and `live_sequences` (the live database's, read when it was closed)."""
        with self.session(self.beside) as ask:  # its reads, in one session
            self._load(dump, manifest, skip, ask, live_sequences)

    def _load(self, dump, manifest, skip, ask, live_sequences=None):
        owners = {(r["schema"], r["name"]): r.get("owner", "") for r in manifest["database"]["relations"]}
        keep = [(s, n, owners[(s, n)]) for (s, n) in sorted(self.new_tables(ask))
                if (s, n) in owners and n != "django_migrations" and (n if s == "public" else f"{s}.{n}") not in skip]
        listing = self.target.run(["pg_restore", "--list", dump], what="reading the backup's table of contents").stdout
        parts = json.loads(ask(keys_query([(s, n) for s, n, _ in keep]), "reading the new schema's keys and indexes"))
        out_of_the_way = [entry[2] for kind in ("foreign_keys", "keys", "indexes") for entry in parts[kind]]
        self.run_sql([[LOAD_PRE_SQL, *out_of_the_way]], "load-pre", "preparing the new schema")
        work = self.project.workdir
        toc = filter_toc(listing, keep)
        self.target.write_private(posixpath.join(work, "load-toc"), toc)
        jobs = self.jobs(ask)
        took, timer = [], Timer()
        restore = ["pg_restore", "--data-only", "--verbose", f"--jobs={jobs}", f"--use-list={posixpath.join(work, 'load-toc')}",
                   *pg_conn_args(self.db, self.beside), dump]
        self.target.watched(command_line(restore, env=self.env()), what="loading the data into the new schema",
                            on_line=counter("loading the rows", len(toc.splitlines()), "tables",
                                            lambda line: "processing data for table" in line))
        took.append(f"rows {timer}")
        timer = Timer()
        tables = json.loads(ask(table_sizes_query(), "measuring the loaded tables"))
        sizes = tables["sizes"]
        keys = parts["keys"] + parts["indexes"]
        self.run_sql(share_out(keys, sizes, jobs), "load-keys", "building keys and indexes",
                     progress=("building keys and indexes", len(keys), "indexes"))
        took.append(f"{len(keys)} keys and indexes {timer}")
        timer = Timer()
        fks = parts["foreign_keys"]
        post = ([unchecked or make for _t, make, _d, unchecked, _v in fks]
                + [load_post_sql(merged_high_waters(manifest["database"]["sequences"], live_sequences)),
                   schema_owner_sql(manifest["database"].get("grants", []))])
        self.run_sql([post], "load-post", "adding the foreign keys back")
        # each foreign key checked with one query, and every table analyzed: a table's in one
        # session (no session waits for another's lock), the tables shared out by size; a
        # partitioned table last, on its own (its ANALYZE takes every partition's too)
        through_parent = set(tables["parents"]) | set(tables["partitions"])
        checks = [(tbl, validate) for tbl, _m, _d, _u, validate in fks if validate]
        checks += [(tbl, f"ANALYZE {tbl};") for tbl in sorted(sizes) if tbl not in through_parent]
        self.run_sql(share_out(checks, sizes, jobs), "load-check", "checking the foreign keys and analyzing",
                     progress=("checking foreign keys (one query each) and analyzing", len(checks), "steps"))
        if tables["parents"]:
            self.run_sql([[f"ANALYZE {tbl};" for tbl in sorted(tables["parents"])]], "load-analyze",
                         "analyzing the partitioned tables")
        took.append(f"{len(fks)} foreign keys checked and statistics {timer}")
        # (read before the live database's comments come back: a key's or an index's is part of it)
        again = json.loads(ask(keys_query([(s, n) for s, n, _ in keep]), "reading the new schema's keys and indexes"))
        if again != parts:
            raise RemigrateError("the keys, indexes and foreign keys of the new schema are not all back after the load")
        # read with pg_dump's own search path (none): a routine's arguments of a type outside
        # pg_catalog are written schema-qualified in the archive's tags, and so here
        ask("SELECT set_config('search_path', '', false)", "reading the routines as pg_dump names them")
        made = json.loads(ask("SELECT json_build_object('schemas', (SELECT coalesce(json_agg(n.nspname), '[]') FROM "
                              f"pg_namespace n WHERE {S.USER_SCHEMAS}), 'relations', (SELECT coalesce(json_agg("
                              "json_build_array(n.nspname, c.relname)), '[]') FROM pg_class c JOIN pg_namespace n ON "
                              f"n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND {S.USER_SCHEMAS}), "
                              "'matviews', (SELECT coalesce(json_agg(json_build_array(schemaname, matviewname)), '[]') "
                              "FROM pg_matviews), 'routines', (SELECT coalesce(json_agg(json_build_array(n.nspname, "
                              "p.proname, pg_get_function_identity_arguments(p.oid))), '[]') FROM pg_proc p JOIN "
                              f"pg_namespace n ON n.oid = p.pronamespace WHERE {S.USER_SCHEMAS}), 'types', (SELECT "
                              "coalesce(json_agg(json_build_array(n.nspname, t.typname)), '[]') FROM pg_type t JOIN "
                              f"pg_namespace n ON n.oid = t.typnamespace WHERE {S.USER_SCHEMAS} AND {S.OWN_TYPES}), "
                              "'collations', (SELECT coalesce(json_agg(json_build_array(n.nspname, c.collname)), '[]') "
                              "FROM pg_collation c JOIN pg_namespace n ON n.oid = c.collnamespace WHERE "
                              f"{S.USER_SCHEMAS}), 'parts', (SELECT coalesce(json_agg(json_build_array(p.kind, n.nspname, "
                              "p.name, p.tbl)), '[]') FROM (SELECT 'INDEX' AS kind, c.relnamespace AS nsp, c.relname AS "
                              "name, NULL AS tbl FROM pg_class c WHERE c.relkind IN ('i', 'I') UNION ALL SELECT 'TRIGGER', "
                              "c.relnamespace, g.tgname, c.relname FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid "
                              "WHERE NOT g.tgisinternal UNION ALL SELECT 'CONSTRAINT', c.relnamespace, k.conname, c.relname "
                              "FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid UNION ALL SELECT 'DOMAIN "
                              "CONSTRAINT', t.typnamespace, k.conname, t.typname FROM pg_constraint k JOIN pg_type t ON "
                              "t.oid = k.contypid) p JOIN pg_namespace n ON "
                              f"n.oid = p.nsp WHERE {S.USER_SCHEMAS}))",
                              "listing the new schemas, relations, routines and materialized views"))
        ask("RESET search_path", "reading the routines as pg_dump names them")
        after = after_load_toc(listing, made["relations"], made["schemas"], made["matviews"], made["routines"],
                               made["types"], made["collations"], made["parts"])
        if after:
            self.target.write_private(posixpath.join(work, "after-load-toc"), after, replace=True)
            script = ["pg_restore", f"--use-list={posixpath.join(work, 'after-load-toc')}", "--file=-", dump]
            apply = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction", *pg_conn_args(self.db, self.beside),
                     "-f", "-"]
            self.target.shell(pipeline(script, apply, env=self.env()),
                              what="giving back the privileges on schemas and columns, the default privileges and "
                                   "the comments, refreshing the materialized views")
        owners = grant_sql(manifest["database"].get("grants", []))
        if manifest["database"].get("comments") is not None:  # (recorded since remigrate kept comments)
            # a comment the live database did not have (the new history's, or the old one's carried,
            # taken away by hand since) is taken away again
            had = set(manifest["database"]["comments"])
            now = json.loads(ask(f"SELECT coalesce(json_agg(c.target), '[]') FROM ({S.COMMENTS}) AS c(kind, nsp, name, "
                                 "tbl, text, quoted, target, obj)", "reading the comments of the new database"))
            owners = "".join(f"{target} IS NULL;\n" for target in now if target not in had) + owners
        if owners:
            self.run_sql([[owners]], "load-owners", "taking away comments the live database did not have, giving back "
                         "the owners and the privileges on tables and sequences")
        say(f"    loaded by {jobs} sessions: {', '.join(took)}")

    def jobs(self, ask):
        """Sessions that load at once: --jobs, else the cores of the machine that runs the tools (at
        most 8); never more than the server and the role have connections free for."""
        wanted = self.project.options.jobs
        if not wanted:
            found = self.target.run(["nproc"], check=False).stdout.strip()
            wanted = min(int(found), 8) if found.isdigit() else 2
        free = ask("SELECT least(current_setting('max_connections')::int - current_setting("
                   "'superuser_reserved_connections')::int - (SELECT count(*) FROM pg_stat_activity), "
                   "CASE WHEN r.rolconnlimit < 0 THEN 1000 ELSE r.rolconnlimit - (SELECT count(*) FROM "
                   "pg_stat_activity WHERE usename = current_user) END) FROM pg_roles r WHERE r.rolname = current_user",
                   "counting the free connections")
        return max(1, min(int(wanted), int(free) - 1 if free.lstrip("-").isdigit() else 1))

    def run_sql(self, groups, name, what, progress=None):
        """Groups of SQL statements on the new database, each group in its own transaction and
        session, all groups at once. `progress`: (label, total, unit) counted by statements done."""
        commands = []
        for n, statements in enumerate(groups):
            path = posixpath.join(self.project.workdir, f"{name}-{n}.sql")
            text = "".join(f"{st}\n" + ("\\echo remigrate-done\n" if progress else "") for st in statements)
            self.target.write_private(path, "SET maintenance_work_mem = '256MB';\n" + text, replace=True)
            commands.append(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction",
                             *pg_conn_args(self.db, self.beside), "-f", path])
        if not commands:
            return
        line = parallel(*commands, env=self.env())
        if progress:
            label, total, unit = progress
            self.target.watched(line, what=what, on_line=counter(label, total, unit, lambda text: text == "remigrate-done"))
        else:
            self.target.shell(line, what=what)

    def recover(self, bundle_path, manifest, journal=None, save=lambda: None):
        """Put the database back from the bundle, whatever state the reset left it in; a database
        that someone else made under the live name while it was free is never dropped. After a
        swap, the database kept aside is renamed back instead ("renamed"; else "restored").
        `save` writes the journal: the database this makes is recorded in it at once."""
        if self.undo_swap(journal or {}):
            return "renamed"
        dump = posixpath.join(bundle_path, manifest["dump"]["file"])
        self.refuse_a_stranger(journal or {}, "then run `inv rollback`")
        for name in (self.beside, self.db.name):  # whatever the reset left (half-built, new schema) goes
            if self.exists(name):
                self.drop(name)
        self.create_from_archive(dump)
        if journal is not None:  # the rollback's own: one that fails half-way (or is killed) may be tried again over it
            journal["restore_oid"] = self.oid()
            save()
        self.restore(dump, manifest, {"relations": []})
        return "restored"


def checked_copy(stats):
    return {"integrity_check": "ok", "tables": len(stats["tables"])}


class Sqlite(Engine):
    name = "sqlite"
    dump_file = "db.sqlite3"
    dumps_tables = False  # a backup is a copy of the whole file
    defers_dump_check = True

    def server_lock(self):
        return contextlib.nullcontext()  # the lock file beside the database is the lock

    def preflight(self, archive_version=None, digest=None):
        if not self.db.name or self.db.name == ":memory:":
            raise RemigrateError("the SQLite database is in memory; there is nothing to back up")
        if not self.target.exists(self.db.name, "-f"):
            raise RemigrateError(f"SQLite database {self.db.name} does not exist on {self.target.name}; check DB_PATH or DATABASE_URL")
        return {}

    def stats(self, content=False, upto=None, db_name=None, fk_check=True, digest=None, against=None):
        """As PostgreSQL's; `fk_check` counts broken references (a read of every referencing
        table, skipped where a step just proved there are none). SQLite has one `digest`.
        `against`: (bundle folder, manifest) of the backup the content is checked against: each
        table is compared with the bundle's copy row by row (much less work than digesting it;
        a backup digests only the tables that cannot be compared so) while the copy's sha256 is
        checked; a file built beside (`db_name`) has its integrity checked meanwhile too."""
        extra = []
        if content and against:
            extra = ["reference", self.reference(*against), *(["check"] if db_name else [])]
        return self.project.probe("file-stats", db_name or self.db.name, *content_args(content, upto),
                                  *([] if fk_check else ["no-fk-check"]), *(["alone"] if db_name else []), *extra,
                                  what="reading the SQLite database")

    def reference(self, folder, manifest):
        """A private file with what the probe compares a database with: the bundle's copy of the
        file, its sha256, and the manifest's content entries."""
        name = manifest["dump"]["file"]
        path = posixpath.join(self.project.workdir, "reference.json")
        self.target.write_private(path, json.dumps({
            "path": posixpath.join(folder, name), "sha256": manifest["files"][name]["sha256"],
            "content": manifest["database"].get("content") or {}}), replace=True)
        return path

    def size_estimate(self, stats):
        props = stats["properties"]
        return int(props.get("page_count", 0)) * int(props.get("page_size", 4096))

    def dump(self, path, compress=None):
        """A page copy (`compress` is PostgreSQL's)."""
        # The online backup API: a `cp` of a live WAL database can lose committed rows.
        copy = self.project.probe("sqlite-backup", self.db.name, path, what="SQLite online backup")
        return {"tool": "sqlite3 backup API", "tool_version": copy["server_version"], "live_mark": copy.pop("live_mark"),
                "stats": copy}

    def verify_dump(self, path, meanwhile=lambda: None):
        """The copy's integrity_check (a full read) in a process of its own while `meanwhile` runs
        (the checksums): two reads of the file just written, on two cores."""
        checked = self._check(path)
        try:
            meanwhile()
        except BaseException:
            with contextlib.suppress(RemigrateError):
                checked()  # waited for, its own failure second to this one
            raise
        return checked_copy(checked())

    def _check(self, path):
        return self.project.probe_beside("sqlite-verify", path, what="checking the SQLite backup")

    def start_deferred_check(self, path):
        """A reset replaces the live file only at its end: its copy's check runs while the new
        file is built, and deferred_check() waits for it."""
        self._checking = (path, self._check(path))

    def deferred_check(self, path):
        pending, self._checking = getattr(self, "_checking", None), None
        try:  # this run's backup (one per run); a resumed run has none running: read it now
            return checked_copy(pending[1]() if pending else self._check(path)())
        except RemigrateError as exc:
            damage = exc
        try:  # the copy is the live file's pages: is the live file itself damaged?
            self._check(self.db.name)()
        except RemigrateError as live:
            raise RemigrateError(f"the database {self.db.name} is damaged ({live}); nothing was replaced: repair it "
                                 "first (for example sqlite3's .recover into a new file), then reset") from None
        raise RemigrateError(f"the backup copy {path} is damaged ({damage}), though the live file reads back whole; "
                             "the live database was not touched: check the disk, then run the reset again") from None

    def check_running(self):
        return bool(getattr(self, "_checking", None))

    def settle(self):
        pending, self._checking = getattr(self, "_checking", None), None
        if pending:
            with contextlib.suppress(RemigrateError):
                pending[1]()

    def broken_references(self, bundle_path, manifest):
        """Broken references in the bundle's copy (a backup no longer counts them: the reset's load
        refuses any; a live file checked later with some is compared with its backup then)."""
        copy = posixpath.join(bundle_path, manifest["dump"]["file"])
        return self.project.probe("file-stats", copy, what="counting broken references in the backup copy")[
            "properties"]["foreign_key_violations"]

    def restore(self, path, manifest, current):
        self.project.probe("sqlite-restore", path, self.db.name, what="SQLite restore")
        return {}

    # ---- reset: a new file built beside the live one, swapped in atomically
    @property
    def beside(self):
        return self.db.name + ".remigrate-new"

    def check_rebuild_rights(self, stats):
        folder = posixpath.dirname(self.db.name) or "."
        if not self.target.exists(folder, "-w"):
            raise RemigrateError(f"cannot write in {folder}, where the new database file is built; fix its permissions")

    def _clear_new(self):
        self.target.run(["rm", "-f", "--", *[self.beside + suffix for suffix in ("", "-wal", "-shm", "-journal")]])

    def reopen(self, name=None):
        """A SQLite file is never closed to its readers; only the unused new file goes (and a
        name kept for the live file by a swap killed before its replace: the same file)."""
        self._clear_new()
        self.project.probe("sqlite-unkeep", self.db.name, what="removing an unused link to the database")

    def swapped(self, phases):
        """Whether the live file was replaced: the swap consumes the new file (os.replace)."""
        return "swap" in phases and not self.target.exists(self.beside, "-f")

    def rebuild_and_load(self, bundle_path, manifest, skip, journal, sessions=None, strategy="rebuild"):
        if self.swapped([p["phase"] for p in journal.data["phases"]]):
            return  # a resumed run: the new database is in place already
        self.reopen()  # a resumed run: the new file and a second name of the live one left by a killed swap go
        props = manifest["database"]["properties"]
        if props.get("page_size"):  # the live file's own settings (a bundle from before they were recorded: defaults)
            self.project.probe("sqlite-new-file", self.beside, str(props.get("encoding", "UTF-8")), str(props["page_size"]),
                               str(props.get("auto_vacuum", 0)), what="creating the new database file")
        journal("migrate")
        self.project.manage("migrate", "--noinput", db_name=self.beside)
        journal("load")
        old = posixpath.join(bundle_path, manifest["dump"]["file"])
        self.project.probe("sqlite-load", self.beside, old, *sorted(skip), what="loading the data into the new database")
        journal("content-types")
        self.project.probe("content-types", what="adding content types of new models", db_name=self.beside)

    def swap_in(self, manifest, keep=None, bundle_path=None):
        """The verified new file replaces the live one, under an exclusive lock that first proves
        the live file unchanged since the backup (at `bundle_path`); with `keep` (a swap), the
        live file stays under that name."""
        reference = self.reference(bundle_path, manifest)
        swapped = keep_live(lambda: self.project.probe("sqlite-swap", self.beside, self.db.name, reference,
                                                       json.dumps(manifest["dump"].get("live_mark")), keep or "",
                                                       what="swapping in the new database"))
        say(f"    nothing written since the backup: {swapped['checked']}")
        return swapped

    def kept_path(self, run_id):
        return f"{self.db.name}.remigrate-old-{run_id}"

    def rejected_path(self, run_id):
        return f"{self.db.name}.remigrate-rejected-{run_id}"

    def room_for_copy(self):
        folder = posixpath.dirname(self.db.name) or "."
        return self.project.probe("free-space", folder, what="measuring free disk")["free_bytes"], folder

    def undo_swap(self, journal):
        """After a swap: the kept file replaces the new one (False when it is gone: cleaned up)."""
        keep = journal.get("kept")
        if not keep or not self.target.exists(keep, "-f"):
            return False
        self._clear_new()
        rejected = self.rejected_path(journal.get("run_id", "run"))
        done = self.project.probe("sqlite-swap", keep, self.db.name, "-", "", rejected, "unchecked",
                                  journal.get("kept_mode") or "", what="putting the kept file back")
        if done.get("set_aside"):  # the new file, with whatever the application wrote to it since the swap
            journal["rejected"] = rejected
        return True

    def restore_tables(self, bundle_path, manifest, tables):
        """Tables a fake dropped made again in the live file from the backup, whole (rows, indexes,
        triggers, AUTOINCREMENT mark), in one transaction; nothing else is touched."""
        self.project.probe("sqlite-restore-tables", posixpath.join(bundle_path, manifest["dump"]["file"]), self.db.name,
                           *tables, what="bringing the dropped tables back from the backup")

    def exists(self, name=None):
        return self.target.exists(name or self.db.name, "-f")

    def kept_exists(self, name):
        return self.target.exists(name, "-f")

    def remove_kept(self, name):
        self.target.run(["rm", "-f", "--", name])

    def recover(self, bundle_path, manifest, journal=None, save=lambda: None):
        if self.undo_swap(journal or {}):
            return "renamed"
        self._clear_new()
        self.restore(posixpath.join(bundle_path, manifest["dump"]["file"]), manifest, {})
        return "restored"


ENGINES = {"postgresql": Postgres, "sqlite": Sqlite}
DJANGO_ENGINES = {
    "django.db.backends.postgresql": "postgresql",
    "django.db.backends.postgresql_psycopg2": "postgresql",
    "django.contrib.gis.db.backends.postgis": "postgresql",
    "django.db.backends.sqlite3": "sqlite",
}


def engine_name(django_engine):
    name = DJANGO_ENGINES.get(django_engine)
    if not name:
        supported = ", ".join(sorted(DJANGO_ENGINES))
        raise RemigrateError(f"database engine {django_engine!r} is not supported; supported engines: {supported}")
    return name


def engine_for(project):
    return ENGINES[engine_name(project.db.engine)](project)
