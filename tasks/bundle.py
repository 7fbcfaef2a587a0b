"""Backup bundles as data: names, manifests, comparisons. Plain module (no invoke import).

A bundle is a folder <backup-dir>/<database>-<UTC time>/ holding the dump, manifest.json and
migrations.tar.gz, all 0600. It is written as .<name>.partial and renamed only once verified,
so a folder with that name and a manifest is a verified bundle, and nothing else looks like one.
One exception: a SQLite reset's copy has its integrity_check finished while the new file is built
(the live file is replaced only after it passes); until then its manifest says PENDING_CHECK, and
every use of a bundle (restore, rollback, --check) reads its dump in full anyway.
"""
import datetime as dt
import hashlib
import json
import re

VERSION = "0.1.0"
FORMAT = 1
MANIFEST = "manifest.json"
JOURNAL = "journal.json"  # a reset's record of its phases, in its bundle
MIGRATIONS_ARCHIVE = "migrations.tar.gz"
PARTIAL_SUFFIX = ".partial"
PENDING_CHECK = "pending: checked while the new database is built, before it replaces the live one"
CHECK_FAILED = "FAILED: "  # the start of a deferred check's verdict when the dump did not read back
FETCH_DIR = ".remigrate/fetched"  # on the machine running fab: <fetch-dir>/<host>/<bundle>/


def bundle_name(database_name, when, taken=()):
    """A timestamped name that never overwrites: <db>-<YYYYmmddTHHMMSSZ>[-N]."""
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", database_name.rstrip("/").rsplit("/", 1)[-1]).strip("._") or "database"
    base = re.sub(r"\.(sqlite3?|db)$", "", base)
    name = f"{base}-{when.astimezone(dt.timezone.utc):%Y%m%dT%H%M%SZ}"
    candidate, n = name, 1
    while candidate in taken or f".{candidate}{PARTIAL_SUFFIX}" in taken:
        n += 1
        candidate = f"{name}-{n}"
    return candidate


def new_run_id():
    import secrets

    return secrets.token_hex(6)


def now():
    return dt.datetime.now(dt.timezone.utc)


def database_identity(engine, name, host="", port="", real_path=None):
    """What names one database wherever its backups go: engine, host, port and name (SQLite: the
    file's real path). `key` is short enough for file names."""
    if engine == "sqlite":
        ident = {"engine": "sqlite", "path": real_path or name}
    else:
        ident = {"engine": engine, "host": host or "local socket", "port": str(port or 5432), "name": name}
    ident["key"] = hashlib.sha256(json.dumps(ident, sort_keys=True).encode("utf-8")).hexdigest()[:16]
    return ident


def identity_of(manifest):
    """The database a bundle was taken from (older manifests: read from their database section)."""
    if manifest.get("identity"):
        return manifest["identity"]
    d = manifest.get("database") or {}
    return database_identity(manifest.get("engine"), d.get("name", ""), d.get("host", ""), d.get("port", ""))


def describe_identity(ident):
    if ident.get("engine") == "sqlite":
        return f"SQLite file {ident.get('path')}"
    return f"{ident.get('engine')} database {ident.get('name')} at {ident.get('host')}:{ident.get('port')}"


def of_database(bundles, ident):
    """The bundles taken from this database."""
    return [b for b in bundles if b.get("manifest") and identity_of(b["manifest"])["key"] == ident["key"]]


def manifest_checksum(manifest):
    """sha256 of the manifest's content without its own checksum field (canonical JSON)."""
    body = {k: v for k, v in manifest.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode("utf-8")).hexdigest()


def content_digest(manifest):
    """How the bundle's content digests were made: as recorded, else (a bundle of a version that
    had one way per engine) that way."""
    saved = manifest["database"]
    if saved.get("content_digest"):
        return saved["content_digest"]
    return "md5-repr" if manifest.get("engine") == "sqlite" else "md5-text"


def seal(manifest):
    return {**manifest, "checksum": manifest_checksum(manifest)}


def manifest_problems(manifest):
    """Why a manifest cannot be trusted (its checksum, its list of files), or []."""
    if not isinstance(manifest, dict):
        return ["the manifest is missing or unreadable"]
    problems = []
    if "checksum" not in manifest:
        problems.append("the manifest has no checksum (made by an older remigrate)")
    elif manifest["checksum"] != manifest_checksum(manifest):
        problems.append("the manifest was changed after it was written (checksum mismatch)")
    files = manifest.get("files")
    dump = (manifest.get("dump") or {}).get("file")
    if not isinstance(files, dict) or not files:
        problems.append("the manifest lists no files")
    else:
        for needed in filter(None, (dump, MIGRATIONS_ARCHIVE)):
            if needed not in files:
                problems.append(f"the manifest does not list {needed}")
        for name, entry in files.items():
            if not isinstance(entry, dict) or not entry.get("sha256") or not isinstance(entry.get("size"), int):
                problems.append(f"the manifest has no size and sha256 for {name}")
            elif name == dump and entry["size"] == 0:
                problems.append(f"{name} is recorded as empty")
    return problems


def build_manifest(*, name, kind, engine, db, stats, dump, files, archive, project, verified, target, identity=None,
                   run_id=None):
    """Everything a restore or a reset needs to prove nothing was lost. Never the password."""
    return {
        "format": FORMAT,
        "tool": "remigrate",
        "tool_version": VERSION,
        "name": name,
        "kind": kind,
        "created_at": now().isoformat(timespec="seconds"),
        "host": target,
        "engine": engine,
        "database": {
            "django_engine": db.engine,
            "name": db.name,
            "host": db.host,
            "port": db.port,
            "user": db.user,
            "server_version": stats.get("server_version"),
            "properties": stats.get("properties", {}),
            "relations": stats.get("relations", []),
            "tables": stats.get("tables", {}),
            "sequences": stats.get("sequences", []),
            "content": stats.get("content", {}),
            "content_digest": stats.get("content_digest"),
            "objects": stats.get("objects", []),
            "grants": stats.get("grants", []),
            **({"comments": stats["comments"]} if "comments" in stats else {}),
        },
        "applied_migrations": stats.get("applied_migrations"),
        "dump": dump,
        "migrations_archive": archive,
        "files": files,
        "verified": verified,
        "project": project,
        "identity": identity,
        "run_id": run_id,
    }


def compare_counts(expected, actual, expected_missing=(), expected_new=(), may_grow=()):
    """Rows (table, before, after, status) and whether every difference was expected."""
    rows, clean = [], True
    for table in sorted(set(expected) | set(actual)):
        before, after = expected.get(table), actual.get(table)
        if before == after:
            status = "ok"
        elif table in may_grow and before is not None and after is not None and after > before:
            status = "grew (new models)"
        elif after is None and table in expected_missing:
            status = "removed (expected)"
        elif before is None and table in expected_new:
            status = "new (expected)"
        else:
            status = "MISMATCH" if before is not None and after is not None else ("MISSING" if after is None else "EXTRA")
            clean = False
        rows.append((table, "-" if before is None else before, "-" if after is None else after, status))
    return rows, clean


def grown_limits(content, may_grow):
    """For tables that may gain rows (content types of new models), the highest key the backup
    had: their old rows are compared up to it."""
    return {t: c["max_pk"] for t, c in content.items() if t in may_grow and c.get("max_pk") is not None}


def compare_content(before, after, skip=(), may_grow=()):
    """Tables whose rows differ in content from the backup's (digests over every row and column).
    Tables in `may_grow` were digested only up to their old highest key, so new rows may follow."""
    problems = []
    for table in sorted(before):
        if table in skip or table == "django_migrations" or table not in after:
            continue
        was, now = before[table], after[table]
        if was["digest"] != now["digest"] or was["rows"] != now["rows"]:
            scope = " (rows the backup had)" if table in may_grow else ""
            problems.append(f"{table}: content differs from the backup{scope} "
                            f"({was['rows']} rows before, {now['rows']} now)")
    return problems


def sequence_key(seq):
    """How a sequence of the stats is known: a column's by (table, column), whatever its name (a
    renamed model's sequence is named after the old table); one of its own by (None, its name)."""
    return (seq["table"], seq["column"]) if seq.get("table") else (None, seq["sequence"])


def sequence_problems(before, after, skip=()):
    """Sequences below their marks in `before` (the backup's), or gone (one of its own; a
    column's goes with its table)."""
    now = {sequence_key(s): s for s in after}
    problems = []
    for s in before:
        if s.get("table") in skip or s.get("table") == "django_migrations":
            continue
        key = sequence_key(s)
        got = now.get(key)
        what = f"sequence {s['sequence']}" if key[0] is None else f"sequence of {s['table']}.{s['column']}"
        if got is None and key[0] is None:
            problems.append(f"{what} is gone")
        elif got is not None and got["high_water"] < s["high_water"]:
            problems.append(f"{what} is at {got['high_water']}, below the old {s['high_water']}")
    return problems


def missing_objects(before, after, skip=()):
    """Views, triggers, functions, extensions and virtual tables the backup had and the database
    lacks now (those of skipped tables excepted)."""
    def on_skipped(obj):
        owned = owned_object(obj)
        if owned:
            return owned in skip
        kind, _, name = obj.partition(" ")
        if kind == "comment":  # "comment on column shop_order.total #digest" (see remigrate_schema.comment_key)
            what, _, name = name.removeprefix("on ").rpartition(" #")[0].partition(" ")
            if what in ("index", "constraint"):  # "... on table": by its definition (remigrate_schema COMMENTS)
                return name.rpartition(" on ")[2] in skip
            return (name.rsplit(".", 1)[0] if what in ("column", "trigger") else name) in skip
        if kind in ("trigger", "policy"):
            return name.rsplit(".", 1)[0] in skip
        if kind == "row-security":
            return name in skip
        if kind == "grant":  # "grant SELECT on table to role", "... on sequence of table.col ...", "... on column table.col ..."
            target = name.split(" on ", 1)[1].rsplit(" to ", 1)[0]
            if target.startswith("schema "):
                return False
            target = target.removeprefix("sequence of ").removeprefix("column ")
            return target in skip or target.rsplit(".", 1)[0] in skip
        return obj.startswith("virtual table ") and obj[len("virtual table "):] in skip
    return sorted(o for o in set(before) - set(after) if not on_skipped(o))


def gone_objects(before, after, skip=()):
    """missing_objects as the verification says them: a comment whose object has another one now
    changed (its key ends with a digest of its text, see remigrate_schema.comment_key)."""
    commented = {o.rpartition(" #")[0] for o in after if o.startswith("comment on ")}
    out = []
    for obj in missing_objects(before, after, skip):
        if obj.startswith("comment on "):
            what = obj.rpartition(" #")[0]
            out.append(f"{what} changed (not the backup's text)" if what in commented else f"{what} is gone")
        else:
            out.append(f"{obj} is gone")
    return out


OWNED_WORDS = ("table ", "view ", "materialized view ", "sequence ", "foreign table ", "function ", "procedure ", "type ",
               "domain ", "collation ")


def owned_object(obj):
    """The object's name of an owner's entry ("table orders owned by deployer", see
    remigrate_schema.grant_key), else None."""
    head, sep, _role = obj.rpartition(" owned by ")
    if not sep or head.startswith("schema "):
        return None
    for word in sorted(OWNED_WORDS, key=len, reverse=True):
        if head.startswith(word):
            return head[len(word):]
    return None


def access_rules(objects):
    """The privileges on schemas and columns, the owners (schemas, and relations and routines not the
    connected role's) and the default privileges among `objects` (see
    remigrate_schema.grant_key): a rebuilt database must have these exactly, no more (a schema's
    REVOKE ... FROM PUBLIC is the absence of a grant)."""
    return {o for o in objects if o.startswith("default privilege ") or " owned by " in o
            or (o.startswith("grant ") and (" on schema " in o or " on column " in o))}


def new_access(saved, after, skip=()):
    """Access rules the database has now and the backup did not (none to compare in a bundle
    made before remigrate recorded them, or of a table not brought back)."""
    properties = saved.get("properties", {})
    if "beyond_reach" not in properties:  # recorded together with them
        return []
    new = access_rules(after) - access_rules(saved.get("objects", []))
    if not properties.get("owners_recorded"):  # the owners of relations and routines came later
        new = {o for o in new if not owned_object(o)}
    return missing_objects(new, [], skip)


def check_files(manifest, actual, names=None):
    """Problems between the manifest's recorded files (or those of them in `names`) and what is on
    disk now (size, sha256), and with the manifest itself."""
    problems = manifest_problems(manifest)
    for name, want in manifest.get("files", {}).items():
        if names is not None and name not in names:
            continue
        got = actual.get(name)
        if got is None:
            problems.append(f"{name} is missing")
        elif got["size"] != want["size"]:
            problems.append(f"{name} is {got['size']} bytes, expected {want['size']} (truncated or changed)")
        elif got["sha256"] != want["sha256"]:
            problems.append(f"{name} has a different sha256 than when it was written (corrupted)")
    return problems


def bundle_state(bundle):
    """What `inv backups` says of a bundle from a cheap look: manifest and file sizes."""
    if bundle["name"].endswith(PARTIAL_SUFFIX):
        return "INCOMPLETE: a backup that never finished (safe to delete)"
    problems = manifest_problems(bundle.get("manifest"))
    sizes = bundle.get("sizes") or {}
    for name, want in ((bundle.get("manifest") or {}).get("files") or {}).items():
        if isinstance(want, dict) and sizes.get(name) != want.get("size"):
            problems.append(f"{name} is missing" if name not in sizes else f"{name} has {sizes[name]} bytes, "
                                                                          f"not {want.get('size')}")
    if failed_check(bundle.get("manifest")):
        problems.append("the dump did not read back in full when its reset checked it")
    if problems:
        return "DAMAGED: " + "; ".join(problems)
    if ((bundle.get("manifest") or {}).get("dump") or {}).get("integrity_check") == PENDING_CHECK:
        return ("ok (sizes match; the copy's full read was not recorded: its reset ended before it, or is running; "
                "--check reads it)")
    return "ok (sizes match)"


def holds_database(manifest):
    """Whether a bundle can restore the database: a dump of all of it (not none, not only the
    tables a fake reset dropped)."""
    dump = (manifest or {}).get("dump") or {}
    return bool(dump.get("file")) and not dump.get("scope")


def failed_check(manifest):
    """Whether the bundle's dump failed to read back in full when its reset checked it."""
    return str(((manifest or {}).get("dump") or {}).get("integrity_check") or "").startswith(CHECK_FAILED)


def pick_bundle(bundles, wanted=None):
    """The bundle named `wanted` (a name or a path ending in it), else the newest verified one."""
    valid = [b for b in bundles if b.get("manifest") and not b["name"].endswith(PARTIAL_SUFFIX)]
    if wanted:
        key = wanted.rstrip("/").rsplit("/", 1)[-1]
        for bundle in valid:
            if bundle["name"] == key:
                return bundle
        return None
    return max(valid, key=lambda b: b["manifest"].get("created_at", ""), default=None)
