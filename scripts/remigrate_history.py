"""The migration history measured on scratch databases, and what it made carried into the new one.

Runs beside the project in its interpreter, after django.setup(), on a scratch database (a new
SQLite file, or a new database on the same PostgreSQL server) that the caller names:

- build_old(): migrate the old history operation by operation, recording what each operation
  that makemigrations will not write again (RunPython, RunSQL, custom operations...) leaves on
  the empty database; then describe the result and keep the rows the history put in.
- build_new(): migrate the regenerated history, carry over what the old one made beyond the
  models (a generated migration with the schema objects and the rows), migrate that too, run
  the project's post_migrate handlers once (a fresh install must survive them), describe it.
"""
import base64
import datetime as dt
import decimal
import json
import re
import uuid
from pathlib import Path

import remigrate_schema as S

PLAIN_OPS_MODULE = "django.db.migrations.operations"
CARRIED = "remigrate_carried"


class HistoryError(Exception):
    """A failure of a scratch build, explained for the user."""


# ---------------------------------------------------------------- scratch databases

def create_scratch(connection):
    """Create the (PostgreSQL) scratch database the connection is set to; SQLite makes its file.
    A scratch database is thrown away whatever happens, so its commits do not wait for the disk
    (an fsync per migration, some sixty per build)."""
    connection.close()  # makemigrations may have opened (and so created) it already
    name = connection.settings_dict["NAME"]
    if connection.vendor != "postgresql":
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(name + suffix).unlink(missing_ok=True)
        from django.db.backends.signals import connection_created

        def unsynced(sender, connection, **_):
            if connection.vendor == "sqlite" and connection.settings_dict["NAME"] == name:
                connection.connection.execute("PRAGMA synchronous = OFF")
        connection_created.connect(unsynced, weak=False, dispatch_uid=f"remigrate-scratch-{name}")
        return
    with connection._nodb_cursor() as cursor:
        cursor.execute(f"DROP DATABASE IF EXISTS {S.qident(name)}")
        cursor.execute(f"CREATE DATABASE {S.qident(name)} TEMPLATE template0")
        cursor.execute(f"ALTER DATABASE {S.qident(name)} SET synchronous_commit = off")  # its owner may


def drop_scratch(connection):
    connection.close()
    if connection.vendor != "postgresql":
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(connection.settings_dict["NAME"] + suffix).unlink(missing_ok=True)
        return
    from django.db import DatabaseError

    name = S.qident(connection.settings_dict["NAME"])
    with connection._nodb_cursor() as cursor:
        try:  # a plain DROP stops an autovacuum worker in it, which WITH (FORCE) may not end for an ordinary role
            cursor.execute(f"DROP DATABASE IF EXISTS {name}")
        except DatabaseError:  # a session of ours still in it
            cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# ---------------------------------------------------------------- the inventory

def is_special(op):
    return type(op).__name__ in ("RunPython", "RunSQL") or not type(op).__module__.startswith(PLAIN_OPS_MODULE)


def describe_op(op):
    kind = type(op).__name__
    if kind == "RunSQL":
        text = op.sql if isinstance(op.sql, str) else "; ".join(str(s) for s in op.sql)
        return " ".join(text.split())[:100]
    if kind == "RunPython":
        return f"{getattr(op.code, '__module__', '?')}.{getattr(op.code, '__qualname__', '?')}"
    if kind == "SeparateDatabaseAndState":
        return f"{len(op.database_operations)} database / {len(op.state_operations)} state operations"
    return f"{type(op).__module__}.{kind} {getattr(op, 'name', '')}".strip()


def observe(connection):
    """What an operation can change: the schema objects and every table's content digest."""
    facts = S.describe(connection, content=True)
    objects = {f"table {t}" for t in facts["tables"]}
    objects |= {f"{kind[:-1]} {name}" for kind in ("views", "functions", "triggers", "extensions")
                for name in facts[kind]}
    objects |= {f"index {i['table']} {i['definition']}" for i in facts["indexes"].values()}
    objects |= {f"constraint {c['table']} {c['definition']}" for c in facts["constraints"].values()}
    objects |= {f"sequence {name}" for name, seq in facts["sequences"].items() if seq.get("sql")}  # of its own
    objects |= {f"row security of {name}" for name in facts["row_security"]}
    objects |= {f"policy {name}" for name in facts["policies"]}
    objects |= {f"schema {name}" for name in facts["schemas"]}
    objects |= {f"collation {name}" for name in facts.get("collations", {})}
    objects |= {f"type {name}" for name in facts.get("types", {})}
    objects |= {S.comment_key(name, c["definition"]) for name, c in facts.get("comments", {}).items()}
    return objects, {t: (c["rows"], c["digest"]) for t, c in facts["content"].items()}


def effect(before, after):
    (objs_a, rows_a), (objs_b, rows_b) = before, after
    changed = {}
    for table, (count, digest) in rows_b.items():
        was = rows_a.get(table, (0, f"{0:032x}"))  # a new empty table changed no rows
        if was[1] != digest and table != "django_migrations":
            changed[table] = f"{count - was[0]:+d} rows" if count != was[0] else "rows changed"
    return {"created": sorted(objs_b - objs_a), "dropped": sorted(objs_a - objs_b), "rows": changed}


def instrument(plan, connection, inventory, own_labels):
    """Wrap every special operation of the project's own apps in the plan so its effect on the
    database is recorded (other apps keep their history: their operations stay theirs)."""
    def wrap(op, migration, index):
        original = op.database_forwards
        entry = {"app": migration.app_label, "migration": migration.name, "index": index,
                 "operation": type(op).__name__, "detail": describe_op(op),
                 "elidable": bool(getattr(op, "elidable", False))}
        inventory.append(entry)

        def forwards(app_label, schema_editor, from_state, to_state):
            before = observe(schema_editor.connection)
            original(app_label, schema_editor, from_state, to_state)
            entry["effect"] = effect(before, observe(schema_editor.connection))

        op.database_forwards = forwards

    for migration, _backwards in plan:
        if migration.app_label not in own_labels:
            continue
        for index, op in enumerate(migration.operations):
            if type(op).__name__ == "SeparateDatabaseAndState":
                inventory.append({"app": migration.app_label, "migration": migration.name, "index": index,
                                  "operation": "SeparateDatabaseAndState", "detail": describe_op(op),
                                  "elidable": False, "effect": None})
                for inner in op.database_operations:
                    wrap(inner, migration, index)
            elif is_special(op):
                wrap(op, migration, index)


def migrate_all(connection, inventory=None, own_labels=()):
    """Apply every migration with the executor (no post_migrate signal: only the history's own
    effects are measured). Returns the final project state."""
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    targets = executor.loader.graph.leaf_nodes()
    plan = executor.migration_plan(targets)
    if inventory is not None:
        instrument(plan, connection, inventory, set(own_labels))
    try:
        executor.migrate(targets, plan=plan)
    except Exception as exc:
        raise HistoryError(f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}")
    return executor.loader.project_state()


# ---------------------------------------------------------------- rows, as data a migration can load

def encode(value):
    """A JSON-safe, exact form of a value read through a model field (or a raw cursor)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return {"float": repr(value)}
    if isinstance(value, decimal.Decimal):
        return {"decimal": str(value)}
    if isinstance(value, dt.datetime):
        return {"datetime": value.isoformat()}
    if isinstance(value, dt.date):
        return {"date": value.isoformat()}
    if isinstance(value, dt.time):
        return {"time": value.isoformat()}
    if isinstance(value, dt.timedelta):
        return {"timedelta": [value.days, value.seconds, value.microseconds]}
    if isinstance(value, uuid.UUID):
        return {"uuid": str(value)}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, (dict, list, tuple)):
        return {"json": value}
    return {"text": str(value)}


def model_for_tables(state_apps):
    return {m._meta.db_table: m for m in state_apps.get_models(include_auto_created=True)
            if m._meta.managed and not m._meta.proxy}


def table_rows(connection, state_apps, tables):
    """The rows of `tables`: through the final state's model where one owns the table (so they
    load on any engine), else raw. In key order, so ids load as they were."""
    models = model_for_tables(state_apps)
    out = []
    for table in tables:
        model = models.get(table)
        if model is not None:
            fields = [f.attname for f in model._meta.local_concrete_fields]  # this table's own columns
            rows = model._base_manager.using(connection.alias).order_by("pk").values_list(*fields)
            out.append({"table": table, "model": model._meta.label_lower, "columns": fields,
                        "rows": [[encode(v) for v in row] for row in rows]})
            continue
        with connection.cursor() as cursor:
            if connection.vendor == "sqlite":
                virtual, _ = S.sqlite_virtual_tables(connection.connection)
                cols = S.sqlite_columns(connection.connection, table)
                cols = (["rowid"] if table in virtual else []) + cols
                qualified = S.qident(table)
            else:  # "schema.name" outside public
                schema, name = S.pg_key_parts(table)
                cursor.execute("SELECT column_name FROM information_schema.columns WHERE table_name = %s "
                               "AND table_schema = %s ORDER BY ordinal_position", [name, schema])
                cols = [r[0] for r in cursor.fetchall()]
                qualified = f"{S.qident(schema)}.{S.qident(name)}"
            select = ", ".join("rowid" if c == "rowid" else S.qident(c) for c in cols)
            cursor.execute(f"SELECT {select} FROM {qualified} ORDER BY 1")
            out.append({"table": table, "model": None, "columns": cols, "qualified": qualified,
                        "rows": [[encode(v) for v in row] for row in cursor.fetchall()]})
    return out


def build_old(connection, removed_tables, own_labels):
    """Scratch database A: the old history, measured operation by operation."""
    inventory = []
    create_scratch(connection)
    try:
        state = migrate_all(connection, inventory, own_labels)
        facts = S.describe(connection, content=True)
        # (a partitioned table's rows are its partitions', carried there)
        filled = [t for t, c in sorted(facts["content"].items()) if c["rows"] and t != "django_migrations"
                  and t not in removed_tables and not facts["tables"].get(t, {}).get("partition_by")]
        rows = table_rows(connection, state.apps, filled)
    finally:
        drop_scratch(connection)
    return {"inventory": inventory, "schema": facts, "rows": rows}


# ---------------------------------------------------------------- what to carry

def cache_tables():
    """Tables of the project's DatabaseCache backends: createcachetable makes them on any engine."""
    from django.conf import settings

    return {c.get("LOCATION") for c in getattr(settings, "CACHES", {}).values()
            if "DatabaseCache" in str(c.get("BACKEND", "")) and c.get("LOCATION")}


def to_carry(old, new, removed_tables, caches=()):
    """The schema objects of the old history's database that the regenerated one lacks:
    {"pre": [(key, sql)], "post": [(key, sql)]}. Tables, extensions and functions go before the
    rows are loaded; indexes, constraints, views and triggers after (so triggers do not fire
    on rows whose effects are carried already)."""
    skip = set(removed_tables)
    pre, post = [], []
    for name, made in sorted(old.get("schemas", {}).items()):  # first: tables, sequences and functions go in them
        if name not in new.get("schemas", {}):
            pre.append((f"schema {name}", made["sql"]))
    for name, ext in sorted(old["extensions"].items()):
        if name not in new["extensions"]:
            pre.append((f"extension {name}", ext["sql"]))
    for name, made in sorted(old.get("collations", {}).items()):
        if name not in new.get("collations", {}):
            pre.append((f"collation {name}", made["sql"]))
    def types(after):  # in the order they were read (one may use another), by what else they need first
        for name, made in old.get("types", {}).items():
            if name not in new.get("types", {}) and made.get("after") == after:
                pre.append((f"type {name}", made["sql"]))
    types(None)
    for name, seq in sorted(old["sequences"].items()):  # of its own: invoice numbers, say (its value: carried_sequences)
        if seq.get("sql") and name not in new["sequences"] and name not in skip:
            pre.append((f"sequence {name}", seq["sql"]))
    for name, fn in sorted(old["functions"].items()):
        if name not in new["functions"]:
            pre.append((f"function {name}", fn["sql"]))
    types("functions")
    new_tables, cache = set(), []
    tables = {name: old["tables"][name] for name in sorted(old["tables"])}  # a partitioned table before its partitions
    for name in S.dependency_order(tables, lambda name: [tables[name].get("partition_of")]):
        table = tables[name]
        if name in new["tables"] or name in skip or name == "django_migrations":
            continue
        new_tables.add(name)
        if name in caches:  # made again by createcachetable, with its index, on whatever engine installs
            cache.append(name)
            continue
        pre.append((f"table {name}", table.get("sql") or table_sql(name, table)))
    types("tables")
    have = {(i["table"], i["definition"]) for i in new["indexes"].values()}
    for name, index in sorted(old["indexes"].items()):
        if index["table"] in cache:
            continue
        if index.get("attached"):  # made by its partitioned table's
            continue
        if index["table"] not in skip and (index["table"], index["definition"]) not in have and index.get("sql"):
            post.append((f"index {name}", index["sql"]))
    have = {(c["table"], c["definition"]) for c in new["constraints"].values()}
    for name, con in sorted(old["constraints"].items(), key=lambda kv: (kv[1]["definition"].startswith("f"), kv[0])):
        if con.get("inherited"):  # made by its partitioned table's
            continue
        if con["table"] not in skip and con["table"] not in cache and (con["table"], con["definition"]) not in have:
            post.append((f"constraint {name}", con["sql"]))
    for name, view in sorted(old["views"].items()):
        if name not in new["views"]:
            post.append((f"view {name}", view["sql"]))
    for name, trigger in sorted(old["triggers"].items()):
        if name not in new["triggers"] and trigger["table"] not in skip:
            post.append((f"trigger {name}", trigger["sql"]))
    for name, made in sorted(old.get("comments", {}).items()):  # COMMENT ON by a RunSQL (db_comment: made by the models)
        if made["table"] not in skip and new.get("comments", {}).get(name, {}).get("definition") != made["definition"]:
            post.append((f"comment on {name}", renamed_comment(made, name, new) or made["sql"]))
    for name, made in sorted(new.get("comments", {}).items()):  # one the old history took away again
        if made["table"] not in skip and name not in old.get("comments", {}):
            post.append((f"comment on {name}", f"{made['target']} IS NULL"))
    for kind, label in (("row_security", "row security of"), ("policies", "policy")):  # after the rows: they may hide them
        for name, made in sorted(old[kind].items()):
            if name not in new[kind] and made["table"] not in skip:
                post.append((f"{label} {name}", made["sql"]))
    return {"pre": pre, "post": post, "tables": sorted(new_tables), "cache_tables": cache}


def renamed_comment(made, key, new):
    """An index's or a constraint's comment (`made`, keyed by its definition and table: see
    remigrate_schema.COMMENTS) made on the one of the new history of the same table and
    definition, whose name may differ (a renamed model's); None for another kind."""
    kind = key.split(" ", 1)[0]
    if not made.get("name") or kind not in ("index", "constraint"):
        return None
    definition = key[len(kind) + 1:].rpartition(" on ")[0]
    for obj_key, obj in new["indexes" if kind == "index" else "constraints"].items():
        if obj["table"] == made["table"] and (obj["definition"] if kind == "index"
                                             else obj["definition"].split(" ", 1)[1]) == definition:
            schema, table = S.pg_key_parts(obj["table"])
            target = (f"COMMENT ON INDEX {S.qident(S.pg_key_parts(obj_key)[0])}.{S.qident(obj['name'])}" if kind == "index"
                      else f"COMMENT ON CONSTRAINT {S.qident(obj['name'])} ON {S.qident(schema)}.{S.qident(table)}")
            return target + made["sql"][len(made["target"]):]
    return None


def table_sql(name, table):
    """CREATE TABLE for a PostgreSQL table that no model makes (its keys, indexes and constraints
    come as their own objects), with the sequences of its serial columns; partitioned, or a
    partition, as it was."""
    schema, _, rel = name.rpartition(".")
    quoted = f"{S.qident(schema)}.{S.qident(rel)}" if schema else S.qident(rel)
    if table.get("partition_of"):  # its columns are its partitioned table's
        return f"CREATE TABLE {quoted} PARTITION OF {table['parent_sql']} {table['bound']}" + (
            f" PARTITION BY {table['partition_by']}" if table.get("partition_by") else "")
    cols, before, after = [], [], []
    for col, c in table["columns"].items():
        words = [S.qident(col), c["type"]]
        if c.get("identity"):
            words.append("GENERATED BY DEFAULT AS IDENTITY")
        elif c.get("raw_default"):
            words.append(f"DEFAULT {c['raw_default']}")
            seq = c.get("sequence")
            if seq:
                before.append(f"CREATE SEQUENCE IF NOT EXISTS {seq}")
                after.append(f"ALTER SEQUENCE {seq} OWNED BY {quoted}.{S.qident(col)}")
        if not c["null"]:
            words.append("NOT NULL")
        cols.append(" ".join(words))
    partitioned = f" PARTITION BY {table['partition_by']}" if table.get("partition_by") else ""
    return "; ".join([*before, f"CREATE TABLE {quoted} ({', '.join(cols)}){partitioned}", *after])


MIGRATION_TEMPLATE = '''\
"""Carried over by remigrate from the old migration history on {date}.

The old history made these beyond what the models describe; makemigrations cannot write them
again, so a fresh install gets them here: {summary}.
Schema objects were read from a database built from the old history on {vendor}, and are made
again as that engine printed them (an engine the old history was not measured on refuses to
install rather than silently lack them). Rows are in {data_file} beside this file, loaded with
their ids through the models where a model owns the table, so on any database engine.
"""
import base64
import datetime as dt
import decimal
import json
import uuid
from pathlib import Path

from django.core.management import call_command
from django.db import migrations

DATA = Path(__file__).with_name("{data_file}")
CACHE_TABLES = {cache_tables}


def decode(value):
    if not isinstance(value, dict):
        return value
    (kind, v), = value.items()
    return {{
        "float": float, "decimal": decimal.Decimal, "datetime": dt.datetime.fromisoformat,
        "date": dt.date.fromisoformat, "time": dt.time.fromisoformat, "uuid": uuid.UUID,
        "timedelta": lambda x: dt.timedelta(days=x[0], seconds=x[1], microseconds=x[2]),
        "bytes": base64.b64decode, "json": lambda x: x, "text": str,
    }}[kind](v)


def create_cache_tables(apps, schema_editor):
    if CACHE_TABLES:
        call_command("createcachetable", database=schema_editor.connection.alias, verbosity=0)


def engine_sql(connection):
    """The schema objects as the old history made them on this engine."""
    sql = json.loads(DATA.read_text(encoding="utf-8"))["sql"]
    if connection.vendor in sql:
        return sql[connection.vendor]
    if any(part for made in sql.values() for part in made.values()):
        raise RuntimeError(
            f"{{DATA.stem}} carries schema objects measured on {{', '.join(sorted(sql))}} only; what the old history made "
            f"on {{connection.vendor}} is unknown, so installing here would silently lack them: run the reset "
            f"against a {{connection.vendor}} database to carry them")
    return {{"pre": [], "post": []}}


def run_sql(phase):
    def forwards(apps, schema_editor):
        for key, statement in engine_sql(schema_editor.connection)[phase]:
            schema_editor.execute(statement, params=None)
    return forwards


def load_rows(apps, schema_editor):
    connection = schema_editor.connection
    data = json.loads(DATA.read_text(encoding="utf-8"))
    for table in data["tables"]:
        rows = [[decode(v) for v in row] for row in table["rows"]]
        if table["model"]:
            # a raw save, as loaddata does: this table's columns as they were (auto_now fields
            # keep their values, a multi-table child does not write its parent's row again)
            model = apps.get_model(table["model"])
            for row in rows:
                model(**dict(zip(table["columns"], row))).save_base(raw=True, force_insert=True, using=connection.alias)
        elif connection.vendor == table["vendor"]:  # a table no model describes: rows as that engine gave them
            quote = connection.ops.quote_name
            columns = ", ".join("rowid" if c == "rowid" else quote(c) for c in table["columns"])
            marks = ", ".join(["%s"] * len(table["columns"]))
            with connection.cursor() as cursor:
                target = table.get("qualified") or quote(table["table"])
                cursor.executemany(f"INSERT INTO {{target}} ({{columns}}) VALUES ({{marks}})", rows)
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:  # ids are never reused: sequences as the old history left them
        for table, column, value in data["sequences"]:
            if connection.vendor == "postgresql" and table is None:  # a sequence of its own (column: its name)
                cursor.execute("SELECT setval(%s::regclass, %s, true)", [column, value])
            elif connection.vendor == "postgresql" and column:
                schema, dot, name = table.partition(".")  # "schema.name" outside public
                where = f"{{quote(schema)}}.{{quote(name)}}" if dot else quote(table)
                cursor.execute("SELECT setval(pg_get_serial_sequence(%s, %s), %s, true)", [where, column, value])
            elif connection.vendor == "sqlite" and table:
                cursor.execute("UPDATE sqlite_sequence SET seq = %s WHERE name = %s", [value, table])
                if not cursor.rowcount:
                    cursor.execute("INSERT INTO sqlite_sequence (name, seq) VALUES (%s, %s)", [table, value])


class Migration(migrations.Migration):
    dependencies = {dependencies}

    operations = [
        migrations.RunPython(create_cache_tables, migrations.RunPython.noop),
        migrations.RunPython(run_sql("pre"), migrations.RunPython.noop),
        migrations.RunPython(load_rows, migrations.RunPython.noop),
        migrations.RunPython(run_sql("post"), migrations.RunPython.noop),
    ]
'''


# What a statement says without running it: comments (-- and /* */) and string constants ('...',
# $tag$...$tag$), so a CREATE EXTENSION commented out or quoted is not read as one.
SQL_NOISE = re.compile(r"--[^\n]*|/\*.*?\*/|'(?:[^']|'')*'|\$(\w*)\$.*?\$\1\$", re.S)
EXTENSION_SQL = re.compile(r"\b(create|drop)\s+extension\s+(?:if\s+(?:not\s+)?exists\s+)?(\"(?:[^\"]|\"\")+\"|[\w-]+)"
                           r"((?:\s+with)?\s+schema\s+(?!public\b)[\w\"]+)?", re.I)


def history_order(loader, labels):
    """(app, migration) of the apps `labels`, in the order a migrate runs them."""
    ordered = dict.fromkeys(node for leaf in sorted(loader.graph.leaf_nodes()) for node in loader.graph.forwards_plan(leaf))
    return [(app, name) for app, name in ordered if app in labels]


def database_operations(operations):
    """The operations as the database sees them (a SeparateDatabaseAndState's database side)."""
    for op in operations:
        if type(op).__name__ == "SeparateDatabaseAndState":
            yield from database_operations(op.database_operations)
        else:
            yield op


def run_sql_texts(op):
    """The statements of a RunSQL forwards (a string, a list, or (sql, params) pairs), each
    without its comments and string constants (SQL_NOISE)."""
    statements = op.sql if isinstance(op.sql, (list, tuple)) else [op.sql]
    for statement in statements:
        text = statement[0] if isinstance(statement, (list, tuple)) else statement
        yield SQL_NOISE.sub(" ", str(text))


def extensions_made(loader, labels):
    """{extension: app} of the PostgreSQL extensions the old history of the apps `labels` creates
    (CreateExtension and its kinds, or a RunSQL CREATE EXTENSION), in the order it does: the new
    history must make them before any app's first migration, whose fields, indexes or operator
    classes may need them (makemigrations does not write them)."""
    from django.db import migrations
    try:
        from django.contrib.postgres.operations import CreateExtension
    except ImportError:  # no PostgreSQL driver: no such operation in the history either
        CreateExtension = ()

    def walk(operations):  # ("create" or "drop", extension)
        for op in database_operations(operations):
            if isinstance(op, CreateExtension):
                yield "create", op.name
            elif isinstance(op, migrations.RunSQL):
                for text in run_sql_texts(op):
                    for verb, name, elsewhere in EXTENSION_SQL.findall(text):
                        if elsewhere:  # in a schema of its own: made there by the carried migration, after the schema
                            continue
                        yield verb.lower(), name[1:-1].replace('""', '"') if name.startswith('"') else name.lower()

    found = {}
    for app, name in history_order(loader, labels):
        for verb, extension in walk(loader.get_migration(app, name).operations):
            if verb == "create":
                found.setdefault(extension, app)
            else:  # dropped later in the history: a fresh install from it has none
                found.pop(extension, None)
    return found


TYPE_SQL = re.compile(r"\b(?:create|drop)\s+(?:type|domain|collation)\s", re.I)


def makes_first_objects(loader, labels):
    """Whether the old history of the apps `labels` makes collations or types (CreateCollation,
    RemoveCollation, a RunSQL CREATE or DROP of a TYPE, DOMAIN or COLLATION): a model column may
    need one before its app's first migration (see make_first), and what the old history left
    of them is read from its scratch database."""
    from django.db import migrations
    try:
        from django.contrib.postgres.operations import CreateCollation, RemoveCollation
    except ImportError:  # no PostgreSQL driver: no such operation in the history either
        CreateCollation = RemoveCollation = ()

    for app, name in history_order(loader, labels):
        for op in database_operations(loader.get_migration(app, name).operations):
            if isinstance(op, (CreateCollation, RemoveCollation)):
                return True
            if isinstance(op, migrations.RunSQL) and any(TYPE_SQL.search(text) for text in run_sql_texts(op)):
                return True
    return False


def collations_made(loader, labels):
    """[CreateCollation] of the collations the old history of the apps `labels` makes and does not
    remove again, in its order: what a reset on another engine than PostgreSQL (whose scratch
    database has none) writes first, as the operations themselves (they do nothing elsewhere)."""
    try:
        from django.contrib.postgres.operations import CreateCollation, RemoveCollation
    except ImportError:  # no PostgreSQL driver: no such operation in the history either
        return []
    found = {}
    for app, name in history_order(loader, labels):
        for op in database_operations(loader.get_migration(app, name).operations):
            if isinstance(op, CreateCollation):
                found[op.name] = op
            elif isinstance(op, RemoveCollation):
                found.pop(op.name, None)
    return list(found.values())


def first_objects(schema):
    """The SQL that makes the old history's own collations and types as its scratch database
    had them at the end (with the schemas they are in, other than public), collations first (a
    domain may use one), each type after those it uses. A type that needs a routine or a table
    of the project's is left to the carried migration (to_carry: after them)."""
    names = [*schema.get("collations", {}), *schema.get("types", {})]
    statements = [f"CREATE SCHEMA IF NOT EXISTS {S.qident(name)}"
                  for name in sorted({n.split(".")[0] for n in names if "." in n})]  # pg_key: "schema.name"
    return (statements + [c["sql"] for c in schema.get("collations", {}).values()]
            + [t["sql"] for t in schema.get("types", {}).values() if not t.get("after")])


# The function the first app's first migration runs to make the collations and types (a RunPython,
# so that on any other engine it does nothing): written into the file, which imports nothing of remigrate.
FIRST_FUNCTION = '''

def remigrate_first(apps, schema_editor):
    """Collations and types the old history made, before any table that uses them (PostgreSQL)."""
    if schema_editor.connection.vendor == "postgresql":
        for statement in {statements}:
            schema_editor.execute(statement, params=None)
'''
FIRST_MARK = "remigrate_placeholder_module"


def make_first(loader, roots, extensions, statements=(), operations=()):
    """Each of the `roots` (every app's first new migration, (app, name)) made to begin with the
    CreateExtension of each of `extensions` (IF NOT EXISTS: whichever of them runs first makes
    them, the others do nothing; elsewhere than on PostgreSQL none does anything). The
    `statements` (first_objects: collations and types) are run by a function written into the
    root that runs first (on a reset of another engine, the `operations`: CreateCollation), and
    every other root depends on it: no cycle can come of it, since that root depends on none of
    them. A field, an index or an operator class of any app's first migration may need them. Written again by Django's own MigrationWriter, so the files stay as
    makemigrations writes them (no migration of its own that `__first__` could resolve to)."""
    from django.conf import settings
    from django.contrib.postgres.operations import CreateExtension
    from django.db import migrations
    from django.db.migrations.writer import MigrationWriter

    def remigrate_first(apps, schema_editor):  # written by its name: see FIRST_FUNCTION
        pass
    remigrate_first.__module__, remigrate_first.__qualname__ = FIRST_MARK, "remigrate_first"

    order = history_order(loader, {app for app, _ in roots})
    first = min(roots, key=order.index)
    for app, name in roots:
        migration = loader.get_migration(app, name)
        made = [CreateExtension(extension) for extension in extensions]
        if (statements or operations) and (app, name) == first:
            made += list(operations)
            made += [migrations.RunPython(remigrate_first, migrations.RunPython.noop)] if statements else []
        elif statements or operations:
            migration.dependencies.append(first)
        migration.operations[:0] = made
        # the user model's swappable dependency as makemigrations gives it to the writer (loaded
        # from the file it holds the setting's value, not its name)
        migration.dependencies = [("__setting__", "AUTH_USER_MODEL")
                                  if getattr(dep, "setting", None) == settings.AUTH_USER_MODEL else dep
                                  for dep in migration.dependencies]
        writer = MigrationWriter(migration)
        text = writer.as_string()
        if statements and (app, name) == first:
            head, sep, tail = text.partition("\n\nclass Migration(")
            if not sep or f"import {FIRST_MARK}\n" not in head:
                raise HistoryError(f"the collations and types could not be written into {app}/{name}.py")
            head = head.replace(f"import {FIRST_MARK}\n", "")
            text = head + FIRST_FUNCTION.format(statements=pretty_list(statements)) + sep + tail.replace(
                f"{FIRST_MARK}.remigrate_first", "remigrate_first")
        Path(writer.path).write_text(text, encoding="utf-8")


def pretty_list(strings):
    return "[\n" + "".join(f"            {s!r},\n" for s in strings) + "        ]"


def carried_sequences(schema, tables, carried=()):
    """(table, column, value) of the old history's sequences for the carried tables, and (None,
    quoted name, value) of the sequences of their own it carries (`carried`: their keys)."""
    out = []
    for key, seq in sorted(schema["sequences"].items()):
        if not seq["value"]:
            continue
        if seq.get("sql") and key in carried:  # (its key is ambiguous when its name holds a dot: not parsed)
            out.append([None, f"{S.qident(seq['schema'])}.{S.qident(seq['name'])}", seq["value"]])
            continue
        table = seq.get("table") or key
        if table in tables:
            column = key.rsplit(".", 1)[1] if "." in key and seq.get("table") else None
            out.append([table, column, seq["value"]])
    return out


def write_carried(folder, number, carry, rows, sequences, dependencies, vendor):
    """The carried-over migration and its data file; returns their names."""
    name = f"{number:04d}_{CARRIED}"
    data_file = f"{name}.json"
    parts = []
    if carry["pre"] or carry["post"]:
        parts.append(f"{len(carry['pre']) + len(carry['post'])} schema objects")
    if carry["cache_tables"]:
        parts.append(f"the cache tables {', '.join(carry['cache_tables'])}")
    if rows:
        parts.append(f"the rows of {len(rows)} tables ({sum(len(t['rows']) for t in rows)} rows)")
    source = MIGRATION_TEMPLATE.format(
        date=dt.date.today().isoformat(), summary=" and ".join(parts) or "nothing", vendor=vendor,
        data_file=data_file, cache_tables=repr(carry["cache_tables"]),
        dependencies=repr(sorted(dependencies)).replace("), (", "),\n        (").replace("[(", "[\n        (")
        .replace(")]", "),\n    ]"))
    (Path(folder) / f"{name}.py").write_text(source, encoding="utf-8")
    sql = {vendor: {"pre": [list(item) for item in carry["pre"]], "post": [list(item) for item in carry["post"]]}}
    rows = [{**table, "vendor": None if table["model"] else vendor} for table in rows]
    (Path(folder) / data_file).write_text(json.dumps({"sql": sql, "tables": rows, "sequences": sequences}, indent=1,
                                                     ensure_ascii=False), encoding="utf-8")
    return [f"{name}.py", data_file]


def choose_app(inventory, own_labels):
    """The app whose history made the first carried effect (else the first own app)."""
    for entry in inventory:
        if entry.get("effect") and (entry["effect"]["created"] or entry["effect"]["rows"]) and entry["app"] in own_labels:
            return entry["app"]
    return own_labels[0]


def add_engine(folder, written, connection, old, removed_tables):
    """Measure the old history on one more engine (SQLite, beside a PostgreSQL reset): build the
    new history up to the carried migration, add what the old one made on this engine to the
    carried migration's data, migrate it, and describe the result for the comparison."""
    from django.db.migrations.executor import MigrationExecutor

    (app, name), = [(a, f[:-3]) for a, f in written if f.endswith(".py")]
    data_path = Path(folder) / f"{name}.json"
    create_scratch(connection)
    try:
        executor = MigrationExecutor(connection)
        graph = executor.loader.graph
        targets = [n for n in graph.leaf_nodes() if n != (app, name)]
        targets += [d for d in graph.nodes[(app, name)].dependencies if d[0] == app]
        try:
            executor.migrate(targets)
            base = S.describe(connection)
            carry = to_carry(old["schema"], base, removed_tables, cache_tables())
            data = json.loads(data_path.read_text(encoding="utf-8"))
            data["sql"][connection.vendor] = {"pre": [list(i) for i in carry["pre"]],
                                              "post": [list(i) for i in carry["post"]]}
            data["tables"] += [{**t, "vendor": connection.vendor} for t in old["rows"] if not t["model"]]
            # whole or not at all: scratch B may be reading it meanwhile
            data_path.with_suffix(".part").write_text(json.dumps(data, indent=1, ensure_ascii=False), encoding="utf-8")
            data_path.with_suffix(".part").replace(data_path)
            migrate_all(connection)
        except Exception as exc:
            raise HistoryError(f"{type(exc).__name__}: {str(exc).strip()[:300]}")
        return {"schema": S.describe(connection, content=True),
                "carried": [k for k, _ in carry["pre"] + carry["post"]]}
    finally:
        drop_scratch(connection)


def build_new(connection, old, removed_tables, own, carry_enabled=True, on_written=None):
    """Scratch database B: the regenerated history, plus the carried-over migration written into
    the (scratch) migrations folder of one app; then the project's post_migrate handlers.
    `old`: a function giving the old history's measure (called once B's own history is in, so
    the two can be built at once), or None. `on_written(connection, files)` is told the carried
    migration's files as soon as they are on disk."""
    from django.core.management.sql import emit_post_migrate_signal
    from django.db.migrations.loader import MigrationLoader

    create_scratch(connection)
    written = []
    try:
        migrate_all(connection)
        base = S.describe(connection, content=True)
        old = old() if carry_enabled and old else None
        if old:
            carry = to_carry(old["schema"], base, removed_tables, cache_tables())
            # rows the new history already makes the same (another app's data migration) stay its own
            made = {t: c["digest"] for t, c in base["content"].items()}
            rows = [t for t in old["rows"] if made.get(t["table"]) != old["schema"]["content"][t["table"]]["digest"]]
            if carry["pre"] or carry["post"] or carry["cache_tables"] or rows:
                loader = MigrationLoader(None, ignore_no_migrations=True)
                labels = [a["label"] for a in own]
                app = choose_app(old["inventory"], labels)
                leaves = loader.graph.leaf_nodes()
                number = 1 + max(int(n.split("_", 1)[0]) for a, n in leaves if a == app and n[:4].isdigit())
                folder = next(a["migrations_dir"] for a in own if a["label"] == app)
                tables = {t["table"] for t in rows} | set(carry["tables"])
                sequences = carried_sequences(old["schema"], tables, {k[len("sequence "):] for k, _ in carry["pre"]
                                                                      if k.startswith("sequence ")})
                written = [(app, f) for f in write_carried(folder, number, carry, rows, sequences,
                                                           [tuple(n) for n in leaves], connection.vendor)]
                if on_written:
                    on_written(connection, written)
                migrate_all(connection)
        else:
            carry = {"pre": [], "post": [], "tables": [], "cache_tables": []}
        facts = S.describe(connection, content=True)
        try:
            from django.apps import apps as global_apps

            emit_post_migrate_signal(0, False, connection.alias, apps=global_apps, plan=[])
            post_migrate_error = None
        except Exception as exc:
            post_migrate_error = f"{type(exc).__name__}: {str(exc).strip()[:300]}"
        installed = S.describe(connection)  # what every install has, post_migrate handlers' objects included
    finally:
        drop_scratch(connection)
    return {"schema": facts, "installed": installed, "written": written, "post_migrate_error": post_migrate_error,
            "carried": [f"cache table {t}" for t in carry["cache_tables"]] + [k for k, _ in carry["pre"] + carry["post"]]}
