"""remigrate's helper that runs beside the Django project, in the project's own interpreter.

It is started by the remigrate tasks (locally, or uploaded to a remote host) with the
project folder as its working directory. Standard library and Django only: the project's
virtualenv need not have anything of remigrate's installed.

Usage: python remigrate_probe.py [--env-json FILE] [--settings MODULE] COMMAND [ARGS...]
       python remigrate_probe.py --serve [--env-json FILE] [--settings MODULE]   (requests on stdin)

Every command prints one line "REMIGRATE-JSON: {...}" on success, or
"REMIGRATE-ERROR: message" and exits 2 on a failure it understands.
"""
import argparse
import ast
import contextlib
import hashlib
import importlib
import io
import json
import os
import select
import shutil
import signal
import sqlite3
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import remigrate_history as history  # noqa: E402  (beside this file, uploaded with it)
import remigrate_schema as schema_facts  # noqa: E402
from remigrate_scrub import masked_url  # noqa: E402
from remigrate_scrub import scrub as scrub_secrets  # noqa: E402

OK = "REMIGRATE-JSON: "
ERR = "REMIGRATE-ERROR: "
DB_ENV_NAMES = ("DATABASE_URL", "DB_ENGINE", "DB_NAME", "DB_USER", "DB_PASSWORD", "DB_HOST", "DB_PORT", "DB_PATH")


DB_NAME_OVERRIDE = None  # --db-name
SQLITE_SCRATCH = None  # --sqlite-scratch: a SQLite file instead of the project's database
MIGRATIONS_FROM = None  # --migrations-from: a folder holding rmg_<label> copies of the apps' migrations
FROM_ENV_FILE = []  # names set from the project's .env (the environment wins over it)


class ProbeError(Exception):
    """A failure with a message meant for the user."""


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
PROGRESS = "REMIGRATE-PROGRESS: "
REPLY = "REMIGRATE-REPLY: "  # the long-lived probe's lines: ready, progress, answers


def reading(label, unit="bytes"):
    """A progress callback (done, total) for a step that reads every row."""
    return lambda done, total: report_progress(label, done, total, unit)


def report_progress(label, done, total, unit="bytes"):
    """How far a long step is, for the controller: the long-lived probe passes these lines on
    while the step runs (a step run on its own just leaves them in its error output)."""
    sys.stderr.write(PROGRESS + json.dumps({"label": label, "done": done, "total": total, "unit": unit}) + "\n")
    sys.stderr.flush()


# ---------------------------------------------------------------- Django

def settings_module(explicit):
    """The settings module: --settings, else DJANGO_SETTINGS_MODULE, else manage.py's setdefault."""
    if explicit:
        return explicit
    if os.environ.get("DJANGO_SETTINGS_MODULE"):
        return os.environ["DJANGO_SETTINGS_MODULE"]
    manage = Path("manage.py")
    if not manage.is_file():
        raise ProbeError(f"no manage.py in {Path.cwd()}; pass --project-dir pointing at the folder that holds manage.py")
    for node in ast.walk(ast.parse(manage.read_text(encoding="utf-8"))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "setdefault"
            and len(node.args) == 2
            and all(isinstance(a, ast.Constant) for a in node.args)
            and node.args[0].value == "DJANGO_SETTINGS_MODULE"
        ):
            return node.args[1].value
    raise ProbeError("manage.py does not set DJANGO_SETTINGS_MODULE; pass --settings")


def load_settings(explicit_settings):
    """Django's settings without django.setup(): the database part needs no backend import."""
    os.environ["DJANGO_SETTINGS_MODULE"] = settings_module(explicit_settings)
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        from django.conf import settings

        settings.DATABASES  # noqa: B018  (loads the settings module)
        if SQLITE_SCRATCH:  # measure on SQLite too, whatever the project's engine
            settings.DATABASES["default"] = {"ENGINE": "django.db.backends.sqlite3", "NAME": SQLITE_SCRATCH}
        elif DB_NAME_OVERRIDE:  # work on a database beside the live one (a new SQLite file, a scratch copy)
            settings.DATABASES["default"]["NAME"] = DB_NAME_OVERRIDE
    except ImportError as exc:
        if getattr(exc, "name", "") == "django":
            raise ProbeError(f"Django is not importable by {sys.executable}; pass --python with the project's interpreter")
        raise ProbeError(f"the project's settings failed to load ({type(exc).__name__}: {exc}); "
                         "check the settings and DATABASE_URL / DB_* variables")
    except Exception as exc:  # the project's own settings failed: say so in one line
        raise ProbeError(f"the project's settings failed to load ({type(exc).__name__}: {exc}); "
                         "check the settings and DATABASE_URL / DB_* variables")
    return settings


def setup_django(explicit_settings):
    settings = load_settings(explicit_settings)
    import django

    try:
        django.setup()
    except Exception as exc:
        raise ProbeError(f"the project's apps failed to load ({type(exc).__name__}: {exc}); "
                         "check the settings and DATABASE_URL / DB_* variables")
    if MIGRATIONS_FROM:  # the apps' migrations are read from (and written to) copies
        sys.path.insert(0, MIGRATIONS_FROM)
        modules = dict(getattr(settings, "MIGRATION_MODULES", {}) or {})
        for folder in Path(MIGRATIONS_FROM).iterdir():
            if folder.name.startswith("rmg_"):
                modules[folder.name[4:]] = folder.name
        settings.MIGRATION_MODULES = modules
    return django


def project_apps():
    """Installed apps, each marked whether its code lives under the project folder."""
    from django.apps import apps
    from django.db.migrations.loader import MigrationLoader

    root = Path.cwd().resolve()
    out = []
    for config in apps.get_app_configs():
        path = Path(config.path).resolve()
        module, _explicit = MigrationLoader.migrations_module(config.label)
        mig_dir = None
        if module:
            try:
                mod = __import__(module, fromlist=["__path__"])
                mig_dir = str(Path(list(mod.__path__)[0]).resolve())
            except ImportError:
                mig_dir = None
        in_project = root in path.parents and "site-packages" not in path.parts
        out.append({
            "label": config.label,
            "name": config.name,
            "path": str(path),
            "migrations_module": module,
            "migrations_dir": mig_dir,
            "in_project": in_project,
            "models": sorted(m._meta.object_name for m in config.get_models(include_auto_created=False)),
        })
    return out


def cmd_settings(opts):
    # The database settings are read before django.setup(), which imports the backend: an
    # unsupported engine must be reported as such, not as a missing driver.
    db = dict(load_settings(opts.settings).DATABASES.get("default") or {})
    import django

    try:
        setup_django(opts.settings)
        apps, setup_error = project_apps(), None
    except ProbeError as exc:
        apps, setup_error = [], str(exc)
    keep = ("ENGINE", "NAME", "USER", "PASSWORD", "HOST", "PORT", "OPTIONS")
    database = {k: db.get(k) for k in keep}
    database["NAME"] = str(database["NAME"]) if database["NAME"] is not None else ""
    database["OPTIONS"] = {k: v for k, v in (db.get("OPTIONS") or {}).items() if isinstance(v, (str, int, float, bool))}
    return {
        "settings_module": os.environ["DJANGO_SETTINGS_MODULE"],
        "django_version": django.get_version(),
        "debug": bool(getattr(load_settings(opts.settings), "DEBUG", False)),
        "python": sys.executable,
        "python_version": sys.version.split()[0],
        "database": database,
        "environment": {name: os.environ[name] for name in DB_ENV_NAMES if name in os.environ},
        "from_env_file": [name for name in FROM_ENV_FILE if name in DB_ENV_NAMES],
        "apps": apps,
        "setup_error": setup_error and scrub(setup_error),
    }


def pg_stats(cursor, count=True):
    """Properties, relations, exact row counts (unless `count` is off: the caller takes them
    from the content digests, which read every row anyway) and sequences."""
    cursor.execute("SHOW server_version_num")
    version_num = int(cursor.fetchone()[0])
    cursor.execute("SHOW server_version")
    version = cursor.fetchone()[0]
    cursor.execute(
        "SELECT d.datname, pg_encoding_to_char(d.encoding), d.datcollate, d.datctype, pg_get_userbyid(d.datdba),"
        " pg_database_size(d.oid), current_user, r.rolsuper, r.rolcreatedb,"
        " (SELECT setconfig FROM pg_db_role_setting s WHERE s.setdatabase = d.oid AND s.setrole = 0)"
        " FROM pg_database d, pg_roles r WHERE d.datname = current_database() AND r.rolname = current_user"
    )
    name, encoding, collate, ctype, owner, size, user, superuser, createdb, config = cursor.fetchone()
    properties = {
        "name": name, "encoding": encoding, "collate": collate, "ctype": ctype, "owner": owner,
        "size_bytes": size, "settings": list(config or []), "connected_as": user,
        "superuser": superuser, "createdb": createdb,
    }
    # Names are quoted by the server (quote_ident), never by string pasting here.
    user_schemas = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'"
    cursor.execute(
        "SELECT n.nspname, c.relname, c.relkind, quote_ident(n.nspname) || '.' || quote_ident(c.relname), pg_get_userbyid(c.relowner),"
        f" {schema_facts.COLUMN_OWNED}"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        f" WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND {user_schemas} ORDER BY 1, 2"
    )
    relations, tables = [], {}
    for schema, rel, kind, quoted, owner, owned in cursor.fetchall():
        key = rel if schema == "public" else f"{schema}.{rel}"
        relations.append({"schema": schema, "name": rel, "kind": kind, "owner": owner, "owned_by_column": owned})
        if kind in ("r", "p"):
            tables[key] = quoted
    counts = {}
    for key, quoted in tables.items():
        if count:
            cursor.execute(f"SELECT count(*) FROM {quoted}")
        counts[key] = cursor.fetchone()[0] if count else None
    sequences = pg_sequence_marks(cursor)
    grants = schema_facts.pg_grants(cursor)
    properties["beyond_reach"] = schema_facts.pg_beyond_reach(cursor)
    properties["owners_recorded"] = True  # among the grants (OWNER): see bundle.new_access
    schema = schema_facts.pg_schema(cursor)
    return {"server_version": version, "server_version_num": version_num, "properties": properties,
            "relations": relations, "tables": counts, "sequences": sequences, "grants": grants,
            "objects": schema_facts.objects(schema) + [schema_facts.grant_key(g) for g in grants],
            # what has a comment (COMMENT ON ...): a rebuild takes away one the database did not have
            "comments": sorted(c["target"] for c in schema["comments"].values()),
            **({} if count else {"quoted": tables})}  # for counts_from_content


def pg_sequence_marks(cursor):
    """Every sequence with its high-water mark: how far it has gone, the last value handed out (a
    descending sequence's negated, so a greater mark is always further on). One a column owns
    (serial, identity) is found by its (table, column), one of its own (table None) by its name;
    one of its own this role may not read is left to the proof (which names it)."""
    cursor.execute(
        "SELECT n.nspname, c.relname, a.attname,"
        " pg_get_serial_sequence(quote_ident(n.nspname) || '.' || quote_ident(c.relname), a.attname)"
        " FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
        f" WHERE c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped AND {schema_facts.USER_SCHEMAS}"
        " ORDER BY 1, 2, 3"
    )
    owned = [(schema, rel, column, seq) for schema, rel, column, seq in cursor.fetchall() if seq]
    cursor.execute(
        "SELECT NULL, NULL, NULL, quote_ident(n.nspname) || '.' || quote_ident(c.relname)"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_sequence q ON q.seqrelid = c.oid"
        f" WHERE c.relkind = 'S' AND {schema_facts.USER_SCHEMAS} AND has_table_privilege(c.oid, 'SELECT')"
        f" AND {schema_facts.NOT_FROM_EXTENSION.format(oid='c.oid', catalog='pg_class')}"
        " AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid"
        "                 AND d.deptype IN ('a', 'i')) ORDER BY 4")
    sequences = []
    for schema, rel, column, seq in owned + cursor.fetchall():
        literal = "'" + seq.replace("'", "''") + "'"  # seq comes quoted from the server (an identifier)
        cursor.execute(f"SELECT last_value, is_called, (SELECT seqincrement FROM pg_sequence WHERE seqrelid = "
                       f"{literal}::regclass) FROM {seq}")
        last_value, is_called, increment = cursor.fetchone()
        step = -1 if increment < 0 else 1
        sequences.append({
            "table": (rel if schema == "public" else f"{schema}.{rel}") if rel else None, "column": column,
            "sequence": seq, "last_value": last_value, "is_called": is_called, "increment": increment,
            "high_water": step * last_value if is_called else step * last_value - 1,
        })
    return sequences


def sqlite_quote(name):
    return '"' + name.replace('"', '""') + '"'


def sqlite_stats(conn, fk=True, count=True):
    """Row counts (unless `count` is off: see counts_from_content), AUTOINCREMENT high-water
    marks and properties of an open SQLite database (with `fk`, its broken references counted:
    a read of every referencing table)."""
    _virtual, shadows = schema_facts.sqlite_virtual_tables(conn)  # a virtual table's shadows are part of it
    rows = [(n, k) for n, k in conn.execute("SELECT name, type FROM sqlite_master WHERE type IN ('table', 'view') "
                                            "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name") if n not in shadows]
    counts = {name: conn.execute(f"SELECT count(*) FROM {sqlite_quote(name)}").fetchone()[0] if count else None
              for name, kind in rows if kind == "table"}
    sequences = []
    has_seq = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'").fetchone()
    if has_seq:
        for table, seq in conn.execute("SELECT name, seq FROM sqlite_sequence ORDER BY name").fetchall():
            pk = [r[1] for r in conn.execute(f"PRAGMA table_info({sqlite_quote(table)})").fetchall() if r[5] == 1]
            sequences.append({"table": table, "column": pk[0] if len(pk) == 1 else None, "sequence": "sqlite_sequence",
                              "last_value": seq, "is_called": True, "high_water": seq})
    # Broken references are data, not damage: counted here, judged by the caller.
    props = {"foreign_key_violations": len(conn.execute("PRAGMA foreign_key_check").fetchall())} if fk else {}
    props.update({p: conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_size", "page_count", "journal_mode", "user_version", "application_id", "encoding", "auto_vacuum")})
    return {"server_version": sqlite3.sqlite_version, "properties": props,
            "relations": [{"schema": "main", "name": n, "kind": "r" if k == "table" else "v"} for n, k in rows],
            "tables": counts, "sequences": sequences, "objects": schema_facts.objects(schema_facts.sqlite_schema(conn))}


def pg_content_in_sessions(connection, cursor, upto, label, snapshot=None, algorithm=None):
    """The content digests of every table, read by several sessions at once that all see one
    snapshot (the one given, else this transaction's, exported): each table's digest is its
    own, so the tables are shared out, biggest first, and the results put together. The server
    may read one big table with parallel workers too."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    tables = schema_facts.pg_tables(cursor)
    jobs = min(4, os.cpu_count() or 1, len(tables))
    progress = reading(label)
    if jobs < 2:
        return schema_facts.pg_content(cursor, upto=upto, progress=progress, algorithm=algorithm)
    cursor.execute("SELECT " + ", ".join("pg_relation_size(%s::regclass)" for _ in tables), [q for q, *_rest in tables.values()])
    sizes = dict(zip(tables, cursor.fetchone()))
    if not snapshot:
        cursor.execute("SELECT pg_export_snapshot()")
        snapshot = cursor.fetchone()[0]
    lock, done, total = threading.Lock(), [0], sum(sizes.values())

    def read(keys):
        conn = connection.get_new_connection(connection.get_connection_params())
        seen = [0]

        def tell(done_here, _total_here):  # this session's bytes, into the shared count
            with lock:
                done[0] += done_here - seen[0]
                seen[0] = done_here
                progress(done[0], total)
        try:
            conn.autocommit = True
            cur = conn.cursor()
            cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            cur.execute("SET TRANSACTION SNAPSHOT %s", [snapshot])
            out = schema_facts.pg_content(cur, tables=set(keys), upto=upto, progress=tell, algorithm=algorithm)
            cur.execute("COMMIT")
            return out
        finally:
            conn.close()

    content = {}
    with ThreadPoolExecutor(jobs) as pool:
        for part in pool.map(read, schema_facts.share_out(sizes, jobs)):
            content.update(part)
    return content


def counts_from_content(stats, upto, count):
    """Row counts taken from the digests (one read of each table, not two); a table digested only
    up to a key (`upto`), or not digested, is counted on its own."""
    quoted = stats.pop("quoted")
    for key in stats["tables"]:
        entry = stats["content"].get(key)
        stats["tables"][key] = entry["rows"] if entry and key not in (upto or {}) else count(quoted[key])


def applied_migrations(cursor, quote):
    try:
        cursor.execute(f"SELECT app, name FROM {quote('django_migrations')} ORDER BY id")
    except Exception:
        return None
    return [list(r) for r in cursor.fetchall()]


def content_options(args):
    """`content [UPTO-JSON]`: digest every table's rows (UPTO: table -> highest key to include)."""
    if not args or args[0] != "content":
        return False, None
    return True, (json.loads(args[1]) if len(args) > 1 else None)


def take_option(args, name):
    """The value after `name` in `args` (both taken out), or None."""
    if name not in args:
        return None
    at = args.index(name)
    value = args[at + 1]
    del args[at:at + 2]
    return value


def cmd_stats(opts):
    """Exact row counts, sequences and properties of the project's live database; with
    `content`, a digest of every table's rows too."""
    args = list(opts.args)
    snapshot = take_option(args, "snapshot")  # read the snapshot another session exported (the one pg_dump reads)
    algorithm = take_option(args, "digest")  # a bundle's content digest (default: the best this server has)
    content, upto = content_options(args)
    setup_django(opts.settings)
    from django.db import connection

    try:
        connection.ensure_connection()
    except Exception as exc:
        raise ProbeError(f"cannot connect to the database: {str(exc).strip().splitlines()[0]}")
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")  # one snapshot for every count
            if snapshot:
                cursor.execute("SET TRANSACTION SNAPSHOT %s", [snapshot])
            stats = pg_stats(cursor, count=not content)
            if content:
                algorithm = algorithm or schema_facts.pg_digest_algorithm(cursor)
                stats["content"] = pg_content_in_sessions(connection, cursor, upto, "reading every row", snapshot, algorithm)
                stats["content_digest"] = algorithm
                def count(quoted):
                    cursor.execute(f"SELECT count(*) FROM {quoted}")
                    return cursor.fetchone()[0]

                counts_from_content(stats, upto, count)
            # last: a database never migrated has no django_migrations, and the failed query ends the transaction
            stats["applied_migrations"] = applied_migrations(cursor, lambda n: f'"{n}"')
            cursor.execute("COMMIT")
        return stats
    if connection.vendor == "sqlite":
        return file_stats(connection.settings_dict["NAME"], content=content, upto=upto)
    raise ProbeError(f"stats are not implemented for {connection.vendor}")


# ---------------------------------------------------------------- SQLite files

def open_ro(path):
    if not Path(path).is_file():
        raise ProbeError(f"SQLite file {path} does not exist")
    return sqlite3.connect(schema_facts.read_only_uri(path), uri=True)


def integrity(conn):
    """PRAGMA integrity_check of an open connection, or of a file (on a connection of its own)."""
    if isinstance(conn, str):
        with contextlib.closing(open_ro(conn)) as own:
            return integrity(own)
    rows = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]
    if rows != ["ok"]:
        lines = [line for row in rows for line in str(row).splitlines()]  # (one row may hold them all)
        more = f" (and {len(lines) - 3} more)" if len(lines) > 3 else ""
        raise ProbeError("SQLite integrity_check failed: " + "; ".join(line[:120] for line in lines[:3]) + more)


# A file this big has its rows digested by several processes (the tests lower it to run that path).
PARALLEL_FROM = int(os.environ.get("REMIGRATE_SQLITE_PARALLEL_FROM") or 32 * 1024 * 1024)


def file_stats(path, check=False, content=False, upto=None, fk=True, alone=False, reference=None, by_copy=False):
    """Stats of a SQLite file; with check, its integrity_check must pass; with content, every
    table's content entry (rows, digest, key), the digests read by several processes when the
    file is `alone` (no one else writes to it: a backup copy, a file built beside) and big.
    `by_copy` (a backup copy): a table that a later copy of it can be compared with row by row
    is not digested (schema_facts.BY_COPY). With a `reference` ({"path", "sha256", "content"} of
    a backup copy and the entries its manifest holds): each table is compared with the copy's,
    value by value, where a key pairs their rows, and has the copy's entry when they are equal
    (the copy proven unchanged since the backup meanwhile, by its sha256); the others are
    digested."""
    if content and reference:
        present_copy(reference)
    conn = open_ro(path)
    try:
        proven = {}
        with concurrently() as beside:  # (threads only: the digests below may fork)
            if check:
                beside(lambda: integrity(path))
            if content and reference:
                beside(lambda: unchanged_copy(reference))
            stats = sqlite_stats(conn, fk=fk, count=not content)
            stats["applied_migrations"] = applied_migrations(conn.cursor(), sqlite_quote)
            if content and reference:
                with attached(conn, reference["path"]):
                    proven = compared_with_copy(conn, reference["content"], upto)
            elif content and by_copy:
                proven = schema_facts.sqlite_by_copy(conn, schema_facts.sqlite_chosen(conn)[1])
        if content:
            rest = [t for t in schema_facts.sqlite_chosen(conn)[1] if t not in proven]
            jobs = min(4, os.cpu_count() or 1)
            if not rest:
                digested = {}
            elif alone and jobs > 1 and os.path.getsize(path) >= PARALLEL_FROM:
                digested = schema_facts.sqlite_content_parallel(
                    conn, str(Path(path).resolve()), jobs, upto=upto, progress=reading("reading every row", "pieces"),
                    tables=rest)
            else:
                digested = schema_facts.sqlite_content(conn, tables=rest, upto=upto,
                                                       progress=reading("reading every row", "tables"))
            stats["content"] = {**proven, **digested}
            stats["content_digest"] = schema_facts.MD5_REPR
            stats["quoted"] = {t: sqlite_quote(t) for t in stats["tables"]}
            counts_from_content(stats, upto, lambda q: conn.execute(f"SELECT count(*) FROM {q}").fetchone()[0])
        return stats
    finally:
        conn.close()


@contextlib.contextmanager
def concurrently():
    """A function that starts work in a thread (SQLite and hashlib let go of the interpreter while
    they read, so a second core helps); every one is waited for at the end of the block, and the
    first failure raised."""
    import threading

    threads, failures = [], []

    def start(work):
        def run():
            try:
                work()
            except BaseException as exc:  # noqa: BLE001  (raised in the caller's thread below)
                failures.append(exc)
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        threads.append(thread)
    try:
        yield start
    finally:
        for thread in threads:
            thread.join()
    if failures:
        raise failures[0]


def present_copy(reference, consequence="the database cannot be checked against it (`inv backups` lists the bundles)"):
    if not Path(reference["path"]).is_file():
        raise ProbeError(f"the backup copy {reference['path']} is gone; {consequence}")


def unchanged_copy(reference):
    if sha256_of(reference["path"]) != reference["sha256"]:
        raise ProbeError(f"the backup copy {reference['path']} changed since the backup was made (its sha256 differs); "
                         "the new database cannot be checked against it")


@contextlib.contextmanager
def attached(conn, path):
    """The SQLite file at `path` ATTACHed read-only to `conn` as `ref` for the block (outside a
    transaction: SQLite cannot attach inside one)."""
    conn.execute("ATTACH DATABASE ? AS ref", (schema_facts.read_only_uri(path),))
    try:
        yield
    finally:
        conn.execute("DETACH DATABASE ref")


def compared_with_copy(conn, expected, upto=None):
    """{table: content entry} of the tables of `conn` that have an entry in `expected` (a
    manifest's, for the copy ATTACHed as `ref`), proven equal to the copy's or not: paired by
    key and compared value by value (rows up to a key where `upto` says); a table whose entry
    has no digest (BY_COPY) and that cannot be paired is digested in both files. Equal, it gets
    the expected entry's digest; else a digest that says how it differs. Left out: tables with
    no key to pair rows by that the backup digested (the caller digests them)."""
    virtual, chosen = schema_facts.sqlite_chosen(conn)
    upto = upto or {}
    out = {}
    candidates = [t for t in chosen if t in expected]

    def rows_here(table):
        return conn.execute(f"SELECT count(*) FROM main.{sqlite_quote(table)}").fetchone()[0]

    for n, table in enumerate(candidates, 1):
        report_progress("comparing every row with the backup copy", n, len(candidates), "tables")
        want, limit = expected[table], upto.get(table)
        try:
            key = schema_facts.sqlite_match_key(conn, table, virtual.get(table), schemas=("main", "ref"))
            if key is not None and (limit is None or len(key) == 1):
                mine, theirs, equal = schema_facts.sqlite_equal(conn, table, key, upto=limit)
                same, proof = mine == theirs == equal, "compared with the backup copy, value by value"
                detail = f"{mine} rows here, {theirs} there, {equal} the same"
            elif (columns := [sorted(schema_facts.sqlite_columns(conn, table, side)) for side in ("main", "ref")])[0] != columns[1]:
                # a digest does not name the columns: a renamed one would keep it
                mine = rows_here(table)
                same, proof = False, "columns compared with the backup copy's"
                detail = f"columns {', '.join(columns[0])} here, {', '.join(columns[1])} there"
            elif want.get("digest") == schema_facts.BY_COPY:
                here = schema_facts.sqlite_digest(conn, table, "main", limit, table in virtual)
                there = schema_facts.sqlite_digest(conn, table, "ref", limit, table in virtual)
                mine, same, proof = here["rows"], here["digest"] == there["digest"], "digested in both files"
                detail = f"{here['rows']} rows here, {there['rows']} there, digests {here['digest']} and {there['digest']}"
            else:
                continue  # digested by the caller, against the manifest's digest
        except sqlite3.Error as exc:
            if want.get("digest") != schema_facts.BY_COPY:
                continue  # the digest will tell
            mine = rows_here(table)
            same, proof, detail = False, "not comparable", f"could not be compared: {exc}"
        pk = want.get("pk") or []
        out[table] = {"rows": mine, "pk": want.get("pk"), "max_pk": schema_facts.sqlite_top(conn, table, pk),
                      "digest": want["digest"] if same else f"differs from the backup copy ({detail})", "proof": proof}
    return out


ROLLBACK_MODES = ("delete", "truncate", "persist")


def live_mark(path, conn):
    """What later proves that nothing was committed to a SQLite file: in the rollback-journal
    modes every commit bumps the file change counter (header bytes 24-27); read under a shared
    lock (no writer is half-way), with the file's inode. None in WAL mode, where commits go to
    the -wal and the counter is not kept up."""
    in_transaction = conn.in_transaction
    if not in_transaction:
        conn.execute("BEGIN")
    conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # holds the shared lock
    with open(path, "rb") as fh:
        header = fh.read(100)
    if not in_transaction:
        conn.execute("COMMIT")
    if header[18:20] != b"\x01\x01":  # 2 is WAL, as the file itself says (whatever a connection thinks)
        return None
    return {"counter": int.from_bytes(header[24:28], "big"), "inode": os.stat(path).st_ino}


def cmd_file_stats(opts):
    """PATH [content UPTO-JSON] [no-fk-check] [alone] [check] [reference FILE]: file_stats of a
    SQLite file (FILE: the JSON of its `reference`)."""
    path, *args = opts.args
    reference = take_option(args, "reference")
    flags = ("no-fk-check", "alone", "check")
    content, upto = content_options([a for a in args if a not in flags])
    return file_stats(path, "check" in args, content, upto, fk="no-fk-check" not in args, alone="alone" in args,
                      reference=json.loads(Path(reference).read_text(encoding="utf-8")) if reference else None)


def cmd_sqlite_backup(opts):
    """Copy a live SQLite database with the online backup API, then check the copy; the live
    file's mark (live_mark) is taken first, so any commit after it shows."""
    src, dst = opts.args
    if Path(dst).exists():
        raise ProbeError(f"{dst} exists already; refusing to overwrite")
    source = open_ro(src)
    mark = live_mark(src, source)
    old = os.umask(0o077)
    try:
        target = sqlite3.connect(dst)
        with target:
            source.backup(target)
        target.execute("PRAGMA journal_mode=DELETE")  # a self-contained file, no -wal beside it
        target.close()
    finally:
        os.umask(old)
        source.close()
    # tables a key pairs are compared with this copy when needed, the others digested now; the
    # whole file is read back afterwards (sqlite-verify). Broken references are not counted: the
    # reset's load refuses any, and a later check that finds some counts the copy's then.
    return {**file_stats(dst, content=True, alone=True, by_copy=True, fk=False), "live_mark": mark}


def paused_for_tests(moment):
    """REMIGRATE_FAULT=pause:MOMENT[:SECONDS] (the tests' fault injection, as tasks/faults.py's)
    stops here for a while; unset in normal use."""
    action, _, rest = os.environ.get("REMIGRATE_FAULT", "").partition(":")
    where, _, seconds = rest.partition(":")
    if action == "pause" and where == moment:
        time.sleep(float(seconds or 120))


def cmd_sqlite_verify(opts):
    """The full read of a backup copy after it is written (integrity_check)."""
    paused_for_tests("sqlite-verify")
    return file_stats(opts.args[0], check=True, fk=False)


def cmd_sqlite_restore(opts):
    """Put a backup's content into the live database file, in one transaction of the backup API."""
    src, dst = opts.args
    source = open_ro(src)
    integrity(source)
    target = sqlite3.connect(dst, timeout=30)
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()
    return file_stats(dst, check=True)


# ---------------------------------------------------------------- files

def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cmd_checksum(opts):
    return {name: {"size": os.path.getsize(name), "sha256": sha256_of(name)} for name in opts.args}


def cmd_prepare_dir(opts):
    """Create a private folder if needed, prove it writable, and say how much room it has."""
    (path,) = opts.args
    folder = Path(path).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".remigrate-write-test-"):
            pass
        ignore = folder.parent / ".gitignore"
        if folder.parent.name == ".remigrate" and not ignore.exists():
            ignore.write_text("# remigrate's backups hold database dumps: never commit them\n*\n", encoding="utf-8")
    except OSError as exc:
        raise ProbeError(f"backup folder {folder} is not writable ({exc.strerror}); choose another with --backup-dir")
    return {"path": str(folder.resolve()), "free_bytes": shutil.disk_usage(folder).free}


def cmd_free_space(opts):
    """Free bytes on the file system of a path (the nearest folder of it that exists)."""
    path = Path(opts.args[0])
    while not path.exists() and path != path.parent:
        path = path.parent
    return {"path": str(path), "free_bytes": shutil.disk_usage(path).free}


def cmd_archive_migrations(opts):
    """Tar every file of the given migrations folders (paths stored relative to the project)."""
    out, *folders = opts.args
    root = Path.cwd().resolve()
    files = []
    old = os.umask(0o077)
    try:
        with tarfile.open(out, "x:gz") as tar:
            for folder in folders:
                for path in sorted(Path(folder).rglob("*")):
                    if path.is_file() and "__pycache__" not in path.parts:
                        rel = path.resolve().relative_to(root)
                        tar.add(path, arcname=str(rel))
                        files.append(str(rel))
    finally:
        os.umask(old)
    return {"files": files}


def cmd_list_bundles(opts):
    root = Path(opts.args[0]).expanduser()
    out = []
    if not root.is_dir():
        return out
    for folder in sorted(root.iterdir()):
        if not folder.is_dir():
            continue
        manifest = None
        try:
            manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            manifest = None
        try:
            journal = json.loads((folder / "journal.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            journal = {}
        sizes = {str(f.relative_to(folder)): f.stat().st_size for f in folder.rglob("*") if f.is_file()}
        out.append({"name": folder.name, "path": str(folder), "manifest": manifest, "size": sum(sizes.values()),
                    "sizes": sizes, "mtime": folder.stat().st_mtime, "reset": journal.get("status"),
                    "strategy": (journal.get("plan") or {}).get("strategy"),
                    # what a swap kept for a rollback (once it is done), and what a rollback set aside
                    "kept": journal.get("kept") if journal.get("status") == "done" and not journal.get("kept_removed")
                    else None,
                    "rejected": None if journal.get("rejected_removed") else journal.get("rejected")})
    return out


def cmd_finalize_bundle(opts):
    """Make every file owner-only, then rename the verified partial folder to its final name."""
    partial, final = (Path(a) for a in opts.args)
    for path in partial.iterdir():
        path.chmod(0o600)
    partial.chmod(0o700)
    if final.exists():
        raise ProbeError(f"{final} exists already; refusing to overwrite a bundle")
    os.rename(partial, final)
    return {"path": str(final)}


# ---------------------------------------------------------------- reset planning

def special_operations(operations):
    """Operations that makemigrations will not write again: code, SQL, extensions, custom ones."""
    for op in operations:
        kind = type(op).__name__
        if kind == "SeparateDatabaseAndState":
            yield kind, history.describe_op(op)
            yield from special_operations(op.database_operations)
        elif history.is_special(op):
            yield kind, history.describe_op(op)


def model_tables(model):
    """The table of a model and of its auto-created many-to-many tables."""
    tables = [model._meta.db_table]
    for f in model._meta.local_many_to_many:
        if f.remote_field.through._meta.auto_created:
            tables.append(f.m2m_db_table())
    return tables


def cmd_plan(opts):
    """What a reset would touch: migration files, removed models' tables, special operations."""
    setup_django(opts.settings)
    from django.apps import apps
    from django.db.migrations.loader import MigrationLoader

    loader = MigrationLoader(None, ignore_no_migrations=True)
    own = [a for a in project_apps() if a["in_project"] and a["migrations_dir"]]
    own_labels = {a["label"] for a in own}
    for app in own:
        names = sorted(name for (label, name) in loader.disk_migrations if label == app["label"])
        app["migration_files"] = [f"{name}.py" for name in names]
        # A fresh history starts from migrations marked initial (what makemigrations writes for
        # a new app); what follows them (carried-over or hand-written migrations) may have any name.
        roots = [n for n in names if not any(dep[0] == app["label"]
                                             for dep in loader.disk_migrations[(app["label"], n)].dependencies)]
        app["starts_initial"] = all(loader.disk_migrations[(app["label"], n)].initial for n in roots)
        folder = Path(app["migrations_dir"])
        app["other_files"] = sorted(
            str(p.relative_to(folder)) for p in folder.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.name != "__init__.py" and p.name not in app["migration_files"]
        )
    special = []
    for (label, name), migration in sorted(loader.disk_migrations.items()):
        if label in own_labels:
            for kind, detail in special_operations(migration.operations):
                special.append({"app": label, "migration": name, "operation": kind, "detail": detail})
    state = loader.project_state()
    ever = models_ever(loader)
    removals = {spec: resolve_removal(spec, state, ever, apps) for spec in opts.args}
    current = sorted({t for m in apps.get_models(include_auto_created=True) if m._meta.managed and not m._meta.proxy
                      for t in [m._meta.db_table]})
    history = sorted(f"{label}.{model.name}" for (label, _), model in state.models.items())
    return {"apps": own, "special_operations": special, "removals": removals, "model_tables": current,
            "history_models": history, "pending": pending_changes(loader, removals), "other_databases": other_databases()}


def other_databases():
    """Aliases of DATABASES that name another database than the default one (a replica alias of
    the same database is not another): a reset rewrites the history of the default one only."""
    from django.conf import settings

    def where(conf):
        return (conf.get("ENGINE"), str(conf.get("NAME")), conf.get("HOST") or "", str(conf.get("PORT") or ""))
    default = settings.DATABASES.get("default", {})
    return sorted(alias for alias, conf in settings.DATABASES.items()
                  if alias != "default" and where(conf) != where(default))


def models_ever(loader):
    """Every model the history ever had, by app and lower-case name: {"name", "now" (its name in the
    final state, after renames), "state_deleted": tables kept by a state-only DeleteModel}."""
    ever = {}
    graph = loader.graph
    order = []
    for leaf in sorted(graph.leaf_nodes()):
        order += [node for node in graph.forwards_plan(leaf) if node not in order]
    for app, name in order:
        migration = graph.nodes[(app, name)]
        for op in migration.operations:
            kind = type(op).__name__
            ops = [op]
            if kind == "SeparateDatabaseAndState":
                db_deletes = {o.name.lower() for o in op.database_operations if type(o).__name__ == "DeleteModel"}
                for inner in op.state_operations:
                    if type(inner).__name__ == "DeleteModel" and inner.name.lower() not in db_deletes:
                        entry = ever.setdefault((app, inner.name.lower()), {"name": inner.name, "now": inner.name})
                        entry["state_deleted"] = entry.get("tables") or [f"{app}_{inner.name.lower()}"]
                        entry["now"] = None
                ops = op.state_operations
            for o in ops:
                k = type(o).__name__
                if k == "CreateModel":
                    table = (o.options or {}).get("db_table") or f"{app}_{o.name.lower()}"
                    m2m = [f"{table}_{fname}" for fname, f in o.fields
                           if getattr(f, "many_to_many", False) and not getattr(f.remote_field, "through", None)]
                    ever[(app, o.name.lower())] = {"name": o.name, "now": o.name, "tables": [table, *m2m]}
                elif k == "RenameModel":
                    for entry in ever.values():
                        if entry.get("now") and entry["now"].lower() == o.old_name.lower():
                            entry["now"] = o.new_name
                    ever.setdefault((app, o.new_name.lower()), {"name": o.new_name, "now": o.new_name})
                elif k == "DeleteModel" and kind != "SeparateDatabaseAndState":
                    for entry in ever.values():
                        if entry.get("now") and entry["now"].lower() == o.name.lower():
                            entry["now"], entry["deleted_by"] = None, f"{app}.{name}"
                elif k == "AlterModelTable" and (app, o.name.lower()) in ever:
                    ever[(app, o.name.lower())]["tables"] = [o.table or f"{app}_{o.name.lower()}"]
    return ever


def resolve_removal(spec, state, ever, apps):
    """What --remove-model APP.Model names: a model of the final state (its class gone), or one
    that a state-only delete retired while its table stayed. Old names map to the current one."""
    import difflib

    label, _, model_name = spec.partition(".")
    labels = sorted({a for a, _ in ever} | {c.label for c in apps.get_app_configs()})
    if label not in labels:
        close = difflib.get_close_matches(label, labels, n=3)
        return {"error": f"--remove-model {spec}: no app labelled {label!r}"
                         + (f"; did you mean {', '.join(close)}?" if close else f"; apps: {', '.join(labels)}")}
    entry = ever.get((label, model_name.lower()))
    if entry is None:
        names = sorted(e["name"] for (a, _), e in ever.items() if a == label)
        close = difflib.get_close_matches(model_name, names, n=3)
        return {"error": f"--remove-model {spec}: app {label!r} never had a model {model_name!r} in its migration history"
                         + (f"; did you mean {', '.join(label + '.' + c for c in close)}?" if close else "")}
    current = entry.get("now")
    if current and (label, current.lower()) in state.models:
        try:
            apps.get_model(label, current)
            raise ProbeError(f"--remove-model {spec}: the model still exists in the code"
                             + (f" (as {current})" if current.lower() != model_name.lower() else "")
                             + "; delete its class first")
        except LookupError:
            pass
        historic = state.apps.get_model(label, current)
        return {"app": label, "model": state.models[(label, current.lower())].name, "tables": model_tables(historic)}
    if entry.get("state_deleted"):
        return {"app": label, "model": entry["name"], "tables": entry.get("tables") or entry["state_deleted"],
                "state_only": True}
    return {"error": f"--remove-model {spec}: the history deleted it already ({entry.get('deleted_by', 'a DeleteModel')}); "
                     "its table is gone, so there is nothing to remove"}


def pending_changes(loader, removals):
    """Model changes that no migration holds yet (what makemigrations would write), except the
    deletion of the models named for removal."""
    from django.apps import apps
    from django.db.migrations.autodetector import MigrationAutodetector
    from django.db.migrations.questioner import NonInteractiveMigrationQuestioner
    from django.db.migrations.state import ProjectState

    removed = {(r["app"], r["model"].lower()) for r in removals.values() if "app" in r}
    detector = MigrationAutodetector(loader.project_state(), ProjectState.from_apps(apps),
                                     NonInteractiveMigrationQuestioner(specified_apps=None, dry_run=True))
    state = loader.project_state()
    out = []
    for label, migrations in detector.changes(graph=loader.graph).items():
        for migration in migrations:
            for op in migration.operations:
                model = (getattr(op, "model_name", None) or getattr(op, "name", "") or "").lower()
                if (label, model) in removed:
                    continue
                change = {"change": f"{label}: {op.describe()}", "model": None, "tables": []}
                if type(op).__name__ == "DeleteModel" and (label, model) in state.models:
                    change["model"] = f"{label}.{state.models[(label, model)].name}"
                    change["tables"] = model_tables(state.apps.get_model(label, model))
                out.append(change)
    return out


def cmd_manage(opts):
    """Run management commands in this process (so the .env values reach them), several in one
    Django start-up when separated by "--then"; capture their output."""
    import io

    setup_django(opts.settings)
    from django.core.management import call_command
    from django.core.management.base import CommandError

    commands, current = [], []
    for word in opts.args:
        if word == "--then":
            commands.append(current)
            current = []
        else:
            current.append(word)
    commands.append(current)
    results = []
    for args in commands:
        out, err = io.StringIO(), io.StringIO()
        try:
            call_command(*args, stdout=out, stderr=err)
            code = 0
        except CommandError as exc:
            raise ProbeError(f"manage.py {' '.join(args)}: {exc}")
        except SystemExit as exc:  # --check commands exit non-zero to say "changes pending"
            code = exc.code or 0
        results.append({"args": args, "output": out.getvalue(), "errors": err.getvalue(), "exit": code})
    return {"results": results}


def cmd_content_types(opts):
    """Content types and permissions for models that lack them, and nothing else: after the load
    no project post_migrate handler may run, since it could change the restored rows."""
    setup_django(opts.settings)
    from django.apps import apps
    from django.db import DEFAULT_DB_ALIAS

    added = []
    if apps.is_installed("django.contrib.contenttypes"):
        from django.contrib.contenttypes.management import create_contenttypes

        for config in apps.get_app_configs():
            create_contenttypes(config, verbosity=0, using=DEFAULT_DB_ALIAS)
    if apps.is_installed("django.contrib.auth"):
        from django.contrib.auth.management import create_permissions

        for config in apps.get_app_configs():
            create_permissions(config, verbosity=0, using=DEFAULT_DB_ALIAS)
    return {"added": added}


def cmd_check_url(opts):
    """GET a health URL of the running application; any answer below 400 is healthy."""
    import urllib.error
    import urllib.request

    import base64
    import urllib.parse

    (path,) = opts.args  # a private file holds the URL: it may carry a password
    given = Path(path).read_text(encoding="utf-8").strip()
    parts = urllib.parse.urlsplit(given)
    request_url = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[-1]))
    url = masked_url(given)
    request = urllib.request.Request(request_url)
    if parts.username is not None:  # user:password@ in a URL is HTTP basic authentication, not part of the host
        pair = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        request.add_header("Authorization", "Basic " + base64.b64encode(pair.encode()).decode("ascii"))
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return {"status": response.status, "body": response.read(500).decode("utf-8", "replace")}
    except urllib.error.HTTPError as exc:
        raise ProbeError(f"--check-url {url} answered {exc.code} {exc.reason}")
    except (urllib.error.URLError, OSError) as exc:
        raise ProbeError(f"--check-url {url} did not answer ({getattr(exc, 'reason', exc)})")


def cmd_describe(opts):
    """The schema of the project's database (or of --db-name), as scratch builds describe theirs."""
    setup_django(opts.settings)
    from django.db import connection

    return schema_facts.describe(connection, content=bool(opts.args and opts.args[0] == "content"))


def in_child(what, out, work, db_name=None, sqlite_scratch=None, migrations_from=None, fork=True):
    """Start work() in a child process of this one, on the database and migrations the overrides
    name, with connections of its own (none is open here when it starts: an inherited one would
    be closed under its owner). Its JSON result or its error goes to the file OUT. Returns a
    function that waits for it and gives the result, raising ProbeError for its error. Without
    `fork` (threads run here: a fork could copy a lock one of them holds), the work is done by
    that function, here, once nothing else uses the database."""
    global DB_NAME_OVERRIDE, SQLITE_SCRATCH, MIGRATIONS_FROM
    if not fork:
        def here():
            global DB_NAME_OVERRIDE, SQLITE_SCRATCH, MIGRATIONS_FROM
            from django.db import connections

            connections.close_all()
            # the overrides are put back afterwards; the Django settings the work changes stay (it is the last step)
            saved = DB_NAME_OVERRIDE, SQLITE_SCRATCH, MIGRATIONS_FROM
            DB_NAME_OVERRIDE, SQLITE_SCRATCH, MIGRATIONS_FROM = db_name, sqlite_scratch, migrations_from
            fresh_connections()
            started = time.monotonic()
            try:
                return {"result": work(), "seconds": time.monotonic() - started}
            finally:
                connections.close_all()
                DB_NAME_OVERRIDE, SQLITE_SCRATCH, MIGRATIONS_FROM = saved
        return here
    Path(out).unlink(missing_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            DB_NAME_OVERRIDE, SQLITE_SCRATCH, MIGRATIONS_FROM = db_name, sqlite_scratch, migrations_from
            fresh_connections()
            started = time.monotonic()
            answer = {"result": work(), "seconds": time.monotonic() - started}
            code = 0
        except ProbeError as exc:
            answer = {"error": str(exc)}
        except BaseException as exc:  # noqa: BLE001  (told to the parent, which says it)
            import traceback

            traceback.print_exc()
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        try:
            Path(out + ".part").write_text(json.dumps(answer, default=str), encoding="utf-8")
            os.replace(out + ".part", out)
        finally:
            sys.stderr.flush()
            os._exit(code)

    def wait():
        _, status = os.waitpid(pid, 0)
        try:
            answer = json.loads(Path(out).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise ProbeError(f"{what} ended without an answer (exit status {os.waitstatus_to_exitcode(status)})")
        if "error" in answer:
            raise ProbeError(answer["error"])
        return answer
    return wait


def old_history(settings, removed):
    """Scratch database A: the old history, measured operation by operation (in_child's work)."""
    setup_django(settings)
    from django.db import connection

    try:
        own = [a["label"] for a in project_apps() if a["in_project"] and a["migrations_dir"]]
        return history.build_old(connection, removed, own)
    except history.HistoryError as exc:
        raise ProbeError(f"the old migration history does not apply to an empty database on {connection.vendor} ({exc}); "
                         "a fresh install from it fails today, so it cannot be compared")


def cmd_history(opts):
    """The builds of the proof, overlapping (run with --db-name B and --migrations-from):

    - A: the old history on a scratch database (SPEC "old": its database), in a child process;
    - S: the old history on a SQLite file as well (SPEC "sqlite", beside a PostgreSQL reset), in
      another child;
    - B, here: the numbered migrations in the --migrations-from copies are deleted,
      makemigrations writes the new history there and it is migrated; once A is done, what the
      old history made beyond the models is carried into a generated migration, migrated too,
      then post_migrate runs once;
    - E: once the carried migration is written and S is done, the new history with it on SQLite
      (so it installs on a SQLite laptop or CI like the old one did), in a third child.

    SPEC is a JSON file: {"removed": [tables], "old": {"db", "out"} or null, "sqlite": {"old",
    "new", "out"} or null}; the "out" files get the full results (with the rows)."""
    spec = json.loads(Path(opts.args[0]).read_text(encoding="utf-8"))
    removed = set(spec["removed"])
    old_spec, sqlite_spec = spec.get("old"), spec.get("sqlite")
    folder = MIGRATIONS_FROM
    waits = []  # every child is waited for, whatever happens here
    old_wait = sqlite_wait = engine_wait = None
    if old_spec:
        old_wait = in_child("the scratch build of the old history", old_spec["out"] + ".answer",
                            lambda: old_history(opts.settings, removed), db_name=old_spec["db"])
        waits.append(old_wait)
    if sqlite_spec:
        sqlite_wait = in_child("the SQLite scratch build of the old history", sqlite_spec["out"] + ".answer",
                               lambda: old_history(opts.settings, removed),
                               sqlite_scratch=sqlite_spec["old"])
        waits.append(sqlite_wait)
    answer = {"seconds": {}, "old": None}
    memo = {}

    def waited(wait):
        if wait not in memo:
            try:
                memo[wait] = (wait(), None)
            except ProbeError as exc:
                memo[wait] = (None, exc)
        return memo[wait]

    def old():
        if not old_wait:
            return None
        done, error = waited(old_wait)
        if error:
            raise error
        answer["seconds"]["old history"] = done["seconds"]
        return done["result"]

    def sqlite_old():
        done, error = waited(sqlite_wait)
        if error:
            answer["sqlite"] = {"skipped": str(error)}
            return None
        answer["seconds"]["SQLite histories"] = done["seconds"]
        return done["result"]

    def written(connection, files):
        """The carried migration is on disk: its SQLite install starts beside B's."""
        nonlocal engine_wait
        if not sqlite_spec or not files or sqlite_old() is None:
            return
        old_sqlite = sqlite_old()
        import threading

        from django.db import connections

        app, name = files[0][0], next(f for _, f in files if f.endswith(".py"))
        connections.close_all()  # reopened when next used: the child must not inherit them

        def engine():
            setup_django(opts.settings)
            from django.db import connection as sqlite

            try:
                built = history.add_engine(Path(folder) / f"rmg_{app}", [(app, name)], sqlite, old_sqlite, removed)
            except history.HistoryError as exc:
                raise ProbeError(f"the new history does not install on {sqlite.vendor} ({exc})")
            return {**built, "old": old_sqlite["schema"]}
        alone = threading.active_count() == 1
        engine_wait = in_child("the SQLite scratch build of the new history", sqlite_spec["out"] + ".engine", engine,
                               sqlite_scratch=sqlite_spec["new"], migrations_from=folder, fork=alone)
        if alone:
            waits.append(engine_wait)

    try:
        started = time.monotonic()
        answer["new"] = new_history(opts.settings, old if old_spec else None, removed, written)
        answer["seconds"]["new history"] = time.monotonic() - started
        full = old()
        if full is not None:
            answer["old"] = {"inventory": full["inventory"], "schema": full["schema"],
                             "rows": {t["table"]: len(t["rows"]) for t in full["rows"]}}
        if sqlite_spec:
            sqlite_old()
        if engine_wait:
            done, error = waited(engine_wait)
            if error:
                raise error
            answer["sqlite"] = done["result"]
            answer["seconds"]["SQLite histories"] += done["seconds"]
    finally:
        for wait in waits:  # no child is left running, whatever happened here
            while True:
                try:
                    waited(wait)
                    break
                except KeyboardInterrupt:
                    continue
    answer["seconds"] = {k: round(answer["seconds"][k], 1) for k in ("old history", "new history", "SQLite histories")
                         if k in answer["seconds"]}
    return answer


def forget_migration_modules():
    """The scratch copies' migration modules out of the import cache (their files changed)."""
    for module in [m for m in sys.modules if m.startswith("rmg_") and "." in m]:
        del sys.modules[module]
    importlib.invalidate_caches()


def new_history(settings, old, removed, written):
    """Scratch database B: the new history made (when `old`, a function that waits for A's result,
    is given; else it is the one in the folders already) and migrated, then the carried
    migration (`written` is told its files)."""
    setup_django(settings)
    from django.core.management import call_command
    from django.db import connection
    from django.db.migrations.loader import MigrationLoader

    own = [a for a in project_apps() if a["in_project"] and a["migrations_dir"]]
    if old is not None:
        loader = MigrationLoader(None, ignore_no_migrations=True)
        labels = {a["label"] for a in own}
        extensions = history.extensions_made(loader, labels)
        for app in own:
            folder = Path(app["migrations_dir"])
            for label, name in loader.disk_migrations:
                if label == app["label"]:
                    (folder / f"{name}.py").unlink()
            shutil.rmtree(folder / "__pycache__", ignore_errors=True)
        forget_migration_modules()  # the old files are gone: never serve them from the import cache
        out = io.StringIO()
        call_command("makemigrations", *[a["label"] for a in own], "--noinput", stdout=out, stderr=out)
        # collations and types: as the old history's scratch database ended up with them (waited
        # for, only then), as the server printed them there
        # there (a reset of SQLite, which has none: the history's CreateCollation operations)
        first, operations = [], []
        if history.makes_first_objects(loader, labels) and connection.vendor == "postgresql":
            first = history.first_objects(old()["schema"])
        elif history.makes_first_objects(loader, labels):
            operations = history.collations_made(loader, labels)
        if extensions or first or operations:  # made first, before any app's first tables
            made = MigrationLoader(None, ignore_no_migrations=True)
            roots = [(label, name) for (label, name), migration in made.disk_migrations.items() if label in labels
                     and not any(dep[0] == label for dep in migration.dependencies)]
            history.make_first(made, roots, list(extensions), first, operations)
            forget_migration_modules()  # rewritten
    try:
        result = history.build_new(connection, old, removed, own, on_written=written)
    except history.HistoryError as exc:
        raise ProbeError(f"the new migration history does not apply to an empty database ({exc})")
    result["files"] = {a["label"]: sorted(p.name for p in Path(a["migrations_dir"]).iterdir()
                                          if p.is_file() and p.name != "__init__.py" and p.suffix in (".py", ".json")
                                          and p.name[:4].isdigit()) for a in own}
    return result


def cmd_sqlite_load(opts):
    """Copy the rows of an old SQLite file into a freshly migrated one, ids and sequences kept.

    Tables present in both are emptied in the new file and filled with the old rows (common
    columns), except django_migrations and the --skip tables; one transaction, their indexes
    built after their rows, foreign keys checked once at the end.
    """
    new, old, *skip = opts.args
    skip = set(skip) | {"django_migrations"}
    conn = sqlite3.connect(new, isolation_level=None)
    try:
        conn.execute("PRAGMA foreign_keys = OFF")  # must be set outside a transaction
        conn.execute("ATTACH DATABASE ? AS old", (schema_facts.read_only_uri(old),))
        conn.execute("BEGIN IMMEDIATE")
        virtual, shadows = schema_facts.sqlite_virtual_tables(conn)
        new_tables = [r[0] for r in conn.execute("SELECT name FROM main.sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'")
                      if r[0] not in shadows]  # a virtual table is filled through itself, never its shadows
        old_tables = {r[0] for r in conn.execute("SELECT name FROM old.sqlite_master WHERE type='table'")}
        # Triggers the new schema made must not fire on old rows: set aside, put back after.
        triggers = conn.execute("SELECT name, sql FROM main.sqlite_master WHERE type = 'trigger' AND sql IS NOT NULL").fetchall()
        for name, _sql in triggers:
            conn.execute(f"DROP TRIGGER main.{sqlite_quote(name)}")
        loaded = {}
        wanted = [t for t in new_tables if t not in skip and t in old_tables]
        # The indexes of the tables loaded are built once their rows are in, as pg_restore does: a
        # sorted build after the load costs about a third of keeping them up row by row (1 GiB:
        # 6.4 s against 8.6 s). Only CREATE INDEX ones: those of UNIQUE and PRIMARY KEY
        # constraints (no SQL of their own) stay. Made again from their own SQL, in their order.
        indexes = conn.execute("SELECT name, sql FROM main.sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
                               f"AND tbl_name IN ({', '.join('?' * len(wanted))}) ORDER BY rowid", wanted).fetchall()
        for name, _sql in indexes:
            conn.execute(f"DROP INDEX main.{sqlite_quote(name)}")
        for table in wanted:
            q = sqlite_quote(table)
            new_cols = schema_facts.sqlite_columns(conn, table, "main")
            old_cols = set(schema_facts.sqlite_columns(conn, table, "old"))
            cols = ", ".join(["rowid"] * (table in virtual) + [sqlite_quote(c) for c in new_cols if c in old_cols])
            conn.execute(f"DELETE FROM main.{q}")
            conn.execute(f"INSERT INTO main.{q} ({cols}) SELECT {cols} FROM old.{q}")
            loaded[table] = conn.execute(f"SELECT count(*) FROM main.{q}").fetchone()[0]
            report_progress("loading the rows", len(loaded), len(wanted), "tables")
        for n, (_name, index_sql) in enumerate(indexes, 1):
            conn.execute(index_sql)
            report_progress("building the indexes", n, len(indexes), "indexes")
        for _name, trigger_sql in triggers:
            conn.execute(trigger_sql)
        set_sqlite_marks(conn, [(n, seq) for n, seq in sqlite_marks(conn, "old") if n in loaded])
        for header in ("user_version", "application_id"):  # the application's own marks in the file's header
            conn.execute(f"PRAGMA main.{header} = {int(conn.execute(f'PRAGMA old.{header}').fetchone()[0])}")
        bad = conn.execute("PRAGMA main.foreign_key_check").fetchall()
        if bad:
            conn.execute("ROLLBACK")
            raise ProbeError(f"the loaded data has {len(bad)} broken references, e.g. {bad[0]}; nothing was loaded")
        conn.execute("COMMIT")
        conn.execute("DETACH DATABASE old")
    finally:
        conn.close()
    return {"loaded": loaded}  # its integrity_check: with the verification's comparison, at the same time


WRITES = "writes during the reset: "  # the controller tells this failure from others: nothing was replaced


def content_changes(expected, now):
    """Tables whose rows differ from the backup's digests (or that appeared or went since)."""
    return sorted(t for t in set(expected) | set(now)
                  if t != "django_migrations" and (expected.get(t) or {}).get("digest") != (now.get(t) or {}).get("digest"))


def sqlite_marks(conn, schema="main"):
    """(table, seq) of every AUTOINCREMENT high-water mark in `schema`'s sqlite_sequence."""
    if not conn.execute(f"SELECT 1 FROM {schema}.sqlite_master WHERE name = 'sqlite_sequence'").fetchone():
        return []
    return conn.execute(f"SELECT name, seq FROM {schema}.sqlite_sequence ORDER BY name").fetchall()


def set_sqlite_marks(conn, marks, keep_higher=False):
    """AUTOINCREMENT high-water marks ((table, seq) pairs) written into main's sqlite_sequence, so
    no id is ever handed out twice (with `keep_higher`, a mark is only ever raised); tables main
    has not, or has without AUTOINCREMENT (no sqlite_sequence at all), are left out."""
    if not marks or not conn.execute("SELECT 1 FROM main.sqlite_master WHERE name = 'sqlite_sequence'").fetchone():
        return
    for name, seq in marks:
        if not conn.execute("SELECT 1 FROM main.sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone():
            continue
        now = conn.execute("SELECT max(seq) FROM main.sqlite_sequence WHERE name = ?", (name,)).fetchone()[0]
        if keep_higher and now is not None and now >= seq:
            continue
        conn.execute("DELETE FROM main.sqlite_sequence WHERE name = ?", (name,))
        conn.execute("INSERT INTO main.sqlite_sequence (name, seq) VALUES (?, ?)", (name, seq))


def unwritten_since_backup(conn, live, mark, mode, reference):
    """Take the exclusive lock on the live file (no one commits from then until it is replaced)
    and prove nothing was committed to it since the backup: by the file change counter where
    the journal mode keeps one (`mode`: the mode before the swap switched it), else by every
    table's content, compared with the backup copy (proven unchanged by its sha256 meanwhile)
    or digested; ProbeError (WRITES) names what changed. Returns how it was proven."""
    if mark and mode.lower() in ROLLBACK_MODES:
        conn.execute("BEGIN EXCLUSIVE")
        if live_mark(live, conn) == mark:
            return "no commit since the backup (file change counter)"
        conn.execute("ROLLBACK")  # a commit since: the content decides (the copy is attached outside a transaction)
    present_copy(reference, "nothing was replaced (`inv rollback` puts the migration files back)")
    conn.execute("ATTACH DATABASE ? AS ref", (schema_facts.read_only_uri(reference["path"]),))
    conn.execute("BEGIN EXCLUSIVE")
    with concurrently() as beside:
        beside(lambda: unchanged_copy(reference))
        proven = compared_with_copy(conn, reference["content"])
    rest = [t for t in schema_facts.sqlite_chosen(conn)[1] if t not in proven]
    changed = content_changes(reference["content"], {**proven, **schema_facts.sqlite_content(
        conn, tables=rest, progress=reading("checking nothing was written", "tables"))})
    if not conn.in_transaction:  # an error SQLite answered with a rollback of its own: the lock is gone
        raise ProbeError(f"the exclusive lock on {live} was lost while it was checked; nothing was replaced, run the reset again")
    if changed:
        raise ProbeError(f"{WRITES}the application changed {', '.join(changed[:5])} in {live} after the backup; "
                         "nothing was replaced, the database keeps those rows; stop the application's writers "
                         "and run the reset again")
    return "every table's content"


def cmd_sqlite_swap(opts):
    """Replace the live SQLite file by the new one atomically, with no stale -wal/-shm beside it,
    provided nothing was written to it since the backup (REFERENCE: the JSON of the backup copy
    and its manifest's entries, as file_stats takes it; "unchecked" as the last argument: a
    rollback's replace, nothing to prove): writers are locked out from the check to the replace.
    KEEP: a name the live file keeps (a hard link made under the lock), for an instant rollback."""
    new, live, reference_path, *rest = opts.args
    mark = json.loads(rest[0]) if rest and rest[0] else None
    keep = rest[1] if len(rest) > 1 and rest[1] else None
    unchecked = rest[2:3] == ["unchecked"]
    restore_mode = rest[3] if unchecked and len(rest) > 3 else None
    reference = None if unchecked else json.loads(Path(reference_path).read_text(encoding="utf-8"))
    conn = None
    checked = "nothing to check (a rollback)" if unchecked else "every table's content"
    started = time.monotonic()
    if unchecked and Path(live).exists() and Path(new).exists() and os.path.samefile(new, live):
        os.unlink(new)  # a swap killed before its replace: the kept name is the live file itself
        return {"path": live, "checked": checked, "locked_seconds": 0.0, "set_aside": None}
    if Path(live).exists():
        conn = sqlite3.connect(live, isolation_level=None, timeout=30)
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.execute("PRAGMA journal_mode=DELETE")  # removes the live file's -wal and -shm
            if unchecked:
                conn.execute("BEGIN EXCLUSIVE")  # no one commits from here until the file is replaced
            else:
                checked = unwritten_since_backup(conn, live, mark, mode, reference)
                # a row added and deleted since leaves the content as it was but its id handed out
                with contextlib.closing(sqlite3.connect(new, isolation_level=None, timeout=30)) as fresh:
                    fresh.execute("BEGIN IMMEDIATE")
                    set_sqlite_marks(fresh, sqlite_marks(conn), keep_higher=True)
                    fresh.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            conn.execute(f"PRAGMA main.journal_mode={mode}")  # the live file stays as the application had it
            conn.close()
            raise
    try:
        for suffix in ("-wal", "-shm", "-journal"):
            if Path(live + suffix).exists() and not (suffix == "-journal" and conn is not None):
                raise ProbeError(f"{live}{suffix} is still there (is the application running?); stop it and retry")
        if keep and conn is not None:
            os.link(live, keep)  # the same file under a second name: nothing copied
            paused_for_tests("sqlite-linked")  # between the link and the replace
        os.replace(new, live)
    finally:
        if conn is not None:
            conn.close()  # the lock was on the old file, which is gone now
    # the journal mode the file had (WAL is the file's own: the application's readers and writers rely on it),
    # when it was kept (a rollback) or in the live file it replaces (the swap: the new file was made in DELETE mode)
    wanted = restore_mode if unchecked else (mode if conn is not None else None)
    if wanted and wanted.lower() not in ("delete", "memory", "off"):
        with contextlib.closing(sqlite3.connect(live, isolation_level=None, timeout=30)) as again:
            again.execute(f"PRAGMA journal_mode={wanted}")
    return {"path": live, "checked": checked, "locked_seconds": round(time.monotonic() - started, 3),
            "mode": mode if conn is not None else None, "set_aside": keep if keep and conn is not None else None}


def cmd_sqlite_restore_tables(opts):
    """Make tables again in LIVE from BACKUP as the backup has them (definition, rows, indexes,
    triggers, AUTOINCREMENT mark), in one transaction, foreign keys checked for them after."""
    backup, live, *tables = opts.args
    conn = sqlite3.connect(live, isolation_level=None, timeout=30)
    try:
        conn.execute("PRAGMA foreign_keys = OFF")
        conn.execute("ATTACH DATABASE ? AS bak", (backup,))
        conn.execute("BEGIN IMMEDIATE")
        for table in tables:
            made = conn.execute("SELECT type, sql FROM bak.sqlite_master WHERE tbl_name = ? AND sql IS NOT NULL "
                                "ORDER BY type = 'table' DESC, type = 'index' DESC", (table,)).fetchall()
            if not made or made[0][0] != "table":
                raise ProbeError(f"table {table} is not in the backup {backup}")
            conn.execute(made[0][1])
            quoted = schema_facts.qident(table)
            conn.execute(f"INSERT INTO main.{quoted} SELECT * FROM bak.{quoted}")
            for _kind, statement in made[1:]:
                conn.execute(statement)
            set_sqlite_marks(conn, [(n, seq) for n, seq in sqlite_marks(conn, "bak") if n == table])
        broken = [r for t in tables for r in conn.execute(f"PRAGMA main.foreign_key_check({schema_facts.qident(t)})")]
        if broken:
            conn.execute("ROLLBACK")
            raise ProbeError(f"the rows of {', '.join(tables)} in the backup refer to rows gone since; nothing was "
                             "brought back: restore the whole backup with `inv restore` if you need them")
        conn.execute("COMMIT")
    finally:
        conn.close()
    return {"restored": tables}


def cmd_sqlite_new_file(opts):
    """Create the empty SQLite file PATH with the live file's ENCODING, PAGE_SIZE and AUTO_VACUUM:
    each is fixed once the file's first table is written (an ATTACHed file must share the
    encoding, so the load needs it too)."""
    path, encoding, page_size, auto_vacuum = opts.args
    if encoding not in ("UTF-8", "UTF-16le", "UTF-16be") or not page_size.isdigit() or auto_vacuum not in ("0", "1", "2"):
        raise ProbeError(f"unexpected SQLite file settings: {encoding} {page_size} {auto_vacuum}")
    if Path(path).exists() and Path(path).stat().st_size:
        raise ProbeError(f"{path} exists already; nothing was changed")
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        for pragma in (f"encoding = '{encoding}'", f"page_size = {int(page_size)}", f"auto_vacuum = {auto_vacuum}"):
            conn.execute(f"PRAGMA {pragma}")
        conn.execute("CREATE TABLE remigrate_new_file (x)")  # the header is written with the first table
        conn.execute("DROP TABLE remigrate_new_file")
    return {"path": path}


def cmd_sqlite_unkeep(opts):
    """Remove names that a swap killed before its replace left for the live file (the same file:
    nothing is lost); a kept file of a finished swap is another file and stays."""
    live = Path(opts.args[0])
    removed = []
    for path in live.parent.glob(live.name + ".remigrate-old-*"):
        if live.exists() and os.path.samefile(path, live):
            path.unlink()
            removed.append(str(path))
    return {"removed": removed}


def no_commit_since(snapshot, now, ours, status):
    """Whether no transaction anywhere on the server committed after the backup's snapshot
    (`snapshot` and `now`: txid_current_snapshot() texts "xmin:xmax:in-progress,..."), but our
    own (`ours`: transaction ids). Every transaction that changes a row gets an id, ids are
    handed out in order: so every id from the snapshot's xmax to now must be ours, and every
    transaction in progress at the snapshot must have aborted (`status(xid)`). Anything else
    (another database's activity, an autovacuum's ANALYZE) says "not proven", never "changed"."""
    if not snapshot or not now:
        return False
    _xmin0, xmax0, xip0 = snapshot.split(":")
    _xmin1, xmax1, _xip1 = now.split(":")
    if set(range(int(xmax0), int(xmax1))) != set(ours):
        return False
    return all(status(int(x)) == "aborted" for x in xip0.split(",") if x)


def no_write_since(before, now):
    """Whether the server's statistics prove that no row of the database was written since
    `before` (the counters read just before the backup's snapshot was taken), `now` being read
    once every other session has ended. A session flushes its statistics before it leaves
    pg_stat_activity, and a transaction's counts reach the server only after it ends, so a
    write committed after the snapshot makes some counter larger than `before`, TRUNCATE and
    table rewrites change the file node. Only from PostgreSQL 15 on, whose statistics live in
    shared memory: before it, a collector fed by UDP could lose or delay counts. Counting
    switched off, counters reset, a server restarted (a crash discards them), or any difference
    at all: "not proven", never "changed"."""
    if not before or not now or before.get("track_counts") != "on" or now.get("track_counts") != "on":
        return False
    if (before.get("server_version_num") or 0) < 150000 or (now.get("server_version_num") or 0) < 150000:
        return False
    return all(before.get(key) == now.get(key) for key in ("postmaster_started", "stats_reset", "tables"))


def cmd_pg_close(opts):
    """Close the live PostgreSQL database to new sessions, end or wait for the open ones, then
    prove nothing was written since the backup: at once when no transaction committed on the
    server since the backup's snapshot (SNAPSHOT, see no_commit_since), else by every table's
    content (EXPECTED: the backup's digests). On any failure it is opened again and nothing
    else changed."""
    args = list(opts.args)
    algorithm = take_option(args, "digest") or schema_facts.MD5_TEXT  # the backup's content digest
    expected_path, end_sessions, wait_seconds, *proofs = args
    snapshot = proofs[:1]
    counters = json.loads(Path(proofs[1]).read_text(encoding="utf-8")) if len(proofs) > 1 else None

    expected = json.loads(Path(expected_path).read_text(encoding="utf-8"))
    setup_django(opts.settings)
    from django.db import connection

    name = connection.settings_dict["NAME"]
    quoted = schema_facts.qident(name)
    ours = []  # the transactions this closing makes

    def allow(flag):  # from the maintenance database: a session may not close its own database
        with connection._nodb_cursor() as admin:
            admin.execute("BEGIN")
            admin.execute(f"ALTER DATABASE {quoted} ALLOW_CONNECTIONS {'true' if flag else 'false'}")
            admin.execute("SELECT txid_current()")
            ours.append(admin.fetchone()[0])
            admin.execute("COMMIT")

    def status(xid):
        cursor.execute("SELECT txid_status(%s)", [xid])
        return cursor.fetchone()[0]

    with connection.cursor() as cursor:  # this session is in before the door closes
        allow(False)
        try:
            # client sessions only: an autovacuum worker is stopped by DROP or RENAME themselves (and
            # pg_terminate_backend may not end it for an ordinary role)
            others = ("FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
                      "AND backend_type = 'client backend'")
            if end_sessions == "1":
                cursor.execute(f"SELECT pg_terminate_backend(pid) {others}")
            deadline = time.monotonic() + float(wait_seconds)
            while True:
                cursor.execute(f"SELECT count(*), string_agg(DISTINCT coalesce(nullif(application_name, ''), usename), ', ') {others}")
                count, who = cursor.fetchone()
                if not count or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            if count:
                raise ProbeError(f"{count} other sessions are still connected to {name} ({who}) after {wait_seconds} s; "
                                 "stop the application, or pass --end-sessions to end them; nothing was changed")
            checked = proof_of_no_write(cursor, snapshot, ours, status, counters, expected, algorithm, name)
            # a row added and deleted since leaves the content as it was but its id handed out:
            # the new database's sequences must not hand it out again
            return {"closed": name, "checked": checked, "sequences": pg_sequence_marks(cursor)}
        except BaseException:
            allow(True)
            raise


def proof_of_no_write(cursor, snapshot, ours, status, counters, expected, algorithm, name):
    """How it was proven that nothing was written to the closed database since the backup (see
    cmd_pg_close); ProbeError (WRITES) names what changed."""
    cursor.execute("SELECT txid_current_snapshot()::text")
    if no_commit_since(snapshot[0] if snapshot else "", cursor.fetchone()[0], ours, status):
        return "no transaction committed since the backup"
    cursor.execute(schema_facts.WRITE_COUNTERS_SQL)
    if no_write_since(counters, cursor.fetchone()[0]):
        return "the server's write counters of every table are unchanged"
    changed = content_changes(expected, schema_facts.pg_content(cursor, progress=reading("checking nothing was written"),
                                                                algorithm=algorithm))
    if changed:
        raise ProbeError(f"{WRITES}the application changed {', '.join(changed[:5])} in {name} after the backup; "
                         "nothing was dropped, the database keeps those rows; stop the application's writers "
                         "and run the reset again")
    return "every table's content"


def fake_statements(vendor, renames):
    """The statements that give the live objects their new names, in two steps through names of
    our own on PostgreSQL (so two objects may trade names, or pass a name along); SQLite cannot
    rename an index: it is dropped and made again under the new name."""
    chosen = renames
    q = schema_facts.qident
    if vendor == "sqlite":
        return [f"DROP INDEX {q(r['from_name'])}" for r in chosen] + [r["sql"] for r in chosen]
    temporary = [q(f"remigrate_fake_{n}") for n in range(len(chosen))]

    def rename(r, old, new):
        return r["rename"].replace(schema_facts.OLD, old).replace(schema_facts.NEW, new)

    return ([rename(r, q(r["from_name"]), t) for r, t in zip(chosen, temporary)]
            + [rename(r, t, q(r["to_name"])) for r, t in zip(chosen, temporary)])


def reverse_renames(renames):
    """The renames that undo `renames` (each object back to its live name)."""
    return [dict(r, **{"from": r["to"], "to": r["from"], "from_name": r["to_name"], "to_name": r["from_name"],
                       "sql": r.get("old_sql"), "old_sql": r.get("sql")}) for r in renames]


def cmd_fake_history(opts):
    """A fake reset's one transaction on the live database: objects renamed to the names of the
    new history, the removed models' tables dropped (the empty ones it was told of only if still
    empty), django_migrations of the reset apps rewritten to the new migrations. PLAN: {"renames",
    "drop", "empty", "apps", "record", "undo_file"}. Before it starts, what undoes it (the old
    rows, the id counter, the renames back, the new rows) is written to undo_file. With "undo":
    that file applied if the fake committed (the history rows tell), else nothing: all or none."""
    plan = json.loads(Path(opts.args[0]).read_text(encoding="utf-8"))
    undo = opts.args[1:2] == ["undo"]
    setup_django(opts.settings)
    from django.db import connection, transaction
    from django.db.migrations.recorder import MigrationRecorder

    q = schema_facts.qident
    apps = plan["apps"]
    marks = ", ".join(["%s"] * len(apps))

    def table(key):  # a table as the schema describes it: "name", or "schema.name" outside public
        if connection.vendor == "postgresql" and "." in key:
            return ".".join(q(part) for part in key.split(".", 1))
        return q(key)

    with connection.cursor() as cursor:
        def id_counter(value=None):
            """django_migrations' id counter: read it, or set it back to `value` (never below an id
            recorded since)."""
            if connection.vendor == "sqlite":
                if value is None:
                    cursor.execute("SELECT seq FROM sqlite_sequence WHERE name = 'django_migrations'")
                    found = cursor.fetchone()
                    return found and found[0]
                cursor.execute("UPDATE sqlite_sequence SET seq = max(%s, (SELECT coalesce(max(id), 0) FROM "
                               "django_migrations)) WHERE name = 'django_migrations'", [value])
                return value
            cursor.execute("SELECT pg_get_serial_sequence('django_migrations', 'id')")
            sequence = cursor.fetchone()[0]
            if value is None:
                cursor.execute(f"SELECT last_value, is_called FROM {sequence}")
                return list(cursor.fetchone())
            cursor.execute("SELECT max(id) FROM django_migrations")
            top = cursor.fetchone()[0] or 0
            cursor.execute("SELECT setval(%s, %s, %s)", [sequence, *(value if value[0] >= top else [top, True])])
            return value

        def history_rows():
            cursor.execute(f"SELECT id, app, name FROM django_migrations WHERE app IN ({marks}) ORDER BY id", apps)
            return [list(r) for r in cursor.fetchall()]

        if not undo:
            cursor.execute(f"SELECT id, app, name, applied FROM django_migrations WHERE app IN ({marks}) ORDER BY id", apps)
            rows = [[i, a, n, str(t)] for i, a, n, t in cursor.fetchall()]
            saved = {"apps": apps, "rows": rows, "id_counter": id_counter(), "record": plan["record"],
                     "renames": reverse_renames(plan["renames"])}
            partial = Path(plan["undo_file"] + ".partial")
            with open(partial, "w", encoding="utf-8") as fh:  # whole or not at all: a rollback reads it
                fh.write(json.dumps(saved))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(partial, plan["undo_file"])
        started = time.monotonic()
        with transaction.atomic():
            if connection.vendor == "postgresql":
                cursor.execute("SET LOCAL lock_timeout = '10s'")  # an application's long transaction: fail, not hang
            if undo:
                now = history_rows()
                if now == [r[:3] for r in plan["rows"]]:
                    return {"undone": False, "why": "the fake never committed"}
                if sorted([a, n] for _i, a, n in now) != sorted(plan["record"]):
                    raise ProbeError("the history rows of the reset apps are neither the ones before the fake nor the "
                                     "ones it wrote; nothing was undone: look at django_migrations, or restore the backup")
            for name in [] if undo else plan.get("empty", []):  # the plan saw no rows: none may have come since
                if name not in connection.introspection.table_names(cursor):
                    continue  # dropped already (a resumed run)
                if connection.vendor == "postgresql":
                    cursor.execute(f"LOCK TABLE {table(name)} IN ACCESS EXCLUSIVE MODE")
                cursor.execute(f"SELECT EXISTS (SELECT 1 FROM {table(name)})")
                if cursor.fetchone()[0]:
                    raise ProbeError(f"table {name} had no rows when the plan was made but has some now; nothing was "
                                     "changed: run the reset again to see it in the plan")
            for statement in fake_statements(connection.vendor, plan["renames"]):
                cursor.execute(statement)
            if plan.get("drop"):
                if connection.vendor == "postgresql":
                    cursor.execute("DROP TABLE IF EXISTS " + ", ".join(table(t) for t in plan["drop"]))
                else:
                    for name in plan["drop"]:
                        cursor.execute(f"DROP TABLE IF EXISTS {table(name)}")
            cursor.execute(f"DELETE FROM django_migrations WHERE app IN ({marks})", apps)
            if undo:
                for ident, app, name, applied in plan["rows"]:
                    cursor.execute("INSERT INTO django_migrations (id, app, name, applied) VALUES (%s, %s, %s, %s)",
                                   [ident, app, name, applied])
                if plan.get("id_counter") is not None:
                    id_counter(plan["id_counter"])
            else:  # as migrate records them (the engine's own datetime format)
                recorder = MigrationRecorder(connection)
                for app, name in plan["record"]:
                    recorder.record_applied(app, name)
    return {"undone": undo, "renamed": len(plan["renames"]), "dropped": plan.get("drop", []),
            "recorded": len(plan["rows"] if undo else plan["record"]), "locked_seconds": round(time.monotonic() - started, 3)}


def cmd_lock(opts):
    """Take the lock file of a database exclusively; say who holds it if taken."""
    path, info = opts.args[0], opts.args[1]
    Path(path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        try:
            existing = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            existing = {}
        return {"taken": False, "holder": existing}
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(info)
    return {"taken": True}


def keep_mode(member, path):
    """The "data" filter's safety (nothing outside the project, no links out, no devices), with
    the file's own permission bits kept: a group-writable file stays group-writable."""
    safe = tarfile.data_filter(member, path)
    return safe.replace(mode=member.mode & 0o777, deep=False) if safe.isreg() else safe


def cmd_restore_migrations(opts):
    """Make the migrations folders exactly what the archive holds: extra files go, archived ones
    come back byte for byte."""
    archive, *folders = opts.args
    root = Path.cwd().resolve()
    with tarfile.open(archive, "r:gz") as tar:
        members = tar.getmembers()
        names = {m.name for m in members}
        removed = []
        for folder in folders:
            for path in sorted(Path(folder).rglob("*"), reverse=True):
                rel = str(path.resolve().relative_to(root))
                if path.is_dir() and path.name == "__pycache__":
                    shutil.rmtree(path)
                elif path.is_file() and rel not in names:
                    path.unlink()
                    removed.append(rel)
        tar.extractall(root, members=members, filter=keep_mode)
    return {"restored": sorted(names), "removed": removed}


COMMANDS = {
    "settings": cmd_settings,
    "stats": cmd_stats,
    "sqlite-backup": cmd_sqlite_backup,
    "sqlite-verify": cmd_sqlite_verify,
    "sqlite-restore": cmd_sqlite_restore,
    "checksum": cmd_checksum,
    "prepare-dir": cmd_prepare_dir,
    "free-space": cmd_free_space,
    "archive-migrations": cmd_archive_migrations,
    "file-stats": cmd_file_stats,
    "list-bundles": cmd_list_bundles,
    "plan": cmd_plan,
    "lock": cmd_lock,
    "restore-migrations": cmd_restore_migrations,
    "manage": cmd_manage,
    "sqlite-load": cmd_sqlite_load,
    "content-types": cmd_content_types,
    "history": cmd_history,
    "describe": cmd_describe,
    "check-url": cmd_check_url,
    "sqlite-swap": cmd_sqlite_swap,
    "sqlite-new-file": cmd_sqlite_new_file,
    "sqlite-unkeep": cmd_sqlite_unkeep,
    "sqlite-restore-tables": cmd_sqlite_restore_tables,
    "pg-close": cmd_pg_close,
    "fake-history": cmd_fake_history,
    "finalize-bundle": cmd_finalize_bundle,
}


def scrub(text):
    """Hide passwords that an error message of the project's settings might quote."""
    from urllib.parse import urlsplit

    secrets = [os.environ.get("DB_PASSWORD"), os.environ.get("DATABASE_URL")]
    try:
        secrets.append(urlsplit(os.environ.get("DATABASE_URL", "")).password)
    except ValueError:
        pass
    return scrub_secrets(text, secrets)


def fresh_connections():
    """Forget the database settings and connections a forked child inherited, so the overrides
    of its own request (--db-name, --sqlite-scratch) decide which database it opens."""
    if "django.db" not in sys.modules:
        return
    from asgiref.local import Local
    from django.db import connections

    connections.__dict__.pop("settings", None)
    connections._connections = Local(connections.thread_critical)


def serve(argv):
    """Answer requests on stdin, one JSON line each ({"argv": [...]}), each run in a child forked
    from this process after Django's start-up: one django.setup() for a whole task instead of
    one per step. The answer is one line of ASCII JSON: {"exit", "stdout", "stderr"} of the
    child. Ends at end of input (the task ended, or the process that started it died)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--env-json")
    parser.add_argument("--settings")
    opts, _ = parser.parse_known_args(argv)
    reply = os.fdopen(os.dup(1), "w", encoding="ascii")  # answers only: whatever else prints goes to stderr
    os.dup2(2, 1)
    # Ctrl-C in a terminal (and a SIGTERM or SIGHUP sent to the whole process group) reaches every
    # process of the group: the step under way stops in its child, as before; this process lives
    # on to answer the rollback's steps, and ends when its input does. (A handler, not SIG_IGN:
    # the programs a step starts get the default back.)
    for stop in STOP_SIGNALS:
        signal.signal(stop, lambda *_: None)
    apply_env_json(opts.env_json)
    try:  # warm up; a failure here is met again, and reported, by each request
        setup_django(opts.settings)
    except Exception:  # noqa: BLE001
        pass
    import threading

    if "django.db" in sys.modules:
        from django.db import connections

        connections.close_all()  # a connection the project's start-up opened is not the children's to share
    if threading.active_count() > 1:  # forking a process with threads is not safe: one process per step
        return 3
    reply.write(REPLY + json.dumps({"ready": True}) + "\n")
    reply.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:  # the child: its own output files, no input, the request's arguments
                code = 1
                try:
                    for stop in STOP_SIGNALS:  # a stop ends the step, its own clean-up run (as Ctrl-C does)
                        signal.signal(stop, signal.default_int_handler)
                    devnull = os.open(os.devnull, os.O_RDONLY)
                    os.dup2(devnull, 0)
                    os.dup2(out.fileno(), 1)
                    os.dup2(err.fileno(), 2)
                    sys.stdin = open(os.devnull, encoding="utf-8")
                    fresh_connections()
                    code = main(request["argv"])
                except SystemExit as exc:
                    code = exc.code if isinstance(exc.code, int) else 1
                except BaseException:  # noqa: BLE001
                    import traceback

                    traceback.print_exc()
                finally:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(code)
            status = pass_on_progress(pid, err.fileno(), reply)
            out.seek(0)
            err.seek(0)
            errors = "".join(ln for ln in err.read().decode("utf-8", "replace").splitlines(keepends=True)
                             if not ln.startswith(PROGRESS))
            answer = {"id": request.get("id"), "exit": os.waitstatus_to_exitcode(status),
                      "stdout": out.read().decode("utf-8", "replace"), "stderr": errors}
        reply.write(REPLY + json.dumps(answer) + "\n")
        reply.flush()
    return 0


def pass_on_progress(pid, err_fd, reply):
    """Wait for the child, passing on its progress lines as they come (one JSON line each:
    {"progress": {...}}); returns its wait status."""
    offset, pending, pause = 0, b"", 0.001
    with ending(pid) as wait:
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            chunk = os.pread(err_fd, 1 << 16, offset)
            while chunk:
                offset += len(chunk)
                pending += chunk
                chunk = os.pread(err_fd, 1 << 16, offset)
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if line.startswith(PROGRESS.encode()):
                    reply.write(REPLY + json.dumps({"progress": json.loads(line[len(PROGRESS):])}) + "\n")
                    reply.flush()
            if done:
                return status
            wait(pause)
            pause = min(pause * 2, 0.2)  # progress looked at gently during a long step


@contextlib.contextmanager
def ending(pid):
    """A wait of at most some seconds that ends as soon as the child `pid` does: on a process file
    descriptor where the kernel has them (Linux 5.3 and later), so each step is answered the moment
    it ends rather than at the next look (some thirty steps per reset); elsewhere a plain sleep."""
    try:
        handle = os.pidfd_open(pid)
    except (AttributeError, OSError):  # not Linux, or too old a kernel
        yield time.sleep
        return
    try:
        yield lambda seconds: select.select([handle], [], [], seconds)
    finally:
        os.close(handle)


def apply_env_json(path):
    """The project's .env values, under whatever the environment already says."""
    if not path:
        return
    with open(path, encoding="utf-8") as fh:
        for key, value in json.load(fh).items():
            if key not in os.environ:
                os.environ[key] = value
                FROM_ENV_FILE.append(key)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--serve"]:
        return serve(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-json", help="JSON object of variables from the project's .env (the environment wins)")
    parser.add_argument("--settings", help="Django settings module")
    parser.add_argument("--db-name", help="use this database NAME instead of the settings' one")
    parser.add_argument("--sqlite-scratch", help="use this SQLite file as the database, whatever the settings say")
    parser.add_argument("--migrations-from", help="read the own apps' migrations from rmg_<label> folders here")
    parser.add_argument("command", choices=sorted(COMMANDS))
    parser.add_argument("args", nargs=argparse.REMAINDER)
    opts = parser.parse_args(argv)
    global DB_NAME_OVERRIDE, MIGRATIONS_FROM, SQLITE_SCRATCH
    DB_NAME_OVERRIDE = opts.db_name
    SQLITE_SCRATCH = opts.sqlite_scratch
    MIGRATIONS_FROM = opts.migrations_from
    apply_env_json(opts.env_json)
    try:
        result = COMMANDS[opts.command](opts)
    except ProbeError as exc:
        print(ERR + scrub(str(exc)).replace("\n", " "), flush=True)
        return 2
    print(OK + json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
