"""Acceptance: a reset of the atelier project (tests/projects/atelier), whose history carries the
traps of real projects, on SQLite and on PostgreSQL, through the real command line.

The project: seed rows from a CSV beside the migrations and a default workflow stage (both
altered later), a database cache table made by a RunPython and written by a post_migrate
handler, post_migrate handlers that change rows in place (group permissions, a settings row),
a view made by RunSQL, a PL/pgSQL function and trigger (PostgreSQL), an FTS5 table (SQLite),
a model retired by a state-only delete (its table keeps rows), RenameModel, DeleteModel, and
data fixes that do nothing on an empty database.

What a reset must do with it, as seen from outside:
- every row of every table comes back with the same content (the removed model's table
  excepted), none changed by the handlers; views, functions, triggers, the FTS table, the cache
  table are there and work;
- a fresh install from the new history equals one from the old history (schema and rows), on
  the engine the reset ran on and also on the other one (the old history installs on both);
- makemigrations is clean; rollback puts files (bytes and modes) and rows back;
- unreviewed model changes and unknown models are refused in one line, changing nothing.

One reset (and its rollback) per engine is shared by the tests of that engine (a session fixture
whose result is shared across xdist workers); each worker seeds its own templates once.
"""
import contextlib
import fcntl
import hashlib
import itertools
import os
import pickle
import re
import shutil
import sqlite3
import stat
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import HIDDEN_PREFIXES, NASTY_PASSWORD, PYTHON, REPO, PgDb, manage, pg_copy, run_inv
from servers import SUPERUSER, psycopg_admin

ATELIER = REPO / "tests" / "projects" / "atelier"
APPS = ("accounts", "catalog", "workflow", "search")
REMOVED_MODEL = "catalog.LegacyThing"
REMOVED_TABLE = "catalog_legacything"
ROWS = 60  # products and tasks; about 650 rows in all
COPY_IGNORE = shutil.ignore_patterns("__pycache__", "*.sqlite3", "*.sqlite3-*", ".remigrate", ".env")
FTS_SHADOWS = ("_data", "_idx", "_content", "_docsize", "_config")
# Rows that refer to content types and permissions by id: compared by natural key between two
# fresh installs (their ids may legitimately differ there; never in the reset database).
NATURAL = {
    "django_content_type": "SELECT app_label, model FROM django_content_type",
    "auth_permission": ("SELECT ct.app_label, ct.model, p.codename, p.name FROM auth_permission p "
                        "JOIN django_content_type ct ON ct.id = p.content_type_id"),
    "auth_group_permissions": ("SELECT g.name, ct.app_label, ct.model, p.codename FROM auth_group_permissions gp "
                               "JOIN auth_group g ON g.id = gp.group_id JOIN auth_permission p ON p.id = gp.permission_id "
                               "JOIN django_content_type ct ON ct.id = p.content_type_id"),
}
_ids = itertools.count(1)


# ---------------------------------------------------------------- the project on one engine

@dataclass
class Atelier:
    engine: str
    project: Path
    env: dict
    backup_dir: Path
    path: Path = None  # SQLite file
    pg_db: PgDb = None
    cleanup: list = field(default_factory=list)

    def query(self, statement, params=()):
        if self.engine == "sqlite":
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
            try:
                return [tuple(r) for r in conn.execute(statement, params).fetchall()]
            finally:
                conn.close()
        with psycopg_admin(self.pg_db.cluster, self.pg_db.name) as conn:
            cur = conn.execute(statement, params or None)
            return [tuple(r) for r in cur.fetchall()] if cur.description else []

    def execute(self, statements):
        """Writes, in one transaction; returns the rows of the last statement."""
        if self.engine == "sqlite":
            conn = sqlite3.connect(self.path)
            try:
                with conn:
                    for statement in statements:
                        cur = conn.execute(statement)
                    return cur.fetchall()
            finally:
                conn.close()
        with self.pg_db.connect() as conn, conn.transaction():
            for statement in statements:
                cur = conn.execute(statement)
            return [tuple(r) for r in cur.fetchall()] if cur.description else []

    def inv(self, task, *args, timeout=300):
        return run_inv(task, "--project-dir", str(self.project), "--backup-dir", str(self.backup_dir), *args,
                       env=self.env, timeout=timeout)


def copy_project(dest):
    shutil.copytree(ATELIER, dest, ignore=COPY_IGNORE)
    return dest


def clean_child_env(extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(HIDDEN_PREFIXES)}
    env.update(extra)
    return env


@contextlib.contextmanager
def clean_environment_for_session(home):
    """What conftest's autouse fixture does for a test, for the session fixtures (which run first)."""
    home.mkdir(parents=True, exist_ok=True)
    with pytest.MonkeyPatch.context() as mp:
        for key in list(os.environ):
            if key.startswith(HIDDEN_PREFIXES):
                mp.delenv(key)
        mp.setenv("HOME", str(home))
        yield


def seed(project_dir, env):
    manage(project_dir, env, "migrate", "-v0")
    manage(project_dir, env, "fill_atelier", f"--rows={ROWS}")


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def engine(request):
    return request.param


@pytest.fixture(scope="session")
def atelier_sqlite_file(tmp_path_factory):
    """The atelier project migrated and filled once; tests get copies."""
    return filled_sqlite_file(tmp_path_factory.mktemp("atelier-seeded-sqlite"))


def filled_sqlite_file(folder):
    with clean_environment_for_session(folder / "home"):
        path = folder / "db.sqlite3"
        seed(copy_project(folder / "atelier"), {"DB_PATH": str(path)})
    return path


@pytest.fixture(scope="session")
def atelier_pg_template(pg, tmp_path_factory):
    """A filled PostgreSQL database to copy from (owned by the superuser, like conftest's template)."""
    return filled_pg_template(pg, tmp_path_factory.mktemp("atelier-seeded-pg"), "atelier_template")


def filled_pg_template(pg, folder, name):
    """A filled PostgreSQL database `name` to copy from, owned by the superuser."""
    db = PgDb(pg, name, f"{name}_owner", NASTY_PASSWORD)
    pg.create_app_database(db.name, db.role, db.password)
    with clean_environment_for_session(folder / "home"):
        seed(copy_project(folder / "atelier"), db.env())
    with psycopg_admin(pg) as conn:
        conn.execute(f"ALTER DATABASE {db.name} OWNER TO {SUPERUSER}")
    return db


def make_case(engine, root, request, pg_db=None):
    """A scratch copy of the project and of the filled database, under root."""
    project = copy_project(root / "atelier")
    backup_dir = root / "backups"
    if engine == "sqlite":
        path = project / "db.sqlite3"
        shutil.copyfile(request.getfixturevalue("atelier_sqlite_file"), path)
        return Atelier("sqlite", project, {"DB_PATH": str(path)}, backup_dir, path=path)
    template = request.getfixturevalue("atelier_pg_template")
    case = Atelier("postgresql", project, {}, backup_dir)
    if pg_db is None:  # a session-scoped case: its own database and role
        pg = request.getfixturevalue("pg")
        n = next(_ids)
        pg_db = PgDb(pg, f"atelier_case_{n}", f"atelier_app_{n}", NASTY_PASSWORD)
        pg.create_app_database(pg_db.name, pg_db.role, pg_db.password, createdb=True)
        case.cleanup.append(lambda: pg.drop_app_database(pg_db.name, pg_db.role))
    pg_copy(pg_db, template)
    case.pg_db, case.env = pg_db, pg_db.env()
    return case


@pytest.fixture
def case(engine, tmp_path, request):
    """A function-scoped scratch case (for the tests that must see nothing change)."""
    pg_db = request.getfixturevalue("pg_db") if engine == "postgresql" else None
    return make_case(engine, tmp_path, request, pg_db)


# ---------------------------------------------------------------- what is compared

def _by_column(names, rows):
    return sorted((tuple(sorted(zip(names, row), key=lambda p: p[0])) for row in rows), key=repr)


def sqlite_objects(path):
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        master = conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall()
    finally:
        conn.close()
    virtual = {name: " ".join(sql.split()) for kind, name, _, sql in master
               if kind == "table" and (sql or "").upper().startswith("CREATE VIRTUAL TABLE")}
    shadows = {v + suffix for v in virtual for suffix in FTS_SHADOWS}
    tables = sorted(name for kind, name, _, _ in master
                    if kind == "table" and not name.startswith("sqlite_") and name not in virtual and name not in shadows)
    return master, virtual, shadows, tables


def sqlite_rows(path, skip=()):
    """Every table's rows keyed by column name; a virtual table by rowid and its columns, never its
    shadow tables (their index blobs may be laid out differently after a rebuild)."""
    _, virtual, _, tables = sqlite_objects(path)
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        out = {}
        for name in tables + sorted(virtual):
            if name in skip:
                continue
            cur = conn.execute(f'SELECT rowid AS "<rowid>", * FROM "{name}"' if name in virtual else f'SELECT * FROM "{name}"')
            out[name] = _by_column([d[0] for d in cur.description], cur.fetchall())
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'").fetchone():
            out["sqlite_sequence"] = sorted(r for r in conn.execute("SELECT name, seq FROM sqlite_sequence").fetchall()
                                            if r[0] not in skip)
        return out
    finally:
        conn.close()


def sqlite_schema(path, skip=()):
    master, virtual, _, tables = sqlite_objects(path)
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        columns = {}
        for name in tables:
            if name not in skip:
                columns[name] = sorted((c[1], c[2].lower(), bool(c[3])) for c in conn.execute(f'PRAGMA table_info("{name}")'))
    finally:
        conn.close()
    return {
        "tables": columns,
        "views": {name: " ".join(sql.split()) for kind, name, _, sql in master if kind == "view"},
        "triggers": {name: (tbl, " ".join(sql.split())) for kind, name, tbl, sql in master if kind == "trigger"},
        "virtual tables": virtual,
        # the load builds these after the rows (not those of UNIQUE/PRIMARY KEY: no SQL of their own)
        "indexes": {name: (tbl, " ".join(sql.split())) for kind, name, tbl, sql in master
                    if kind == "index" and sql and tbl not in skip},
    }


def pg_rows(db, skip=()):
    from psycopg import sql

    with psycopg_admin(db.cluster, db.name) as conn:
        tables = sorted(r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))
        out = {}
        for name in tables:
            if name not in skip:
                cur = conn.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(name)))
                out[name] = _by_column([d[0] for d in cur.description], cur.fetchall())
        return out


def pg_schema(db, skip=()):
    with psycopg_admin(db.cluster, db.name) as conn:
        columns = {}
        for table, column, data_type, length, precision, scale, nullable in conn.execute(
                "SELECT c.table_name, c.column_name, c.data_type, c.character_maximum_length, c.numeric_precision, "
                "c.numeric_scale, c.is_nullable FROM information_schema.columns c "
                "JOIN pg_tables t ON t.schemaname = c.table_schema AND t.tablename = c.table_name "
                "WHERE c.table_schema = 'public'"):
            if table not in skip:
                columns.setdefault(table, []).append((column, data_type, length, precision, scale, nullable == "YES"))
        views = dict(conn.execute("SELECT c.relname, pg_get_viewdef(c.oid, true) FROM pg_class c "
                                  "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind IN ('v', 'm')"))
        triggers = {f"{table}.{name}": (definition, enabled) for table, name, definition, enabled in conn.execute(
            "SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid), t.tgenabled FROM pg_trigger t "
            "JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND NOT t.tgisinternal")}
        functions = dict(conn.execute(
            "SELECT p.oid::regprocedure::text, pg_get_functiondef(p.oid) FROM pg_proc p "
            "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public' AND p.prokind = 'f' "
            "AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')"))
    return {"tables": {t: sorted(cols) for t, cols in columns.items()}, "views": views, "triggers": triggers,
            "functions": functions}


def rows_of(case, skip=()):
    return sqlite_rows(case.path, skip) if case.engine == "sqlite" else pg_rows(case.pg_db, skip)


def schema_of(case, skip=()):
    return sqlite_schema(case.path, skip) if case.engine == "sqlite" else pg_schema(case.pg_db, skip)


def natural_rows(case, skip=()):
    """Rows of every table but django_migrations, with content types and permissions by natural key."""
    rows = rows_of(case, skip=("django_migrations", "sqlite_sequence", *skip))
    rows.pop("sqlite_sequence", None)
    for table, statement in NATURAL.items():
        rows[table] = sorted(case.query(statement), key=repr)
    return rows


def differences(before, after, what="rows"):
    """A short, readable account of how two {name: content} maps differ (empty when equal)."""
    out = []
    for name in sorted(set(before) | set(after)):
        if name not in after:
            out.append(f"{name}: missing afterwards")
        elif name not in before:
            out.append(f"{name}: not there before")
        elif before[name] != after[name]:
            b, a = before[name], after[name]
            if isinstance(b, list) and isinstance(a, list):
                gone = [r for r in b if r not in a][:3]
                new = [r for r in a if r not in b][:3]
                out.append(f"{name}: {len(b)} -> {len(a)} {what}; only before {gone}; only after {new}")
            else:
                out.append(f"{name}: {b!r} -> {a!r}")
    return out


def migration_files(project):
    """Every file of the apps' migrations folders: sha256 and mode, by path."""
    out = {}
    for app in APPS:
        for path in sorted((project / app / "migrations").rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                out[str(path.relative_to(project))] = (hashlib.sha256(path.read_bytes()).hexdigest(),
                                                       oct(stat.S_IMODE(path.stat().st_mode)))
    return out


def dirs_in(folder):
    return sorted(p.name for p in Path(folder).iterdir() if p.is_dir()) if Path(folder).exists() else []


def one_line_error(out):
    text = out.stdout + out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in text, text
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{out.stderr}"
    return lines[0]


FTS_PROBE = "SELECT rowid FROM search_entry_fts WHERE search_entry_fts MATCH 'linen OR stoneware' ORDER BY rowid"
TALLY = "SELECT s.name, t.task_count FROM workflow_stagetally t JOIN workflow_workflowstage s ON s.id = t.stage_id WHERE s.name = 'Draft'"


def probe(case):
    """Do the objects the old history made still work? (PostgreSQL: the tally trigger; SQLite:
    the full-text index.) Returns what was seen, or the error."""
    try:
        if case.engine == "postgresql":
            before = case.query(TALLY)
            task_id = case.execute([
                "INSERT INTO workflow_task (title, stage_id, priority, notes, created_at) "
                "SELECT 'probe task', id, 3, '', now() FROM workflow_workflowstage WHERE name = 'Draft' RETURNING id"])[0][0]
            inserted = case.query(TALLY)
            case.execute([f"DELETE FROM workflow_task WHERE id = {int(task_id)}"])
            return {"before": before, "after insert": inserted, "after delete": case.query(TALLY)}
        case.execute(["INSERT INTO search_entry_fts (search_entry_fts) VALUES ('integrity-check')"])
        return {"match": case.query(FTS_PROBE)}
    except Exception as exc:  # reported by the tests, not here
        return {"error": f"{type(exc).__name__}: {exc}"}


# ---------------------------------------------------------------- one reset per engine

def build_reset_run(engine, root, request):
    """reset --remove-model catalog.LegacyThing on a filled copy, what it left, then rollback."""
    with clean_environment_for_session(root / "home"):
        case = make_case(engine, root, request)
        try:
            # Modes a checkout can have: rollback must put them back too.
            os.chmod(case.project / "catalog/migrations/0002_seed_categories.py", 0o640)
            os.chmod(case.project / "workflow/migrations/0005_pg_task_tally_trigger.py", 0o755)
            run = SimpleNamespace(engine=engine)
            run.files_before = migration_files(case.project)
            run.rows_before, run.schema_before = rows_of(case), schema_of(case)
            run.probe_before = probe(case)
            run.reset = case.inv("reset", "--yes", "--remove-model", REMOVED_MODEL)
            run.rows_after, run.schema_after = rows_of(case), schema_of(case)
            run.makemigrations = subprocess.run([PYTHON, "manage.py", "makemigrations", "--check", "--dry-run"],
                                                cwd=case.project, env=clean_child_env(case.env), capture_output=True, text=True)
            run.reset_copy = shutil.copytree(case.project, root / "reset-copy" / "atelier", ignore=COPY_IGNORE)
            run.probe_after = probe(case)
            run.rollback = case.inv("rollback", "--yes")
            run.files_after_rollback = migration_files(case.project)
            run.rows_after_rollback, run.schema_after_rollback = rows_of(case), schema_of(case)
            return run
        finally:
            for undo in case.cleanup:
                undo()


@pytest.fixture(scope="session")
def reset_run(engine, tmp_path_factory, request):
    """One reset (and its rollback) per engine for the whole run, even across xdist workers: the
    first worker that needs it builds it under a lock and leaves its results (plain data and the
    reset project's files) in the run's shared temporary folder for the other worker.
    (xdist_group marks would be simpler, but --dist loadgroup does not group with pytest 9.2 and
    xdist 3.8: tried.)"""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    result = shared / f"atelier-reset-{engine}.pickle"
    with open(shared / f"atelier-reset-{engine}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if result.exists():
            return pickle.loads(result.read_bytes())
        run = build_reset_run(engine, tmp_path_factory.mktemp(f"atelier-reset-{engine}"), request)
        result.write_bytes(pickle.dumps(run))
        return run


def require_reset(run):
    out = run.reset
    if out.returncode != 0:
        pytest.fail(f"reset failed (exit {out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}", pytrace=False)


def check(problems, title):
    """Fail with a short list instead of a dump of the fixture."""
    if problems:
        pytest.fail(f"{title}:\n" + "\n".join(f"  {p}" for p in problems), pytrace=False)


def without(rows, *names):
    return {k: v for k, v in rows.items() if k not in names}


def test_reset_keeps_the_content_of_every_row(reset_run):
    require_reset(reset_run)
    before = without(reset_run.rows_before, "django_migrations", REMOVED_TABLE)
    if "sqlite_sequence" in before:
        before["sqlite_sequence"] = [r for r in before["sqlite_sequence"] if r[0] not in ("django_migrations", REMOVED_TABLE)]
    after = without(reset_run.rows_after, "django_migrations")
    if "sqlite_sequence" in after:
        after["sqlite_sequence"] = [r for r in after["sqlite_sequence"] if r[0] != "django_migrations"]
    # The post_migrate handlers must not have touched restored rows: editors still lack the
    # delete permissions, maintenance is still "on", the deployment counter still says 1 run.
    check(differences(before, after), "rows that differ after the reset")
    check([REMOVED_TABLE] if REMOVED_TABLE in reset_run.rows_after else [], "the removed model's table is still there")


def test_reset_keeps_views_functions_triggers_fts_and_cache_and_they_work(reset_run):
    require_reset(reset_run)
    run = reset_run
    before, after = dict(run.schema_before), run.schema_after
    before["tables"] = without(before["tables"], REMOVED_TABLE)
    if "indexes" in before:  # (SQLite) the load builds them after the rows: each is there again, as it was made
        before["indexes"] = {name: index for name, index in before["indexes"].items() if index[0] != REMOVED_TABLE}
    problems = []
    if "atelier_cache" not in after["tables"] or len(run.rows_after.get("atelier_cache", [])) != 4:
        problems.append("the database cache table or its 4 rows are missing")
    if "workflow_task_board" not in after["views"]:
        problems.append("the view workflow_task_board is missing")
    if run.engine == "postgresql":
        draft = run.probe_before["before"][0][1]
        works = {"before": [("Draft", draft)], "after insert": [("Draft", draft + 1)], "after delete": [("Draft", draft)]}
        if run.probe_after != works:
            problems.append(f"the tally trigger does not work after the reset: {run.probe_after}, expected {works}")
    elif run.probe_after != run.probe_before:
        problems.append(f"the full-text index does not answer as before: {run.probe_after}")
    for kind in before:
        problems += [f"{kind}: {d}" for d in differences(before[kind], after.get(kind, {}), what="items")]
    check(problems, "database objects lost or broken by the reset")


def test_makemigrations_is_clean_after_the_reset(reset_run):
    require_reset(reset_run)
    out = reset_run.makemigrations
    if out.returncode != 0 or "No changes detected" not in out.stdout:
        pytest.fail(f"makemigrations --check --dry-run after the reset:\n{out.stdout[-2000:]}{out.stderr[-2000:]}", pytrace=False)


def compare_fresh_installs(engine, old, new, tmp_path, request):
    """migrate an empty database with the old project and one with the new, side by side, then
    compare them: tables and columns, views, triggers, functions, and every row."""
    cases = []
    with contextlib.ExitStack() as stack:
        if engine == "sqlite":
            for project in (old, new):
                path = project.parent / "fresh.sqlite3"
                cases.append(Atelier("sqlite", project, {"DB_PATH": str(path)}, tmp_path / "b", path=path))
        else:
            pg = request.getfixturevalue("pg")
            n = next(_ids)
            for label, project in (("old", old), ("new", new)):
                db = PgDb(pg, f"atelier_fresh_{label}_{n}", f"atelier_fresh_{label}_{n}", NASTY_PASSWORD)
                pg.create_app_database(db.name, db.role, db.password)
                stack.callback(pg.drop_app_database, db.name, db.role)
                cases.append(Atelier("postgresql", project, db.env(), tmp_path / "b", pg_db=db))
        procs = [subprocess.Popen([PYTHON, "manage.py", "migrate", "-v0"], cwd=c.project, env=clean_child_env(c.env),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in cases]
        outs = [p.communicate(timeout=300) for p in procs]
        assert procs[0].returncode == 0, f"migrate with the old history failed on {engine}: {outs[0][1][-2000:]}"
        if procs[1].returncode != 0:
            pytest.fail(f"migrate of an empty {engine} database with the new history failed:\n{outs[1][1][-1500:]}", pytrace=False)
        old_case, new_case = cases
        # Seed rows first, by name, for a readable failure.
        categories = new_case.query("SELECT code FROM catalog_category")
        assert len(categories) == 9, f"the CSV's 9 categories are not in a fresh install: {categories}"
        stages = new_case.query("SELECT name, color FROM workflow_workflowstage")
        assert stages == [("Draft", "#9e9e9e")], f"the default workflow stage is not in a fresh install: {stages}"
        skip = (REMOVED_TABLE,)  # the old history keeps its (empty) table; the reset removed it on purpose
        old_schema, new_schema = schema_of(old_case, skip), schema_of(new_case, skip)
        problems = []
        for kind in old_schema:
            problems += [f"{kind}: {d}" for d in differences(old_schema[kind], new_schema.get(kind, {}), what="items")]
        problems += differences(natural_rows(old_case, skip), natural_rows(new_case, skip))
        check(problems, f"a fresh {engine} install from the new history differs from one from the old history")


def test_a_fresh_install_from_the_new_history_equals_one_from_the_old(reset_run, tmp_path, request):
    require_reset(reset_run)
    old = copy_project(tmp_path / "old" / "atelier")
    new = shutil.copytree(reset_run.reset_copy, tmp_path / "new" / "atelier")
    compare_fresh_installs(reset_run.engine, old, new, tmp_path, request)


def test_the_new_history_also_installs_like_the_old_one_on_the_other_engine(reset_run, tmp_path, request):
    """Beyond the same-engine check: the old history installs on both engines (its RunPython and
    RunSQL check the vendor), so the history written by a reset on a SQLite laptop must also
    install on PostgreSQL like the old one did (cache table, view, function and trigger), and one
    written on PostgreSQL must install on SQLite (cache table, view, FTS5 table)."""
    require_reset(reset_run)
    other = "postgresql" if reset_run.engine == "sqlite" else "sqlite"
    old = copy_project(tmp_path / "old" / "atelier")
    new = shutil.copytree(reset_run.reset_copy, tmp_path / "new" / "atelier")
    if other == "sqlite":  # a PostgreSQL reset measures the old history on SQLite too
        compare_fresh_installs(other, old, new, tmp_path, request)
        return
    # A SQLite laptop cannot measure what the old history made on PostgreSQL: installing there
    # must refuse, naming the way out, rather than silently lack the view, function and trigger.
    pg = request.getfixturevalue("pg")
    db = PgDb(pg, f"atelier_other_{next(_ids)}", f"atelier_other_{next(_ids)}", NASTY_PASSWORD)
    pg.create_app_database(db.name, db.role, db.password)
    try:
        out = subprocess.run([PYTHON, "manage.py", "migrate", "-v0"], cwd=new, env=clean_child_env(db.env()),
                             capture_output=True, text=True, timeout=300)
    finally:
        pg.drop_app_database(db.name, db.role)
    assert out.returncode != 0
    assert "measured on sqlite only" in out.stderr and "run the reset against a postgresql database" in out.stderr


def test_rollback_after_a_reset_puts_back_every_file_and_row(reset_run):
    require_reset(reset_run)
    run = reset_run
    out = run.rollback
    if out.returncode != 0:
        pytest.fail(f"rollback failed (exit {out.returncode}):\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}", pytrace=False)
    check(differences(run.files_before, run.files_after_rollback, what="files"), "migration files not put back byte for byte")
    problems = differences(run.rows_before, run.rows_after_rollback)
    for kind in run.schema_before:
        problems += [f"{kind}: {d}" for d in differences(run.schema_before[kind], run.schema_after_rollback[kind], "items")]
    check(problems, "the database is not as it was before the reset")


# ---------------------------------------------------------------- refusals that change nothing

PRODUCT_NAME = "sku = models.CharField(max_length=32, unique=True)\n    name = models.CharField(max_length=120)"
# change: (models file, text, replacement, (model, field) that the output must name on one line)
PENDING = {
    "shorter max_length": ("catalog/models.py", PRODUCT_NAME, PRODUCT_NAME.replace("max_length=120", "max_length=60"),
                           ("product", "name")),
    "new unique": ("accounts/models.py", "display_name = models.CharField(max_length=80)",
                   "display_name = models.CharField(max_length=80, unique=True)", ("member", "display_name")),
}


@pytest.mark.parametrize("change", sorted(PENDING))
def test_a_pending_field_change_refuses_the_reset_and_changes_nothing(case, change):
    file, old, new, (model_name, field_name) = PENDING[change]
    models = case.project / file
    text = models.read_text()
    assert text.count(old) == 1
    models.write_text(text.replace(old, new))
    files, rows, schema = migration_files(case.project), rows_of(case), schema_of(case)
    out = case.inv("reset", "--yes", "--remove-model", REMOVED_MODEL)
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
    line = one_line_error(out)
    # Refused for this reason (the field with no migration is named), not for another one.
    named = [ln for ln in (out.stdout + out.stderr).splitlines()
             if model_name in ln.lower() and re.search(rf"\b{field_name}\b", ln)]
    assert named, f"the refusal does not name the changed field {model_name}.{field_name}: {line}"
    assert migration_files(case.project) == files
    assert not differences(rows, rows_of(case)), differences(rows, rows_of(case))
    assert schema_of(case) == schema
    assert not dirs_in(case.backup_dir), f"a bundle was written: {dirs_in(case.backup_dir)}"


def test_remove_model_accepts_the_state_only_deleted_model_and_refuses_an_unknown_one(reset_run, case):
    # Accepted: the shared reset above was run with --remove-model catalog.LegacyThing.
    out = reset_run.reset
    if "LegacyThing" in out.stderr:
        pytest.fail(f"--remove-model {REMOVED_MODEL} was refused: {out.stderr[-2000:]}", pytrace=False)
    assert REMOVED_TABLE in out.stdout, "the plan does not name the table of the removed model"
    # Refused: a model that never existed, in one line, before anything is touched.
    files, rows = migration_files(case.project), rows_of(case)
    out = case.inv("reset", "--yes", "--remove-model", "catalog.Nope")
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
    assert "catalog.Nope" in one_line_error(out)
    assert migration_files(case.project) == files and not differences(rows, rows_of(case))
    assert not dirs_in(case.backup_dir), f"a bundle was written: {dirs_in(case.backup_dir)}"
