"""What a database holds, described so two databases can be compared: every table's content
as an order-independent digest, and the schema objects (columns, indexes, constraints, views,
functions, triggers, extensions, sequences, virtual tables) with their definitions.

Runs beside the project (standard library only; a DB-API cursor comes from the caller), so
the live database, a backup file and the scratch databases are described by the same code.
"""
import hashlib
import math
import re
import urllib.parse
from pathlib import Path

# Shadow tables SQLite makes for a virtual table; they belong to it, never loaded on their own.
SHADOW_SUFFIXES = {
    "fts5": ("_data", "_idx", "_content", "_docsize", "_config"),
    "fts4": ("_content", "_segments", "_segdir", "_docsize", "_stat"),
    "fts3": ("_content", "_segments", "_segdir", "_docsize", "_stat"),
    "rtree": ("_node", "_rowid", "_parent"),
}
MASK = (1 << 128) - 1
# Where a rename statement takes the object's present and next name (quoted); NUL is in no name.
OLD, NEW = "\x00old\x00", "\x00new\x00"


def qident(name):
    """An identifier quoted the SQL-standard way (both engines)."""
    return '"' + name.replace('"', '""') + '"'


def share_out(weights, jobs):
    """The keys of `weights` in at most `jobs` groups of about the same weight: the heaviest
    first, each to the group with the least so far."""
    groups = [[0, []] for _ in range(max(1, jobs))]
    for key in sorted(weights, key=lambda k: (-weights[k], k)):
        group = min(groups, key=lambda g: g[0])
        group[0] += weights[key] + 1
        group[1].append(key)
    return [keys for _weight, keys in groups if keys]


def row_hash(row):
    return int.from_bytes(hashlib.md5(repr(row).encode("utf-8")).digest(), "big")


# ---------------------------------------------------------------- SQLite

def sqlite_virtual_tables(conn, schema="main"):
    """{virtual table: module} and the set of their shadow tables."""
    virtual, shadows = {}, set()
    for name, sql in conn.execute(f"SELECT name, sql FROM {schema}.sqlite_master WHERE type = 'table' "
                                  "AND sql LIKE 'CREATE VIRTUAL TABLE%'"):
        module = sql.split(" USING ", 1)[1].split("(", 1)[0].strip().lower() if " USING " in sql.upper() else ""
        virtual[name] = module
        shadows.update(name + suffix for suffix in SHADOW_SUFFIXES.get(module, ()))
    return virtual, shadows


def sqlite_columns(conn, table, schema="main"):
    """Visible columns of a table (table_xinfo: hidden columns of virtual tables left out)."""
    return [r[1] for r in conn.execute(f"PRAGMA {schema}.table_xinfo({qident(table)})") if r[6] == 0]


def sqlite_plan(conn, table, schema="main", upto=None, virtual=False):
    """(SELECT of a table's rows, columns in name order, with a WHERE clause that more conditions
    may be added to; its primary key), `upto` keeping rows whose integer primary key is at most
    that value."""
    cols = sorted(sqlite_columns(conn, table, schema))
    pk = [r[1] for r in sorted(conn.execute(f"PRAGMA {schema}.table_info({qident(table)})"), key=lambda r: r[5]) if r[5]]
    if virtual:
        cols, pk = ["rowid", *cols], ["rowid"]
    where = f" WHERE {qident(pk[0])} <= {int(upto)}" if upto is not None and len(pk) == 1 else " WHERE 1"
    select = ", ".join("rowid" if c == "rowid" and virtual else qident(c) for c in cols)
    return f"SELECT {select} FROM {schema}.{qident(table)}{where}", pk


def sqlite_sum(conn, select, params=()):
    """(rows, sum of row_hash) of what `select` returns."""
    total, count = 0, 0
    md5, from_bytes = hashlib.md5, int.from_bytes  # the same sum as row_hash's, without a call per row
    cursor = conn.execute(select, params)
    while rows := cursor.fetchmany(5000):
        total += sum(from_bytes(md5(repr(row).encode("utf-8")).digest(), "big") for row in rows)
        count += len(rows)
    return count, total


def sqlite_top(conn, table, pk, schema="main"):
    if len(pk) != 1:
        return None
    top = conn.execute(f"SELECT max({qident(pk[0])}) FROM {schema}.{qident(table)}").fetchone()[0]
    return top if isinstance(top, int) else None


def sqlite_digest(conn, table, schema="main", upto=None, virtual=False):
    """(rows, digest, max pk) over every row, columns in name order; `upto` keeps rows whose
    integer primary key is at most that value."""
    select, pk = sqlite_plan(conn, table, schema, upto, virtual)
    count, total = sqlite_sum(conn, select)
    return {"rows": count, "digest": f"{total & MASK:032x}", "pk": pk, "max_pk": sqlite_top(conn, table, pk, schema)}


def sqlite_content(conn, tables=None, upto=None, schema="main", progress=None):
    """sqlite_digest of every table; `progress(done, total)` is told the tables read so far."""
    virtual, chosen = sqlite_chosen(conn, tables, schema)
    upto = upto or {}
    out = {}
    for t in chosen:
        out[t] = sqlite_digest(conn, t, schema, upto.get(t), t in virtual)
        if progress:
            progress(len(out), len(chosen))
    return out


def sqlite_chosen(conn, tables=None, schema="main"):
    """({virtual table: module}, the tables whose rows are digested: every table but SQLite's
    own and the shadow tables of virtual ones, or those of `tables`)."""
    virtual, shadows = sqlite_virtual_tables(conn, schema)
    names = [r[0] for r in conn.execute(f"SELECT name FROM {schema}.sqlite_master WHERE type = 'table' "
                                        "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name")]
    return virtual, [t for t in names if t not in shadows and (tables is None or t in tables)]


def read_only_uri(path):
    """A SQLite URI that opens `path` read-only, whatever characters its name has."""
    return f"file:{urllib.parse.quote(str(Path(path).resolve()))}?mode=ro"


UNIQUE_ROWIDS = ("fts3", "fts4", "fts5", "rtree")  # virtual tables whose rowid is a key


def sqlite_match_key(conn, table, module=None, schemas=("main",)):
    """The columns that pair each row of a table with the same row in a copy of it, or None when
    there are none (the table is digested instead): its primary key, the same in every schema
    of `schemas` (each enforces it there) and never NULL, or the rowid of a virtual table
    (`module`) that keeps it unique; and only if the table has the same columns in all."""
    columns = [sorted(sqlite_columns(conn, table, schema)) for schema in schemas]
    if any(c != columns[0] for c in columns):  # a column only one of them has: no row is the same
        return None
    if module is not None:
        return ["rowid"] if module in UNIQUE_ROWIDS else None
    infos = [sorted((r for r in conn.execute(f"PRAGMA {schema}.table_info({qident(table)})") if r[5]), key=lambda r: r[5])
             for schema in schemas]
    keys = [[r[1] for r in info] for info in infos]
    pk = keys[0]
    if not pk or any(k != pk for k in keys):
        return None
    if len(pk) == 1 and all(rowid_alias(conn, table, schema) for schema in schemas):
        return pk  # the rowid itself: never NULL, no table read to know it
    # a rowid table's other primary keys may hold NULLs (an old SQLite quirk), which pair with nothing
    nulls = " OR ".join(f"{qident(c)} IS NULL" for c in pk)
    if any(conn.execute(f"SELECT 1 FROM {schema}.{qident(table)} WHERE {nulls} LIMIT 1").fetchone() for schema in schemas):
        return None
    return pk


def rowid_alias(conn, table, schema="main"):
    """Whether a rowid table's one-column primary key is its rowid: SQLite then makes no index
    for the key (any other primary key, `INTEGER PRIMARY KEY DESC` included, has one and may
    hold NULLs)."""
    return not any(r[3] == "pk" for r in conn.execute(f"PRAGMA {schema}.index_list({qident(table)})"))


def blob_affinity(declared):
    """Whether a column declared with this type has BLOB affinity (SQLite's rules, in order)."""
    kind = (declared or "").upper()
    if "INT" in kind or any(t in kind for t in ("CHAR", "CLOB", "TEXT")):
        return False
    return "BLOB" in kind or not kind.strip()


def sign_of_zero(value):
    """-1.0 or 1.0 for a float (the sign -0.0 and 0.0 differ by, which SQL cannot see), else None."""
    return math.copysign(1.0, value) if isinstance(value, float) else None


def sqlite_equal(conn, table, key, schema="ref", upto=None):
    """(rows in main, rows in `schema`, rows of main with a row of `schema` under the same key
    that is equal column by column): the table holds the same rows in both when all three are
    equal. Values are compared as stored (BINARY, whatever a column's collation; 1 and 1.0 and
    '1' are all different), columns by name, those of main. `upto`: only the rows whose key (one
    column) is at most that value, on both sides."""
    cols = sqlite_columns(conn, table)
    if key == ["rowid"]:
        cols = ["rowid", *cols]
    pair = " AND ".join(f"o.{qident(c)} = n.{qident(c)}" for c in key)
    # -0.0 IS 0.0 in SQL, though a column of BLOB affinity (no declared type, or BLOB) keeps them
    # apart (the others store both as 0): there a real zero's sign is compared too, by a function
    # of the connection's called for real zeros only
    conn.create_function("remigrate_sign", 1, sign_of_zero, deterministic=True)
    signed = {r[1] for side in ("main", schema) for r in conn.execute(f"PRAGMA {side}.table_xinfo({qident(table)})")
              if blob_affinity(r[2])}

    def equal(c):
        q = qident(c)
        return (f"n.{q} IS o.{q} COLLATE BINARY AND typeof(n.{q}) = typeof(o.{q})"
                + (f" AND (typeof(n.{q}) <> 'real' OR n.{q} <> 0 OR remigrate_sign(n.{q}) = remigrate_sign(o.{q}))"
                   if c in signed else ""))
    same = " AND ".join(map(equal, cols)) or "1"
    if upto is not None:
        if len(key) != 1:
            raise ValueError(f"{table}: rows up to a key need a key of one column")
        limit = f" WHERE {qident(key[0])} <= {int(upto)}"
        same += f" AND n.{qident(key[0])} <= {int(upto)}"
    else:
        limit = ""
    t = qident(table)
    return conn.execute(f"SELECT (SELECT count(*) FROM main.{t}{limit}), (SELECT count(*) FROM {schema}.{t}{limit}), "
                        f"(SELECT count(*) FROM main.{t} n JOIN {schema}.{t} o ON {pair} WHERE {same})").fetchone()


# The digest a SQLite backup records for a table it can be compared with row by row (a key that
# pairs the rows): none is computed; whatever is checked against the backup later is compared
# with the bundle's copy of the file, value by value, instead.
BY_COPY = "none: compared with the backup copy, value by value"


def sqlite_by_copy(conn, tables):
    """{table: content entry} of the `tables` that a copy of this file can be compared with row
    by row (sqlite_match_key on this file alone): row count, key and highest key, and BY_COPY
    for a digest."""
    virtual, _shadows = sqlite_virtual_tables(conn)
    out = {}
    for table in tables:
        if sqlite_match_key(conn, table, virtual.get(table)) is None:
            continue
        _select, pk = sqlite_plan(conn, table, virtual=table in virtual)
        rows = conn.execute(f"SELECT count(*) FROM main.{qident(table)}").fetchone()[0]
        out[table] = {"rows": rows, "digest": BY_COPY, "pk": pk, "max_pk": sqlite_top(conn, table, pk)}
    return out


CHUNK_ROWIDS = 50000  # rowids per piece of a table read in parallel...
MAX_PIECES = 256  # ...but never more pieces than this, however far apart the rowids are


def sqlite_pieces(conn, table, select):
    """The table's SELECT cut into pieces by rowid range (so several processes can read one big
    table): [(select, params)]; one piece for a table without rowids of its own (WITHOUT
    ROWID, or a column that takes the name). `select` ends in its WHERE clause (sqlite_plan)."""
    named = {r[1].lower() for r in conn.execute(f"PRAGMA main.table_xinfo({qident(table)})")}  # hidden ones too
    if named & {"rowid", "_rowid_", "oid"}:
        return [(select, ())]
    try:
        low, high = conn.execute(f"SELECT min(rowid), max(rowid) FROM main.{qident(table)}").fetchone()
    except Exception:  # noqa: BLE001  (no such column: rowid, a WITHOUT ROWID table)
        return [(select, ())]
    if low is None or high - low < CHUNK_ROWIDS:
        return [(select, ())]
    width = max(CHUNK_ROWIDS, -(-(high - low + 1) // MAX_PIECES))
    return [(f"{select} AND rowid BETWEEN ? AND ?", (start, min(start + width - 1, high)))
            for start in range(low, high + 1, width)]


_OPEN = {}


def _sum_piece(args):
    """One piece's (table, rows, sum), in a worker process with its own read-only connection."""
    path, table, select, params = args
    if path not in _OPEN:
        import sqlite3

        _OPEN[path] = sqlite3.connect(read_only_uri(path), uri=True)
    return (table, *sqlite_sum(_OPEN[path], select, params))


def sqlite_content_parallel(conn, path, jobs, upto=None, progress=None, tables=None):
    """sqlite_content of a file no one writes to, read by `jobs` processes at once: each table's
    digest is a sum over its rows, so a big table is cut into rowid ranges read apart and the
    sums added up. The same digests as sqlite_content's."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    virtual, chosen = sqlite_chosen(conn, tables)
    upto = upto or {}
    out, pieces = {}, []
    for t in chosen:
        select, pk = sqlite_plan(conn, t, "main", upto.get(t), t in virtual)
        out[t] = {"rows": 0, "digest": 0, "pk": pk, "max_pk": sqlite_top(conn, t, pk)}
        pieces += [(path, t, sel, params) for sel, params in
                   ([(select, ())] if t in virtual else sqlite_pieces(conn, t, select))]
    # The workers are forked with `conn` open but idle (no statement running); they never use it,
    # each opens its own (SQLite forbids only using a connection across a fork).
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork")) as pool:
        for done, (table, count, total) in enumerate(pool.map(_sum_piece, pieces, chunksize=1), 1):
            out[table]["rows"] += count
            out[table]["digest"] += total
            if progress:
                progress(done, len(pieces))
    for entry in out.values():
        entry["digest"] = f"{entry['digest'] & MASK:032x}"
    return out


def sqlite_indexes(conn, table, schema="main"):
    """Every index of a table, the automatic ones of UNIQUE constraints included, by definition."""
    out = {}
    sqls = dict(conn.execute(f"SELECT name, sql FROM {schema}.sqlite_master WHERE type = 'index' AND tbl_name = ?",
                             (table,)).fetchall())
    for _seq, name, unique, _origin, _partial in conn.execute(f"PRAGMA {schema}.index_list({qident(table)})"):
        cols = [r[2] or "<expression>" for r in conn.execute(f"PRAGMA {schema}.index_info({qident(name)})")]
        sql = sqls.get(name)
        where = sql.split(" WHERE ", 1)[1].strip() if sql and " WHERE " in sql else ""
        out[name] = {"table": table, "sql": sql, "name": name, "definition": f"{'UNIQUE ' if unique else ''}({', '.join(cols)})"
                     + (f" WHERE {where}" if where else "")}
    return out


def sqlite_schema(conn, schema="main"):
    """Tables (columns, virtual module), indexes, views and triggers of a SQLite database."""
    virtual, shadows = sqlite_virtual_tables(conn, schema)
    out = {"tables": {}, "indexes": {}, "constraints": {}, "views": {}, "triggers": {}, "functions": {},
           "extensions": {}, "sequences": {}, "row_security": {}, "policies": {}, "schemas": {},
           "shadows": sorted(shadows)}
    master = conn.execute(f"SELECT type, name, tbl_name, sql FROM {schema}.sqlite_master "
                          "WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY type, name").fetchall()
    for kind, name, table, sql in master:
        if kind == "table" and name not in shadows:
            if name in virtual:
                out["tables"][name] = {"virtual": virtual[name], "sql": sql, "columns": {
                    c: {"type": "", "null": True, "default": None} for c in sqlite_columns(conn, name, schema)}}
                continue
            cols = {}
            for _cid, col, ctype, notnull, default, pk in conn.execute(f"PRAGMA {schema}.table_info({qident(name)})"):
                cols[col] = {"type": ctype.lower(), "null": not notnull and not pk, "default": default}
            out["tables"][name] = {"virtual": None, "sql": sql, "columns": cols}
            out["indexes"].update(sqlite_indexes(conn, name, schema))
        elif kind == "view":
            out["views"][name] = {"definition": " ".join((sql or "").split()), "sql": sql}
        elif kind == "trigger":
            out["triggers"][name] = {"table": table, "definition": " ".join((sql or "").split()), "sql": sql}
    seq = conn.execute(f"SELECT 1 FROM {schema}.sqlite_master WHERE name = 'sqlite_sequence'").fetchone()
    if seq:
        for table, value in conn.execute(f"SELECT name, seq FROM {schema}.sqlite_sequence"):
            out["sequences"][table] = {"table": table, "value": value}
    return out


# ---------------------------------------------------------------- PostgreSQL

USER_SCHEMAS = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'"
# Objects an extension brought are the extension's, not the project's.
NOT_FROM_EXTENSION = ("NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.objid = {oid} AND e.deptype = 'e' "
                      "AND e.classid = '{catalog}'::regclass)")

# A routine the server made for a type (a range type's constructors, owned by the bootstrap
# superuser, made again with the type), and one of the project's own: neither that nor an extension's.
SERVER_ROUTINE = ("EXISTS (SELECT 1 FROM pg_depend i WHERE i.classid = 'pg_proc'::regclass AND i.objid = p.oid"
                  " AND i.deptype = 'i')")
OWN_ROUTINE = NOT_FROM_EXTENSION.format(oid="p.oid", catalog="pg_proc") + f" AND NOT {SERVER_ROUTINE}"
# A relation a column owns (a serial's or an identity's sequence): it follows its table (a
# partition, which depends on its table too, depends on no column).
COLUMN_OWNED = ("EXISTS (SELECT 1 FROM pg_depend o WHERE o.classid = 'pg_class'::regclass AND o.objid = c.oid"
                " AND o.deptype IN ('a', 'i') AND o.refobjsubid > 0)")
# A trigger of its own, not a partition's copy of its partitioned table's (PostgreSQL 13 and later
# mark those by tgparentid only: made again with the parent's).
OWN_TRIGGER = "coalesce((to_jsonb(g) ->> 'tgparentid')::oid, 0) = 0"
# A routine's name and argument types, each type schema-qualified: the same whatever the
# session's search path (pg_get_function_identity_arguments prints a type outside it qualified).
SIGNATURE = ("p.proname || '(' || coalesce((SELECT string_agg(quote_ident(tn.nspname) || '.' || quote_ident(ty.typname),"
             " ', ' ORDER BY a.n) FROM unnest(p.proargtypes) WITH ORDINALITY a(t, n) JOIN pg_type ty ON ty.oid = a.t"
             " JOIN pg_namespace tn ON tn.oid = ty.typnamespace), '') || ')'")
# A schema of the project's (each branch of a UNION filtered by it before its columns are computed:
# a routine's signature for each of the catalog's thousands of routines costs a tenth of a second).
IN_USER_SCHEMA = f"IN (SELECT n.oid FROM pg_namespace n WHERE {USER_SCHEMAS})"
# The project's own types (an enum, a domain, a composite or a range type), not a table's row type.
OWN_TYPES = ("t.typtype IN ('e', 'd', 'c', 'r') AND (t.typtype <> 'c' OR (SELECT c.relkind FROM pg_class c"
             " WHERE c.oid = t.typrelid) = 'c') AND " + NOT_FROM_EXTENSION.format(oid="t.oid", catalog="pg_type"))


# What a database's tables have had written, as the server's statistics count it: rows inserted,
# updated and deleted per table, and its file node (which TRUNCATE and table rewrites change);
# with the counters' reset time and whether they are kept at all. Read by one line of JSON, in a
# transaction of its own (the server's statistics are read afresh in each transaction).
WRITE_COUNTERS_SQL = (
    "SELECT json_build_object('track_counts', current_setting('track_counts'), "
    "'server_version_num', current_setting('server_version_num')::int, "
    "'postmaster_started', pg_postmaster_start_time()::text, "
    "'stats_reset', (SELECT stats_reset::text FROM pg_stat_database WHERE datname = current_database()), "
    "'tables', (SELECT coalesce(json_object_agg(s.relid::text, json_build_array(s.n_tup_ins, s.n_tup_upd, s.n_tup_del, "
    "c.relfilenode)), '{}') FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid))")


def dependency_order(items, needs):
    """The keys of `items` (in their order) so that each comes after those of them it `needs`
    (a function of a key giving keys; others are ignored; a cycle is left in the given order)."""
    out, placed, visiting = [], set(), set()

    def place(key):
        if key in placed or key in visiting:
            return
        visiting.add(key)
        for other in sorted(k for k in needs(key) if k in items):  # (sorted: the same order every run)
            place(other)
        visiting.discard(key)
        placed.add(key)
        out.append(key)
    for key in items:
        place(key)
    return out


def pg_key(schema, name):
    return name if schema == "public" else f"{schema}.{name}"


def pg_key_parts(key):
    """(schema, name) of a pg_key: a schema is never named with a dot, so the first one splits."""
    schema, _, name = key.partition(".")
    return (schema, name) if name else ("public", key)


def pg_tables(cursor):
    """{key: (quoted name, [columns sorted], primary key columns, [their types, in column order])}
    of the ordinary tables."""
    cursor.execute(
        "SELECT n.nspname, c.relname, quote_ident(n.nspname) || '.' || quote_ident(c.relname),"
        " (SELECT array_agg(quote_ident(a.attname) ORDER BY a.attname) FROM pg_attribute a"
        "   WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),"
        " (SELECT array_agg(quote_ident(a.attname) ORDER BY a.attnum) FROM pg_index i JOIN pg_attribute a"
        "   ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) WHERE i.indrelid = c.oid AND i.indisprimary),"
        " (SELECT array_agg(CASE WHEN t.typnamespace = 'pg_catalog'::regnamespace THEN t.typname::text ELSE '' END"
        "   ORDER BY a.attname) FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid"
        "   WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        f" WHERE c.relkind IN ('r', 'p') AND {USER_SCHEMAS} AND "
        + NOT_FROM_EXTENSION.format(oid="c.oid", catalog="pg_class") + " ORDER BY 1, 2")
    return {pg_key(s, n): (q, list(cols or []), list(pk or []), list(types or []))
            for s, n, q, cols, pk, types in cursor.fetchall()}


# How a PostgreSQL table's rows are summed up (the manifest says which, as `content_digest`):
# - MD5_TEXT: the md5 of each row's text. Bundles of earlier remigrate versions, and servers
#   before PostgreSQL 14.
# - HASH_RECORD: each value turned into bytes that tell it from every other value of its type
#   (AS_BYTES: the type's binary send format, every NaN made the same one; text and varchar
#   byte for byte), the row hashed from them by the server with hash_record_extended
#   (PostgreSQL 14+), each row's hash hashed again, summed over the rows (64 bits). No text is
#   made of most values, which makes it about 5 times faster. The types' own hash functions
#   are not used: they serve joins, and treat values as equal that are not (numeric's ignores the sign, bigint's and timestamp's
#   fold 64 bits into 32, jsonb's ignores where an array ends, char's trailing blanks).
#   Integers go as 8 bytes, so 5 in an integer column equals 5 in a bigint one (a new history
#   may widen a key); jsonb goes as its canonical text. A column of any other type (json,
#   arrays, enums, intervals, network types, extension types, domains) is hashed as its text,
#   in fixed settings (TEXT_SETTINGS), so no session's time zone or style changes a digest.
MD5_TEXT, HASH_RECORD = "md5-text", "hash-bytes"
KNOWN_DIGESTS = (MD5_TEXT, HASH_RECORD)
MD5_REPR = "md5-repr"  # SQLite's, the only one: the md5 of each row's Python repr (row_hash)
NAN_AS_ONE = "(CASE WHEN {0} = 'NaN' THEN 'NaN' ELSE {0} END)"  # a NaN the server computed has other bits
AS_BYTES = {"int2": "int8send({}::int8)", "int4": "int8send({}::int8)", "int8": "int8send({})",
            "oid": "int8send({}::int8)", "bool": "boolsend({})", "float4": f"float8send({NAN_AS_ONE}::float8)",
            "float8": f"float8send({NAN_AS_ONE})", "numeric": "numeric_send({})", "date": "date_send({})",
            "time": "time_send({})", "timestamp": "timestamp_send({})", "timestamptz": "timestamptz_send({})",
            "uuid": "uuid_send({})", "jsonb": "jsonb_send({})", "bytea": "{}", "text": '{} COLLATE "C"',
            "varchar": '{} COLLATE "C"', "bpchar": "bpcharsend({})"}
AS_TEXT = '({}::text) COLLATE "C"'
TEXT_SETTINGS = {"TimeZone": "UTC", "DateStyle": "ISO, YMD", "IntervalStyle": "postgres", "extra_float_digits": "1",
                 "bytea_output": "hex", "lc_monetary": "C", "search_path": "pg_catalog"}


def pg_digest_algorithm(cursor):
    """The best digest this server can compute."""
    cursor.execute("SELECT current_setting('server_version_num')::int")
    return HASH_RECORD if cursor.fetchone()[0] >= 140000 else MD5_TEXT


def pg_row_sums(cols, types, algorithm):
    """(what a subquery gives of each row as `h`, or None; the 64-bit sums over the rows, as SQL
    expressions, whose remainders mod 2**64 side by side make a table's digest)."""
    if algorithm == MD5_TEXT:  # one md5 of each row, both halves summed from it
        return (f"md5(ROW({', '.join(cols)})::text)" if cols else "md5('')",
                [f"('x' || substr(h, {start}, 16))::bit(64)::bigint::numeric" for start in (1, 17)])
    if algorithm != HASH_RECORD:
        raise ValueError(f"unknown content digest {algorithm!r}; this remigrate knows {', '.join(KNOWN_DIGESTS)}")
    values = [AS_BYTES.get(t, AS_TEXT).format(c) for c, t in zip(cols, types, strict=True)]
    row = f"ROW(1, {', '.join(values)})" if values else "ROW(1)"  # 1 first: a NULL in the first column still counts
    # hash_record_extended adds up its columns' hashes linearly (31 * h + next), so summed over the
    # rows it would be a sum per column, blind to two rows that trade a value: each row's 64-bit
    # hash is hashed once more, as its 8 bytes. One sum: a changed table keeps its digest with a
    # chance of 1 in 2**64.
    return None, [f"hash_record_extended(ROW(int8send(hash_record_extended({row}, 0))), 0)"]


def pg_content(cursor, tables=None, upto=None, progress=None, algorithm=None):
    """(rows, digest, max pk) per table: the sum of a hash of every row (`algorithm`, above),
    computed by the server (no rows travel), so the order of rows and of columns does not
    matter. `progress(done, total)` is told the bytes of the tables read so far. Without an
    `algorithm`, the best the server has."""
    algorithm = algorithm or pg_digest_algorithm(cursor)
    if algorithm == MD5_TEXT:  # as earlier versions read it: in the session's own settings
        return _pg_content(cursor, tables, upto or {}, progress, algorithm)
    cursor.execute("SELECT " + ", ".join("current_setting(%s)" for _ in TEXT_SETTINGS), list(TEXT_SETTINGS))
    before = dict(zip(TEXT_SETTINGS, cursor.fetchone()))
    pg_set(cursor, TEXT_SETTINGS)
    try:
        return _pg_content(cursor, tables, upto or {}, progress, algorithm)
    finally:  # the caller's session as it was (in a transaction that failed, the server undoes the set itself)
        try:
            pg_set(cursor, before)
        except Exception:  # noqa: BLE001  (that failed transaction: nothing to give back)
            pass


def pg_set(cursor, settings):
    """Session settings {name: value} set at once (undone with the transaction if it fails)."""
    cursor.execute("SELECT " + ", ".join("set_config(%s, %s, false)" for _ in settings),
                   [x for item in settings.items() for x in item])


def _pg_content(cursor, tables, upto, progress, algorithm):
    out = {}
    chosen = {k: v for k, v in pg_tables(cursor).items() if tables is None or k in tables}
    sizes = {}
    if progress and chosen:
        cursor.execute("SELECT " + ", ".join("pg_relation_size(%s::regclass)" for _ in chosen), [q for q, *_rest in chosen.values()])
        sizes = dict(zip(chosen, cursor.fetchone()))
    done = 0
    for key, (quoted, cols, pk, types) in chosen.items():
        row, sums = pg_row_sums(cols, types, algorithm)
        top = f"(SELECT max({pk[0]})::text FROM {quoted})" if len(pk) == 1 else "NULL"
        where = f" WHERE {pk[0]} <= {int(upto[key])}" if key in upto and len(pk) == 1 else ""
        rows = f"(SELECT {row} AS h FROM {quoted}{where} OFFSET 0) rows" if row else f"{quoted}{where}"
        summed = "".join(f" coalesce(sum({each}), 0)::text," for each in sums)
        cursor.execute(f"SELECT count(*),{summed} {top} FROM {rows}")
        count, *totals, max_pk = cursor.fetchone()
        done += sizes.get(key, 0)
        if progress:
            progress(done, sum(sizes.values()))
        digest = 0
        for total in totals:
            digest = (digest << 64 | int(total) % (1 << 64)) & MASK
        try:
            max_pk = int(max_pk) if max_pk is not None else None
        except ValueError:  # a text or uuid key
            max_pk = None
        out[key] = {"rows": count, "digest": f"{digest:032x}", "pk": [p.strip('"') for p in pk], "max_pk": max_pk}
    return out


# Comments (COMMENT ON) of tables, columns, views, sequences of their own, routines, types,
# collations, indexes, triggers, table constraints and schemas: the SQL that makes each, quoted by
# the server (a column's sequence's are not kept: its name follows its table's history).
# Columns: kind, schema, name (an index's or constraint's: its definition), table, text, text quoted,
# target (the statement's head), the index's or constraint's name.
COMMENTS = (
    "SELECT CASE WHEN d.objsubid > 0 THEN 'column' ELSE lower(w.what) END, n.nspname,"
    " c.relname || CASE WHEN d.objsubid > 0 THEN '.' || a.attname ELSE '' END, CASE WHEN c.relkind IN ('r', 'p')"
    " THEN c.relname END, d.description, quote_literal(d.description), 'COMMENT ON ' || CASE WHEN d.objsubid > 0 THEN 'COLUMN' ELSE w.what END"
    " || ' ' || quote_ident(n.nspname) || '.' || quote_ident(c.relname) || CASE WHEN d.objsubid > 0 THEN '.' ||"
    " quote_ident(a.attname) ELSE '' END"
    ", NULL FROM pg_description d JOIN pg_class c ON d.classoid = 'pg_class'::regclass AND d.objoid = c.oid"
    " JOIN pg_namespace n ON n.oid = c.relnamespace LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = d.objsubid"
    " CROSS JOIN LATERAL (SELECT CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'S' THEN"
    " 'SEQUENCE' WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END AS what) w"
    f" WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND {USER_SCHEMAS} AND "
    + NOT_FROM_EXTENSION.format(oid="c.oid", catalog="pg_class")
    + f" AND NOT {COLUMN_OWNED}"
    " UNION ALL SELECT CASE p.prokind WHEN 'p' THEN 'procedure' ELSE 'function' END, n.nspname,"
    " p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')', NULL, d.description, quote_literal(d.description),"
    " 'COMMENT ON ' || CASE p.prokind WHEN 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END || ' ' || quote_ident(n.nspname)"
    " || '.' || quote_ident(p.proname) || '(' || pg_get_function_identity_arguments(p.oid) || ')'"
    ", NULL FROM pg_description d JOIN pg_proc p ON d.classoid = 'pg_proc'::regclass AND d.objoid = p.oid"
    f" JOIN pg_namespace n ON n.oid = p.pronamespace WHERE {USER_SCHEMAS} AND "
    + OWN_ROUTINE
    + " UNION ALL SELECT CASE t.typtype WHEN 'd' THEN 'domain' ELSE 'type' END, n.nspname, t.typname, NULL,"
    " d.description, quote_literal(d.description), 'COMMENT ON ' || CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE'"
    " END || ' ' || quote_ident(n.nspname) || '.' || quote_ident(t.typname), NULL FROM pg_description d JOIN pg_type t ON"
    f" d.classoid = 'pg_type'::regclass AND d.objoid = t.oid JOIN pg_namespace n ON n.oid = t.typnamespace WHERE {USER_SCHEMAS}"
    f" AND {OWN_TYPES}"
    " UNION ALL SELECT 'collation', n.nspname, co.collname, NULL, d.description, quote_literal(d.description),"
    " 'COMMENT ON COLLATION ' || quote_ident(n.nspname) || '.' || quote_ident(co.collname), NULL FROM pg_description d"
    " JOIN pg_collation co ON d.classoid = 'pg_collation'::regclass AND d.objoid = co.oid JOIN pg_namespace n ON"
    f" n.oid = co.collnamespace WHERE {USER_SCHEMAS} AND " + NOT_FROM_EXTENSION.format(oid="co.oid", catalog="pg_collation")
    # an index's, a trigger's and a table constraint's (their tables' history may rename an index:
    # then a comment made by hand on it is named lost by the verification)
    + " UNION ALL SELECT 'index', n.nspname, CASE WHEN x.indisunique THEN 'UNIQUE ' ELSE '' END ||"
    " substring(pg_get_indexdef(c.oid) FROM ' USING (.*)$'), t.relname, d.description, quote_literal(d.description),"
    " 'COMMENT ON INDEX ' || quote_ident(n.nspname) || '.' || quote_ident(c.relname), c.relname FROM pg_description d JOIN pg_class c"
    " ON d.classoid = 'pg_class'::regclass AND d.objoid = c.oid AND d.objsubid = 0 JOIN pg_index x ON x.indexrelid = c.oid"
    " JOIN pg_class t ON t.oid = x.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
    f" WHERE c.relkind IN ('i', 'I') AND {USER_SCHEMAS} AND " + NOT_FROM_EXTENSION.format(oid="t.oid", catalog="pg_class")
    + " UNION ALL SELECT 'trigger', n.nspname, c.relname || '.' || g.tgname, c.relname, d.description,"
    " quote_literal(d.description), 'COMMENT ON TRIGGER ' || quote_ident(g.tgname) || ' ON ' || quote_ident(n.nspname)"
    " || '.' || quote_ident(c.relname), NULL FROM pg_description d JOIN pg_trigger g ON d.classoid = 'pg_trigger'::regclass"
    " AND d.objoid = g.oid JOIN pg_class c ON c.oid = g.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
    f" WHERE NOT g.tgisinternal AND {OWN_TRIGGER} AND {USER_SCHEMAS}"
    " UNION ALL SELECT 'constraint', n.nspname, pg_get_constraintdef(k.oid), c.relname, d.description,"
    " quote_literal(d.description), 'COMMENT ON CONSTRAINT ' || quote_ident(k.conname) || ' ON ' ||"
    " quote_ident(n.nspname) || '.' || quote_ident(c.relname), k.conname FROM pg_description d JOIN pg_constraint k ON"
    " d.classoid = 'pg_constraint'::regclass AND d.objoid = k.oid JOIN pg_class c ON c.oid = k.conrelid"
    f" JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {USER_SCHEMAS} AND "
    + NOT_FROM_EXTENSION.format(oid="c.oid", catalog="pg_class")
    # a domain's constraint (named by its domain: "constraint positive on domain pct")
    + " UNION ALL SELECT 'constraint', n.nspname, k.conname || ' on domain ' || t.typname, NULL, d.description,"
    " quote_literal(d.description), 'COMMENT ON CONSTRAINT ' || quote_ident(k.conname) || ' ON DOMAIN ' ||"
    " quote_ident(n.nspname) || '.' || quote_ident(t.typname), NULL FROM pg_description d JOIN pg_constraint k ON"
    " d.classoid = 'pg_constraint'::regclass AND d.objoid = k.oid JOIN pg_type t ON t.oid = k.contypid"
    f" JOIN pg_namespace n ON n.oid = t.typnamespace WHERE {USER_SCHEMAS} AND {OWN_TYPES}"
    + " UNION ALL SELECT 'schema', n.nspname, n.nspname, NULL, d.description, quote_literal(d.description),"
    " 'COMMENT ON SCHEMA ' || quote_ident(n.nspname)"
    ", NULL FROM pg_description d JOIN pg_namespace n ON d.classoid = 'pg_namespace'::regclass AND d.objoid = n.oid"
    f" WHERE {USER_SCHEMAS} AND " + NOT_FROM_EXTENSION.format(oid="n.oid", catalog="pg_namespace")
)


def pg_schema(cursor):
    """Tables with columns (partitioned ones with their partitions), indexes, constraints, views,
    functions, triggers, extensions, sequences, row security and its policies, comments,
    collations and types of the user schemas, each with its definition as the server prints it."""
    out = {"tables": {}, "indexes": {}, "constraints": {}, "views": {}, "triggers": {}, "functions": {},
           "extensions": {}, "sequences": {}, "row_security": {}, "policies": {}, "schemas": {}, "comments": {},
           "collations": {}, "types": {},
           "shadows": []}
    cursor.execute(
        "SELECT n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod), NOT a.attnotnull,"
        " pg_get_expr(d.adbin, d.adrelid), a.attidentity <> '',"
        " pg_get_serial_sequence(quote_ident(n.nspname) || '.' || quote_ident(c.relname), a.attname),"
        " (SELECT co.collname FROM pg_collation co WHERE co.oid = a.attcollation AND a.attcollation <>"
        "  (SELECT ty.typcollation FROM pg_type ty WHERE ty.oid = a.atttypid))"  # db_collation: not the type's own
        " FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
        " LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum"
        f" WHERE c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped AND {USER_SCHEMAS} AND "
        + NOT_FROM_EXTENSION.format(oid="c.oid", catalog="pg_class") + " ORDER BY 1, 2, a.attnum")
    for schema, table, col, ctype, null, default, identity, sequence, collation in cursor.fetchall():
        raw = default
        # serial (Django < 4.1) and identity columns are both "auto"; a renamed table keeps its
        # old sequence name, so the name is not compared
        if identity or (default and default.startswith("nextval(")):
            default = "auto"
        entry = out["tables"].setdefault(pg_key(schema, table), {"virtual": None, "columns": {}})
        entry["columns"][col] = {"type": ctype, "null": null, "default": default, "raw_default": raw,
                                 "identity": identity, "sequence": sequence if raw and raw.startswith("nextval(") else None,
                                 **({"collation": collation} if collation else {})}
    cursor.execute(  # partitioned tables and their partitions (a RunSQL's: Django makes none)
        "SELECT n.nspname, c.relname, CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END, pn.nspname, p.relname,"
        " CASE WHEN c.relispartition THEN pg_get_expr(c.relpartbound, c.oid) END, quote_ident(pn.nspname) || '.' ||"
        " quote_ident(p.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " LEFT JOIN pg_inherits i ON c.relispartition AND i.inhrelid = c.oid LEFT JOIN pg_class p ON p.oid = i.inhparent"
        " LEFT JOIN pg_namespace pn ON pn.oid = p.relnamespace"
        f" WHERE c.relkind IN ('r', 'p') AND (c.relkind = 'p' OR c.relispartition) AND {USER_SCHEMAS}")
    for schema, table, key, parent_schema, parent, bound, parent_sql in cursor.fetchall():
        entry = out["tables"].setdefault(pg_key(schema, table), {"virtual": None, "columns": {}})
        if key:
            entry["partition_by"] = key
        if parent:
            entry.update(partition_of=pg_key(parent_schema, parent), bound=bound, parent_sql=parent_sql)
    cursor.execute(
        "SELECT n.nspname, i.relname, t.relname, pg_get_indexdef(i.oid), x.indisvalid, i.relispartition"
        " FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid"
        " JOIN pg_namespace n ON n.oid = i.relnamespace"
        f" WHERE {USER_SCHEMAS} AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.oid)"
        " AND " + NOT_FROM_EXTENSION.format(oid="t.oid", catalog="pg_class"))
    for schema, name, table, definition, valid, attached in cursor.fetchall():
        # The definition without the index's own name: names follow the table's history. An index
        # left invalid (a failed CREATE INDEX CONCURRENTLY) enforces and serves nothing: not equal.
        body = definition.split(" USING ", 1)[1] if " USING " in definition else definition
        unique = "UNIQUE " if definition.startswith("CREATE UNIQUE") else ""
        body += "" if valid else " (INVALID)"
        out["indexes"][pg_key(schema, name)] = {"table": pg_key(schema, table), "definition": unique + body,
                                                # (a partitioned table's is printed ON ONLY it: made so, it
                                                # would stay invalid, its partitions without one)
                                                "sql": definition.replace(" ON ONLY ", " ON ", 1), "name": name,
                                                "rename": f"ALTER INDEX {qident(schema)}.{OLD} RENAME TO {NEW}",
                                                # a partition's, made by its partitioned table's index
                                                **({"attached": True} if attached else {})}
    cursor.execute(
        "SELECT n.nspname, k.conname, t.relname, k.contype, pg_get_constraintdef(k.oid),"
        " quote_ident(n.nspname) || '.' || quote_ident(t.relname), quote_ident(k.conname), k.conparentid <> 0"
        " FROM pg_constraint k JOIN pg_class t ON t.oid = k.conrelid JOIN pg_namespace n ON n.oid = t.relnamespace"
        f" WHERE {USER_SCHEMAS} AND " + NOT_FROM_EXTENSION.format(oid="t.oid", catalog="pg_class"))
    for schema, name, table, kind, definition, qtable, qname, inherited in cursor.fetchall():
        out["constraints"][pg_key(schema, name)] = {
            "table": pg_key(schema, table), "definition": f"{kind} {definition}",
            "sql": f"ALTER TABLE {qtable} ADD CONSTRAINT {qname} {definition}", "name": name,
            "rename": f"ALTER TABLE {qtable} RENAME CONSTRAINT {OLD} TO {NEW}",
            **({"inherited": True} if inherited else {})}  # a partition's, made by its partitioned table's
    cursor.execute(
        "SELECT n.nspname, c.relname, c.relkind, pg_get_viewdef(c.oid),"
        " quote_ident(n.nspname) || '.' || quote_ident(c.relname), c.relispopulated"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        f" WHERE c.relkind IN ('v', 'm') AND {USER_SCHEMAS} AND "
        + NOT_FROM_EXTENSION.format(oid="c.oid", catalog="pg_class"))
    for schema, name, kind, definition, quoted, populated in cursor.fetchall():
        what = "MATERIALIZED VIEW" if kind == "m" else "VIEW"
        # a materialized view made WITH NO DATA stays so (reading it fails until the application
        # refreshes it), rather than filled over the empty tables of a new database
        made = definition.strip().rstrip(";") + ("" if populated else " WITH NO DATA")
        out["views"][pg_key(schema, name)] = {"definition": f"{what} {' '.join(definition.split())}",
                                              "sql": f"CREATE {what} {quoted} AS {made}"}
    cursor.execute(
        "SELECT n.nspname, p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')', pg_get_functiondef(p.oid)"
        " FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
        f" WHERE p.prokind IN ('f', 'p') AND {USER_SCHEMAS} AND "
        + OWN_ROUTINE)
    for schema, signature, definition in cursor.fetchall():
        out["functions"][pg_key(schema, signature)] = {"definition": " ".join(definition.split()), "sql": definition}
    cursor.execute(
        "SELECT n.nspname, c.relname, g.tgname, pg_get_triggerdef(g.oid)"
        " FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
        f" WHERE NOT g.tgisinternal AND {OWN_TRIGGER} AND {USER_SCHEMAS}")
    for schema, table, name, definition in cursor.fetchall():
        out["triggers"][f"{pg_key(schema, table)}.{name}"] = {"table": pg_key(schema, table),
                                                              "definition": definition, "sql": definition}
    cursor.execute(f"SELECT n.nspname, quote_ident(n.nspname) FROM pg_namespace n WHERE {USER_SCHEMAS} AND "
                   + NOT_FROM_EXTENSION.format(oid="n.oid", catalog="pg_namespace"))
    for name, quoted in cursor.fetchall():  # one made by a RunSQL holds tables: made before them
        out["schemas"][name] = {"definition": "schema", "sql": f"CREATE SCHEMA IF NOT EXISTS {quoted}"}
    cursor.execute(
        "SELECT n.nspname, c.relname, c.relforcerowsecurity, quote_ident(n.nspname) || '.' || quote_ident(c.relname)"
        f" FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relrowsecurity AND {USER_SCHEMAS}")
    for schema, table, forced, quoted in cursor.fetchall():  # a tenant's rows hidden from another: security, not rows
        out["row_security"][pg_key(schema, table)] = {
            "table": pg_key(schema, table), "definition": "enabled, forced" if forced else "enabled",
            "sql": f"ALTER TABLE {quoted} ENABLE ROW LEVEL SECURITY" + (f"; ALTER TABLE {quoted} FORCE ROW LEVEL SECURITY"
                                                                         if forced else "")}
    cursor.execute(
        "SELECT n.nspname, c.relname, p.polname, p.polpermissive,"
        " CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE' WHEN 'd' THEN 'DELETE' ELSE 'ALL' END,"
        " CASE WHEN p.polroles = '{0}' THEN 'PUBLIC' ELSE array_to_string(ARRAY(SELECT quote_ident(r.rolname) FROM pg_roles r"
        "   WHERE r.oid = ANY (p.polroles) ORDER BY r.rolname), ', ') END,"
        " pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid),"
        " quote_ident(n.nspname) || '.' || quote_ident(c.relname), quote_ident(p.polname)"
        f" FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {USER_SCHEMAS}")
    for schema, table, name, permissive, command, roles, using, check, qtable, qname in cursor.fetchall():
        clauses = (f" AS {'PERMISSIVE' if permissive else 'RESTRICTIVE'} FOR {command} TO {roles}"
                   + (f" USING ({using})" if using else "") + (f" WITH CHECK ({check})" if check else ""))
        out["policies"][f"{pg_key(schema, table)}.{name}"] = {"table": pg_key(schema, table), "definition": clauses.strip(),
                                                             "sql": f"CREATE POLICY {qname} ON {qtable}{clauses}"}
    cursor.execute(COMMENTS + " ORDER BY 1, 2, 3")
    for kind, schema, name, table, text, quoted, target, obj in cursor.fetchall():
        # an index's or a constraint's by its definition and table: its name follows the table's
        # history (a renamed model's), like the index's own comparison
        key = (f"{kind} {name} on {pg_key(schema, table)}" if obj else
               f"{kind} {name if kind == 'schema' else pg_key(schema, name)}")
        out["comments"][key] = {"definition": text, "target": target, "sql": f"{target} IS {quoted}",
                                "table": pg_key(schema, table) if table else None, **({"name": obj} if obj else {})}
    # Types of the project's own (a RunSQL CREATE TYPE ... AS ENUM, CREATE DOMAIN, a composite or a
    # range type), each after those it is made of (a domain's base, a range's subtype, a composite's
    # attributes; an array by its element)
    cursor.execute(
        "SELECT n.nspname, t.typname, quote_ident(n.nspname) || '.' || quote_ident(t.typname), t.typtype, CASE t.typtype"
        " WHEN 'e' THEN 'ENUM (' || coalesce((SELECT string_agg(quote_literal(e.enumlabel), ', ' ORDER BY e.enumsortorder)"
        "  FROM pg_enum e WHERE e.enumtypid = t.oid), '') || ')'"
        " WHEN 'd' THEN format_type(t.typbasetype, t.typtypmod)"
        "  || coalesce((SELECT ' COLLATE ' || quote_ident(cn.nspname) || '.' || quote_ident(co.collname) FROM pg_collation co"
        "   JOIN pg_namespace cn ON cn.oid = co.collnamespace WHERE co.oid = t.typcollation AND t.typcollation <>"
        "   (SELECT b.typcollation FROM pg_type b WHERE b.oid = t.typbasetype)), '')"
        "  || coalesce(' DEFAULT ' || t.typdefault, '') || CASE WHEN t.typnotnull THEN ' NOT NULL' ELSE '' END"
        "  || coalesce((SELECT string_agg(' CONSTRAINT ' || quote_ident(k.conname) || ' ' || pg_get_constraintdef(k.oid), ''"
        "   ORDER BY k.conname) FROM pg_constraint k WHERE k.contypid = t.oid AND k.contype = 'c' AND k.convalidated), '')"
        " WHEN 'c' THEN '(' || coalesce((SELECT string_agg(quote_ident(a.attname) || ' ' || format_type(a.atttypid,"
        "  a.atttypmod), ', ' ORDER BY a.attnum) FROM pg_attribute a WHERE a.attrelid = t.typrelid AND a.attnum > 0"
        "  AND NOT a.attisdropped), '') || ')'"
        " ELSE (SELECT 'RANGE (subtype = ' || format_type(r.rngsubtype, NULL) || coalesce(', subtype_diff = ' ||"
        "  nullif(r.rngsubdiff, 0)::regproc::text, '') || ')' FROM pg_range r WHERE r.rngtypid = t.oid) END,"
        " t.oid, ARRAY(SELECT CASE WHEN u.typcategory = 'A' AND u.typelem <> 0 THEN u.typelem ELSE u.oid END FROM pg_type u"
        "  WHERE u.oid = t.typbasetype OR u.oid IN (SELECT r.rngsubtype FROM pg_range r WHERE r.rngtypid = t.oid)"
        "  OR u.oid IN (SELECT a.atttypid FROM pg_attribute a WHERE t.typrelid <> 0 AND a.attrelid = t.typrelid"
        "  AND a.attnum > 0 AND NOT a.attisdropped)),"
        # a domain's constraint left NOT VALID is added so, after the domain
        " coalesce((SELECT string_agg('; ALTER DOMAIN ' || quote_ident(n.nspname) || '.' || quote_ident(t.typname)"
        "  || ' ADD CONSTRAINT ' || quote_ident(k.conname) || ' ' || pg_get_constraintdef(k.oid), '' ORDER BY k.conname)"
        "  FROM pg_constraint k WHERE k.contypid = t.oid AND NOT k.convalidated), ''),"
        # what it needs beyond types: a routine of the project's (a domain's CHECK, a range's
        # subtype_diff) or a table (its row type, as a composite's attribute)
        " CASE WHEN EXISTS (SELECT 1 FROM pg_type u WHERE u.typrelid <> 0 AND u.oid IN (SELECT CASE WHEN"
        "  v.typcategory = 'A' AND v.typelem <> 0 THEN v.typelem ELSE v.oid END FROM pg_attribute a JOIN pg_type v ON"
        "  v.oid = a.atttypid WHERE t.typrelid <> 0 AND a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped)"
        "  AND (SELECT c.relkind FROM pg_class c WHERE c.oid = u.typrelid) <> 'c') THEN 'tables'"
        " WHEN EXISTS (SELECT 1 FROM pg_depend d JOIN pg_proc p ON d.refclassid = 'pg_proc'::regclass AND p.oid = d.refobjid"
        "  JOIN pg_namespace pn ON pn.oid = p.pronamespace WHERE pn.nspname NOT IN ('pg_catalog', 'information_schema')"
        # (an extension's in public is made first too; one in a schema of its own comes with the
        # carried migration, before these)
        f"  AND NOT {SERVER_ROUTINE} AND NOT EXISTS (SELECT 1 FROM pg_depend e JOIN pg_extension x ON x.oid = e.refobjid"
        "  WHERE e.classid = 'pg_proc'::regclass AND e.objid = p.oid AND e.deptype = 'e'"
        "  AND x.extnamespace = 'public'::regnamespace)"
        "  AND ((d.classid = 'pg_type'::regclass AND d.objid = t.oid) OR (d.classid = 'pg_constraint'::regclass AND"
        "  d.objid IN (SELECT k.oid FROM pg_constraint k WHERE k.contypid = t.oid)))) THEN 'functions'"
        # or a type of an extension in a schema of its own (the carried migration makes it)
        " WHEN EXISTS (SELECT 1 FROM pg_depend e JOIN pg_extension x ON x.oid = e.refobjid WHERE e.classid ="
        "  'pg_type'::regclass AND e.deptype = 'e' AND x.extnamespace <> 'public'::regnamespace AND e.objid IN"
        "  (t.typbasetype, (SELECT r.rngsubtype FROM pg_range r WHERE r.rngtypid = t.oid))) THEN 'functions' END"
        f" FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE {USER_SCHEMAS} AND {OWN_TYPES}"
        " ORDER BY position(t.typtype IN 'erdc'), 1, 2")
    found = {oid: (schema, name, quoted, kind, body, set(uses), later, after)
             for schema, name, quoted, kind, body, oid, uses, later, after in cursor.fetchall()}
    for oid in dependency_order(found, lambda oid: found[oid][5]):
        schema, name, quoted, kind, body, uses, later, after = found[oid]
        made = (f"CREATE DOMAIN {quoted} AS {body}" if kind == "d" else f"CREATE TYPE {quoted} AS {body}") + later
        # one made of a type that needs more needs it too (tables outweigh routines: they come later)
        needs = {after} | {out["types"][key].get("after") for key in (pg_key(*found[u][:2]) for u in uses if u in found)}
        out["types"][pg_key(schema, name)] = {"definition": ("DOMAIN " if kind == "d" else "") + body + later, "sql": made,
                                              **({"after": "tables" if "tables" in needs else "functions"}
                                                 if needs - {None} else {})}
    # Collations of the project's own (CreateCollation: a case-insensitive one for db_collation,
    # say), read through to_jsonb: the locale's column is named differently from one version to another
    cursor.execute(
        "SELECT n.nspname, co.collname, quote_ident(n.nspname) || '.' || quote_ident(co.collname), co.collprovider,"
        " quote_literal(coalesce(to_jsonb(co) ->> 'colliculocale', to_jsonb(co) ->> 'colllocale')),"
        " quote_literal(co.collcollate), quote_literal(co.collctype),"
        " co.collisdeterministic FROM pg_collation co JOIN pg_namespace n ON n.oid = co.collnamespace"
        f" WHERE {USER_SCHEMAS} AND " + NOT_FROM_EXTENSION.format(oid="co.oid", catalog="pg_collation"))
    for schema, name, quoted, provider, locale, collate, ctype, deterministic in cursor.fetchall():
        provider = {"i": "icu", "c": "libc", "b": "builtin"}.get(provider, "libc")
        options = ([f"locale = {locale}"] if provider != "libc" and locale is not None
                   else [f"lc_collate = {collate}", f"lc_ctype = {ctype}"])
        options = [f"provider = {provider}", *options, f"deterministic = {'true' if deterministic else 'false'}"]
        out["collations"][pg_key(schema, name)] = {"definition": ", ".join(options),
                                                   "sql": f"CREATE COLLATION IF NOT EXISTS {quoted} ({', '.join(options)})"}
    cursor.execute("SELECT e.extname, quote_ident(e.extname), n.nspname, quote_ident(n.nspname) FROM pg_extension e"
                   " JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname <> 'plpgsql'")
    for name, quoted, schema, qschema in cursor.fetchall():  # its schema too: its functions and types are named by it
        out["extensions"][name] = {"definition": f"{name} in schema {schema}",
                                   "sql": f"CREATE EXTENSION IF NOT EXISTS {quoted} WITH SCHEMA {qschema}"}
    cursor.execute(
        "SELECT s.schemaname, s.sequencename, coalesce(s.last_value, 0),"
        " (SELECT CASE WHEN tn.nspname = 'public' THEN '' ELSE tn.nspname || '.' END || t.relname || '.' || a.attname"
        "   FROM pg_depend d JOIN pg_class t ON t.oid = d.refobjid JOIN pg_namespace tn ON tn.oid = t.relnamespace"
        "   JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid"
        "   WHERE d.objid = (quote_ident(s.schemaname) || '.' || quote_ident(s.sequencename))::regclass"
        "   AND d.classid = 'pg_class'::regclass AND d.deptype IN ('a', 'i') LIMIT 1),"
        " s.data_type::text, s.increment_by, s.min_value, s.max_value, s.start_value, s.cache_size, s.cycle"
        " FROM pg_sequences s WHERE s.schemaname NOT IN ('pg_catalog', 'information_schema')")
    for schema, name, value, owner, *options in cursor.fetchall():
        # Keyed by the column that owns it: a renamed table keeps its old sequence name.
        out["sequences"][owner or pg_key(schema, name)] = {
            "table": (owner or "").rsplit(".", 1)[0] or None, "value": int(value), "name": name,
            "rename": f"ALTER SEQUENCE {qident(schema)}.{OLD} RENAME TO {NEW}", "schema": schema,
            **({} if owner else {"sql": sequence_sql(schema, name, *options)})}
    return out


def sequence_sql(schema, name, data_type, increment, minimum, maximum, start, cache, cycle):
    """CREATE SEQUENCE for a sequence no column owns (its value is data, set apart)."""
    return (f"CREATE SEQUENCE {qident(schema)}.{qident(name)} AS {data_type} INCREMENT BY {int(increment)} "
            f"MINVALUE {int(minimum)} MAXVALUE {int(maximum)} START WITH {int(start)} CACHE {int(cache)}"
            f"{' CYCLE' if cycle else ' NO CYCLE'}")


GRANTEE = "CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END"  # of an aclexplode() row


# The relations, routines, types and collations of the user schemas, with their owners, as (nsp,
# name, what, owner, signature): `what` is the word ALTER ... OWNER TO takes, `signature` what
# finds the object again in another database (a routine by its arguments' types). A sequence a
# column owns follows its table, and an extension's objects are the extension's.
OWNED = (
    "SELECT c.relnamespace AS nsp, c.relname AS name, CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW' WHEN 'm' THEN"
    " 'MATERIALIZED VIEW' WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END AS what, c.relowner AS owner, c.relname AS sig"
    f" FROM pg_class c WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND c.relnamespace {IN_USER_SCHEMA}"
    f" AND NOT {COLUMN_OWNED} AND " + NOT_FROM_EXTENSION.format(oid="c.oid", catalog="pg_class")
    + " UNION ALL SELECT p.pronamespace, p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',"
    f" CASE p.prokind WHEN 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END, p.proowner, {SIGNATURE} FROM pg_proc p"
    f" WHERE p.prokind IN ('f', 'p') AND p.pronamespace {IN_USER_SCHEMA} AND " + OWN_ROUTINE
    + " UNION ALL SELECT t.typnamespace, t.typname, CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, t.typowner,"
    f" t.typname FROM pg_type t WHERE t.typnamespace {IN_USER_SCHEMA} AND {OWN_TYPES}"
    " UNION ALL SELECT co.collnamespace, co.collname, 'COLLATION', co.collowner, co.collname FROM pg_collation co WHERE"
    f" co.collnamespace {IN_USER_SCHEMA} AND " + NOT_FROM_EXTENSION.format(oid="co.oid", catalog="pg_collation"))


def pg_grants(cursor):
    """Privileges the migrations do not make, so a rebuild must give them again: on tables, views
    and sequences (kind TABLE, SEQUENCE) and on columns (COLUMN) to roles other than the owner,
    on schemas to roles other than the owner (SCHEMA: a REVOKE ... FROM PUBLIC shows as the
    absence of PUBLIC's USAGE), the owners of relations, routines, types and collations other
    than the connected role (OWNER: `detail` says which kind; the migrations make everything the
    connected role's) and the default privileges (DEFAULT, from ALTER DEFAULT PRIVILEGES: `role`
    is whose new objects get them, `objects` which kind, `schema` None for the whole database; a
    role-wide entry holds its full list, the owner's own included)."""
    cursor.execute(
        "SELECT n.nspname, c.relname, CASE c.relkind WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END, NULL,"
        f" {GRANTEE}, a.privilege_type, a.is_grantable,"
        " (SELECT t.relname || '.' || col.attname FROM pg_depend d JOIN pg_class t ON t.oid = d.refobjid"
        "   JOIN pg_attribute col ON col.attrelid = d.refobjid AND col.attnum = d.refobjsubid"
        "   WHERE d.objid = c.oid AND d.classid = 'pg_class'::regclass AND d.deptype IN ('a', 'i') LIMIT 1)"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(c.relacl) a"
        f" WHERE c.relacl IS NOT NULL AND c.relkind IN ('r', 'p', 'v', 'm', 'S') AND {USER_SCHEMAS}"
        " AND a.grantee <> c.relowner"
        " UNION ALL SELECT n.nspname, c.relname, 'COLUMN', col.attname,"
        f" {GRANTEE}, a.privilege_type, a.is_grantable, NULL"
        " FROM pg_attribute col JOIN pg_class c ON c.oid = col.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace,"
        " aclexplode(col.attacl) a"
        f" WHERE col.attacl IS NOT NULL AND col.attnum > 0 AND NOT col.attisdropped AND {USER_SCHEMAS}"
        " AND a.grantee <> c.relowner"
        " UNION ALL SELECT n.nspname, n.nspname, 'SCHEMA', NULL,"
        f" {GRANTEE}, a.privilege_type, a.is_grantable, NULL"
        f" FROM pg_namespace n, aclexplode(n.nspacl) a WHERE n.nspacl IS NOT NULL AND {USER_SCHEMAS}"
        " AND a.grantee <> n.nspowner"
        " UNION ALL SELECT n.nspname, n.nspname, 'SCHEMA OWNER', NULL, pg_get_userbyid(n.nspowner), 'OWNER', false, NULL"
        f" FROM pg_namespace n WHERE {USER_SCHEMAS} AND n.nspname <> 'public'"  # every database has its own public
        " UNION ALL SELECT n.nspname, o.name, 'OWNER', o.what, pg_get_userbyid(o.owner), 'OWNER', false, o.sig"
        f" FROM ({OWNED}) o JOIN pg_namespace n ON n.oid = o.nsp WHERE {USER_SCHEMAS}"
        " AND o.owner <> (SELECT oid FROM pg_roles WHERE rolname = current_user)"
        " UNION ALL SELECT n.nspname, pg_get_userbyid(d.defaclrole), 'DEFAULT',"
        " CASE d.defaclobjtype WHEN 'r' THEN 'TABLES' WHEN 'S' THEN 'SEQUENCES' WHEN 'f' THEN 'FUNCTIONS'"
        "  WHEN 'T' THEN 'TYPES' WHEN 'n' THEN 'SCHEMAS' ELSE d.defaclobjtype::text END,"
        f" {GRANTEE}, a.privilege_type, a.is_grantable, NULL"
        " FROM pg_default_acl d LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace, aclexplode(d.defaclacl) a"
        " ORDER BY 3, 1, 2, 4, 5, 6")
    out = []
    for schema, name, kind, detail, grantee, privilege, grantable, owned_by in cursor.fetchall():
        grant = {"schema": schema, "name": name, "kind": kind, "grantee": grantee, "privilege": privilege,
                 "grantable": bool(grantable), "owned_by": owned_by}
        if kind == "COLUMN":
            grant["column"] = detail
        elif kind == "DEFAULT":
            grant.update(role=name, objects=detail)
        elif kind == "OWNER":  # (its last column: what finds the object again, see OWNED)
            grant.update(what=detail, signature=grant.pop("owned_by"), owned_by=None)
        out.append(grant)
    return out


def pg_beyond_reach(cursor):
    """What the connected role could not make again in a new database (nor restore from a backup),
    by the roles it would have to act for: {why: [roles]} (see BEYOND). Default privileges of a role
    it is not (a member of), a schema or another object such a role owns, an object a superuser
    owns, an object whose owner may create in its schema only by a GRANT, and privileges granted
    by a role other than the object's owner (a WITH GRANT OPTION chain: pg_dump gives them back
    under SET SESSION AUTHORIZATION, a superuser's right). Empty for a superuser."""
    cursor.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
    if cursor.fetchone()[0]:
        return {}
    unreachable = "NOT pg_has_role(current_user, {role}, 'MEMBER')"  # what ALTER ... OWNER TO and FOR ROLE need
    superuser = "(SELECT rolsuper FROM pg_roles WHERE oid = {role})"
    # ALTER ... OWNER TO gives an object to a role the connected one is a member of (a NOINHERIT
    # member too), and only where that role may create objects; a restore (pg_dump's order) gives
    # the owners before any GRANT, so by the schema's ownership, inherited (public's owner is the
    # database's), which a superuser has everywhere
    queries = {
        BEYOND["defaults"]: f"SELECT d.defaclrole FROM pg_default_acl d WHERE {unreachable.format(role='d.defaclrole')}",
        BEYOND["schemas"]: f"SELECT n.nspowner FROM pg_namespace n WHERE {USER_SCHEMAS} AND n.nspname <> 'public'"
                           f" AND {unreachable.format(role='n.nspowner')}",
        BEYOND["owners"]: f"SELECT o.owner FROM ({OWNED}) o JOIN pg_namespace n ON n.oid = o.nsp WHERE {USER_SCHEMAS}"
                          f" AND {unreachable.format(role='o.owner')} AND NOT {superuser.format(role='o.owner')}",
        BEYOND["superuser"]: "SELECT lower(o.what) || ' ' || quote_ident(n.nspname) || '.' || o.name || ' (' ||"  # named
                             f" pg_get_userbyid(o.owner) || ')' FROM ({OWNED}) o JOIN pg_namespace n ON n.oid = o.nsp"
                             f" WHERE {USER_SCHEMAS} AND {superuser.format(role='o.owner')}",
        BEYOND["create"]: f"SELECT o.owner FROM ({OWNED}) o JOIN pg_namespace n ON n.oid = o.nsp WHERE {USER_SCHEMAS}"
                          " AND o.owner <> (SELECT oid FROM pg_roles WHERE rolname = current_user)"
                          " AND NOT pg_has_role(o.owner, n.nspowner, 'USAGE')",
        BEYOND["grantors"]:
            "SELECT a.grantor FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(c.relacl) a"
            f" WHERE c.relacl IS NOT NULL AND {USER_SCHEMAS} AND a.grantor <> c.relowner"
            " UNION SELECT a.grantor FROM pg_attribute col JOIN pg_class c ON c.oid = col.attrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(col.attacl) a"
            f" WHERE col.attacl IS NOT NULL AND {USER_SCHEMAS} AND a.grantor <> c.relowner"
            " UNION SELECT a.grantor FROM pg_namespace n, aclexplode(n.nspacl) a"
            f" WHERE n.nspacl IS NOT NULL AND {USER_SCHEMAS} AND a.grantor <> n.nspowner",
    }
    out = {}
    for why, query in queries.items():
        named = "r" if why == BEYOND["superuser"] else "pg_get_userbyid(r)"  # the objects themselves, else their roles
        cursor.execute(f"SELECT DISTINCT {named} FROM ({query}) AS found(r) ORDER BY 1")
        roles = [role for (role,) in cursor.fetchall()]
        if roles:
            out[why] = roles
    return out


# What pg_beyond_reach names, and the way out of each (besides running the reset as a superuser,
# or --strategy fake): {role} is the connected role, {roles} those named.
BEYOND = {
    "defaults": "default privileges (ALTER DEFAULT PRIVILEGES FOR ROLE) of",
    "schemas": "schemas owned by",
    "owners": "tables, views, sequences, functions, types or collations owned by",
    "superuser": "what a superuser owns:",
    "create": "objects whose owner may create in their schema only by a GRANT (a restore gives owners before "
              "privileges), owned by",
    "grantors": "privileges granted on another role's objects (WITH GRANT OPTION) by",
}
BEYOND_WAYS = {
    BEYOND["defaults"]: "GRANT {roles} TO {role} for the reset's length",
    BEYOND["schemas"]: "GRANT {roles} TO {role} for the reset's length",
    BEYOND["owners"]: "GRANT {roles} TO {role} for the reset's length",
    BEYOND["superuser"]: "a superuser gives each to {role} first: ALTER ... OWNER TO {role}",
    BEYOND["create"]: "only a superuser could give them back",
    BEYOND["grantors"]: "only a superuser could give them again",
}


def grant_key(grant):
    """How a grant is named in the objects a reset keeps (the key verify compares)."""
    kind, to = grant["kind"], f" to {grant['grantee']}"
    if kind == "COLUMN":
        return f"grant {grant['privilege']} on column {pg_key(grant['schema'], grant['name'])}.{grant['column']}{to}"
    if kind == "SCHEMA":
        return f"grant {grant['privilege']} on schema {grant['schema']}{to}"
    if kind == "SCHEMA OWNER":
        return f"schema {grant['schema']} owned by {grant['grantee']}"
    if kind == "OWNER":
        return f"{grant['what'].lower()} {pg_key(grant['schema'], grant['name'])} owned by {grant['grantee']}"
    if kind == "DEFAULT":
        where = f" in schema {grant['schema']}" if grant["schema"] else ""
        return f"default privilege {grant['privilege']} on {grant['objects'].lower()} made by {grant['role']}{where}{to}"
    target = f"sequence of {grant['owned_by']}" if grant.get("owned_by") else pg_key(grant["schema"], grant["name"])
    return f"grant {grant['privilege']} on {target}{to}"


def describe(connection, content=False, upto=None):
    """Schema (and, with content, every table's digest) of an open Django connection."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            schema = pg_schema(cursor)
            if content:
                schema["content"] = pg_content(cursor, upto=upto)
            return schema
    raw = connection.connection  # sqlite3.Connection: PRAGMAs need it directly
    schema = sqlite_schema(raw)
    if content:
        schema["content"] = sqlite_content(raw, upto=upto)
    return schema


def objects(schema):
    """The schema objects a reset must keep, as "kind name" strings (tables are counted apart;
    index names follow a table's history, so indexes are compared by definition elsewhere)."""
    out = [f"view {name}" for name in schema["views"]]
    out += [f"trigger {name}" for name in schema["triggers"]]
    out += [f"function {name}" for name in schema["functions"]]
    out += [f"extension {name}" for name in schema["extensions"]]
    out += [f"schema {name}" for name in schema.get("schemas", {})]
    out += [f"collation {name}" for name in schema.get("collations", {})]
    out += [f"type {name}" for name in schema.get("types", {})]
    out += [f"row-security {name}" for name in schema.get("row_security", {})]
    out += [f"policy {name}" for name in schema.get("policies", {})]
    out += [f"virtual table {name}" for name, t in schema["tables"].items() if t.get("virtual")]
    out += [comment_key(name, c["definition"]) for name, c in schema.get("comments", {}).items()]
    return sorted(out)


def comment_key(name, text):
    """A comment among the objects a reset keeps: its object and a digest of its text (a changed
    comment is the old one gone)."""
    return f"comment on {name} #{hashlib.sha256(text.encode('utf-8')).hexdigest()[:8]}"


def differences(a, b, skip=(), content=True, names=("old", "new"), comments=True):
    """What differs between two described databases, as (object, what differs) pairs: tables and
    their columns, indexes and constraints (by definition: their names follow a table's
    history), views, functions, triggers, extensions, sequences, with `comments` their comments
    (COMMENT ON), and with content, every table's rows. Tables in `skip` (removed models) and
    django_migrations are left out."""
    skip = set(skip) | {"django_migrations"}
    left, right = names
    out = []

    def by_name(kind, label):
        ak, bk = a.get(kind, {}), b.get(kind, {})  # (a description saved by an older remigrate may lack a kind)
        for name in sorted(set(ak) | set(bk)):
            table = (ak.get(name) or bk.get(name)).get("table")
            if table in skip or name in skip:
                continue
            if name not in bk:
                out.append((f"{label} {name}", f"only in the {left}"))
            elif name not in ak:
                out.append((f"{label} {name}", f"only in the {right}"))
            elif ak[name]["definition"] != bk[name]["definition"]:
                out.append((f"{label} {name}", f"defined differently: {ak[name]['definition'][:120]!r} "
                                               f"vs {bk[name]['definition'][:120]!r}"))

    for table in sorted(set(a["tables"]) | set(b["tables"])):
        if table in skip:
            continue
        ta, tb = a["tables"].get(table), b["tables"].get(table)
        if tb is None or ta is None:
            out.append((f"table {table}", f"only in the {left if tb is None else right}"))
            continue
        if (ta.get("virtual") or "") != (tb.get("virtual") or ""):
            out.append((f"table {table}", f"virtual module {ta.get('virtual')} vs {tb.get('virtual')}"))
        for prop, what in (("partition_by", "partitioned by"), ("partition_of", "a partition of"), ("bound", "for values")):
            if ta.get(prop) != tb.get(prop):
                out.append((f"table {table}", f"{what} {ta.get(prop) or '-'} vs {tb.get(prop) or '-'}"))
        for col in sorted(set(ta["columns"]) | set(tb["columns"])):
            ca, cb = ta["columns"].get(col), tb["columns"].get(col)
            if ca is None or cb is None:
                out.append((f"column {table}.{col}", f"only in the {left if cb is None else right}"))
                continue
            for prop in ("type", "null", "default", "collation"):
                if ca.get(prop) != cb.get(prop):
                    out.append((f"column {table}.{col}", f"{prop} {ca.get(prop)!r} vs {cb.get(prop)!r}"))
    for kind, label in (("indexes", "index"), ("constraints", "constraint")):
        def defs(side):
            found = {}
            for name, obj in side[kind].items():
                if obj["table"] not in skip:
                    found.setdefault((obj["table"], obj["definition"]), []).append(name)
            return found
        da, db = defs(a), defs(b)
        for key in sorted(set(da) | set(db)):
            if len(da.get(key, [])) != len(db.get(key, [])):
                names_ = ", ".join(sorted(da.get(key, []) + db.get(key, [])))
                where = left if len(da.get(key, [])) > len(db.get(key, [])) else right
                out.append((f"{label} {names_}", f"on {key[0]}: {key[1][:120]} only in the {where}"))
    by_name("views", "view")
    by_name("functions", "function")
    by_name("triggers", "trigger")
    by_name("extensions", "extension")
    by_name("collations", "collation")
    by_name("types", "type")
    by_name("schemas", "schema")
    by_name("row_security", "row security of")
    by_name("policies", "policy")
    if comments:
        by_name("comments", "comment on")
    for key in sorted(set(a["sequences"]) | set(b["sequences"])):  # a sequence of its own (no column owns it)
        sa, sb = a["sequences"].get(key), b["sequences"].get(key)
        if not (sa or sb).get("table") and (sa is None or sb is None) and key not in skip:
            out.append((f"sequence {key}", f"only in the {left if sb is None else right}"))
    if content:
        ca, cb = a.get("content", {}), b.get("content", {})
        for table in sorted(set(ca) & set(cb)):
            if table in skip:
                continue
            if ca[table]["digest"] != cb[table]["digest"]:
                out.append((f"rows {table}", f"{ca[table]['rows']} rows in the {left}, {cb[table]['rows']} in the "
                                             f"{right}, content differs" if ca[table]["rows"] != cb[table]["rows"]
                            else f"{ca[table]['rows']} rows in both, content differs"))
        for key in sorted(set(a["sequences"]) | set(b["sequences"])):
            sa, sb = a["sequences"].get(key), b["sequences"].get(key)
            table = (sa or sb).get("table") or key
            if table in skip or key.split(".")[0] in skip:
                continue
            if (sa or {}).get("value", 0) != (sb or {}).get("value", 0):
                out.append((f"sequence {key}", f"at {(sa or {}).get('value', 0)} in the {left}, "
                                               f"{(sb or {}).get('value', 0)} in the {right}"))
    return out


def accepted(difference, names):
    """Whether `--accept-difference NAME` covers this difference: NAME is the object's name (a
    table, view, function, trigger, index or constraint) or the whole key ("view reports")."""
    key = difference[0]
    kind, _, name = key.partition(" ")
    parts = {name, key, name.split(".")[0], name.split("(")[0]}
    return any(n in parts for n in names)


def table_parts(sql):
    """A SQLite CREATE TABLE statement as the set of its column and constraint clauses, whitespace
    and order aside: two tables with the same parts behave the same."""
    body = (sql or "")[(sql or "").find("(") + 1:(sql or "").rfind(")")]
    parts, depth, quote, current = [], 0, None, ""
    for ch in body:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'`[":
            quote = "]" if ch == "[" else ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(" ".join(current.split()))
            current = ""
            continue
        current += ch
    parts.append(" ".join(current.split()))
    return sorted(p for p in parts if p)


def name_plan(live, new, skip=()):
    """What a fake reset renames so that the live database's names become the ones a fresh
    install from the new history gives: indexes and constraints of the same definition on the
    same table, and sequences of the same column, whose names differ (named after a table's old
    name, say). Returns [{"kind", "table", "from", "to", "rename", "sql"}]: `rename` is the live
    object's statement template (PostgreSQL), `sql` the new object's definition (SQLite
    indexes are dropped and made again under the new name)."""
    skip = set(skip) | {"django_migrations"}
    out = []
    for kind, label in (("indexes", "index"), ("constraints", "constraint")):
        def defs(side):
            found = {}
            for name, obj in side[kind].items():
                if obj["table"] not in skip and obj.get("sql") is not None:  # SQLite's own autoindexes follow the table
                    found.setdefault((obj["table"], obj["definition"]), []).append(name)
            return found
        dl, dn = defs(live), defs(new)
        for key in sorted(set(dl) & set(dn)):
            gone = sorted(n for n in dl[key] if n not in dn[key])
            came = sorted(n for n in dn[key] if n not in dl[key])
            for old, fresh in zip(gone, came):
                out.append({"kind": label, "table": key[0], "from": old, "to": fresh,
                            "rename": live[kind][old].get("rename"), "sql": new[kind][fresh]["sql"],
                            "old_sql": live[kind][old]["sql"],
                            "to_name": new[kind][fresh].get("name", fresh), "from_name": live[kind][old].get("name", old)})
    for key in sorted(set(live["sequences"]) & set(new["sequences"])):
        a, b = live["sequences"][key], new["sequences"][key]
        if (a.get("table") or key) in skip or not a.get("name") or a.get("name") == b.get("name"):
            continue
        out.append({"kind": "sequence", "table": a.get("table"), "from": a["name"], "to": b["name"],
                    "rename": a.get("rename"), "sql": None, "old_sql": None, "to_name": b["name"],
                    "from_name": a["name"]})
    return out


# Names Django makes up (an 8-hex digest of the table and columns, with a letter in it, then its
# own suffixes), also under older Django versions whose digests differ from today's. Names the
# server makes up (_pkey, _seq ...) come out of the old history's scratch database as they are.
GENERATED_NAME = re.compile(r"_(?=[0-9]*[a-f])[0-9a-f]{8}(_(fk_.+|uniq|like))?$")


def explained(rename, old):
    """Whether a live name that a fake would rename is one the old history itself gives (scratch
    database A has it), or one Django made up (GENERATED_NAME): a leftover of a RenameModel or
    RenameField. Otherwise it was made or renamed by hand, and something may use it."""
    kind = {"index": "indexes", "constraint": "constraints"}.get(rename["kind"])
    if kind and rename["from"] in (old or {}).get(kind, {}):
        return True
    if rename["kind"] == "sequence" and any(s.get("name") == rename["from"] for s in (old or {}).get("sequences", {}).values()):
        return True
    return bool(GENERATED_NAME.search(rename["from_name"]))


def strict_differences(live, new, skip=(), names=("live database", "new history")):
    """Everything that keeps a fake reset from being exact, names aside (name_plan renames those):
    every difference `differences` finds, accepted or not; SQLite tables whose clauses differ
    (checks, references, collations the column list does not show); sequences only one side has;
    and a column that is an identity on one side but a serial on the other is told apart."""
    skip = set(skip) | {"django_migrations"}
    left, right = names
    out = differences(live, new, skip=skip, content=False, names=names, comments=False)  # a fake keeps the live ones
    for table in sorted(set(live["tables"]) & set(new["tables"])):
        if table in skip:
            continue
        a, b = live["tables"][table], new["tables"][table]
        if a.get("virtual") is None and "sql" in a and "sql" in b and table_parts(a["sql"]) != table_parts(b["sql"]):
            only = sorted(set(table_parts(a["sql"])) ^ set(table_parts(b["sql"])))
            out.append((f"table {table}", f"its clauses differ: {'; '.join(only)[:200]}"))
    for key in sorted(set(live["sequences"]) ^ set(new["sequences"])):
        seq = live["sequences"].get(key) or new["sequences"].get(key)
        if "name" not in seq:  # SQLite: a row of sqlite_sequence is data (the table's AUTOINCREMENT is compared)
            continue
        if (seq.get("table") or key) not in skip and key.split(".")[0] not in skip:
            out.append((f"sequence {key}", f"only in the {left if key in live['sequences'] else right}"))
    return out


def serial_columns(live, new, skip=()):
    """Columns that are serial (a sequence default) on one side and an identity on the other:
    Django handles both alike (an old database keeps its serial columns after Django 4.1), so a
    fake reset leaves them, and says so."""
    out = []
    for table in sorted(set(live["tables"]) & set(new["tables"]) - set(skip)):
        for col, a in live["tables"][table]["columns"].items():
            b = new["tables"][table]["columns"].get(col)
            if b and a.get("identity") != b.get("identity"):
                out.append(f"{table}.{col}")
    return out
