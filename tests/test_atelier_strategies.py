"""Acceptance: the swap and fake strategies on the atelier project (tests/projects/atelier), on
SQLite and on PostgreSQL, through the real command line.

Each test gets its own filled copy of the project and of its database (made by make_case of
test_atelier from this module's templates) and compares CONTENT: every row of every table by
column, the objects the old history made (view, PL/pgSQL trigger, FTS5 table), the names of
indexes, constraints and sequences, the migration files byte for byte.

- swap: rows kept, objects work, seconds of downtime; its rollback renames the kept database
  back and leaves nothing beside.
- fake: rows not moved (same storage), names those of a fresh install from the new history,
  Django sees exactly the new history applied; its rollback gives back every row and
  django_migrations.
- drift a fake cannot carry (made by hand before the reset): refused, naming it, nothing changed.
- a second fake right after a fake; a swap with open application sessions; a fake against an
  application's open transaction.
"""
import itertools
import json
import os
import re
import signal
import subprocess
import time

import psycopg
import pytest
from conftest import NASTY_PASSWORD, PYTHON, REPO, PgDb, manage
from servers import psycopg_admin
from test_atelier import (APPS, REMOVED_MODEL, REMOVED_TABLE, Atelier, check, clean_child_env, differences, dirs_in,
                          filled_pg_template, filled_sqlite_file, make_case, migration_files, one_line_error, probe,
                          rows_of, schema_of, without)

_ids = itertools.count(1)


# ---------------------------------------------------------------- the filled templates and the cases

# Same fixture names as test_atelier's, so that its make_case copies from these; other database
# names, since both modules may run on one worker's PostgreSQL cluster.
@pytest.fixture(scope="session")
def atelier_sqlite_file(tmp_path_factory):
    return filled_sqlite_file(tmp_path_factory.mktemp("atelier-strategies-sqlite"))


@pytest.fixture(scope="session")
def atelier_pg_template(pg, tmp_path_factory):
    return filled_pg_template(pg, tmp_path_factory.mktemp("atelier-strategies-pg"), "atelier_strategies_template")


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request):
    return request.param


@pytest.fixture
def case(engine, tmp_path, request):
    """A fresh filled copy of the atelier project on the engine, for this test only."""
    pg_db = request.getfixturevalue("pg_db") if engine == "postgresql" else None
    return make_case(engine, tmp_path, request, pg_db)


# ---------------------------------------------------------------- what is compared

def require_ok(out, what):
    if out.returncode != 0:
        pytest.fail(f"{what} failed (exit {out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}", pytrace=False)


def data_rows(rows):
    """Rows of every table but django_migrations and the removed model's (nor their sqlite_sequence rows)."""
    out = without(rows, "django_migrations", REMOVED_TABLE)
    if "sqlite_sequence" in out:
        out["sqlite_sequence"] = [r for r in out["sqlite_sequence"] if r[0] not in ("django_migrations", REMOVED_TABLE)]
    return out


def schema_differences(before, after, skip=()):
    problems = []
    for kind in before:
        b = without(before[kind], *skip) if kind == "tables" else before[kind]
        if kind == "indexes":  # (SQLite) those of a table left out go with it
            b = {name: index for name, index in b.items() if index[0] not in skip}
        problems += [f"{kind}: {d}" for d in differences(b, after.get(kind, {}), what="items")]
    return problems


PG_NAMES = """
SELECT 'index', t.relname, i.relname FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
  JOIN pg_class t ON t.oid = x.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace WHERE n.nspname = 'public'
UNION ALL
SELECT 'constraint', t.relname, k.conname FROM pg_constraint k JOIN pg_class t ON t.oid = k.conrelid
  JOIN pg_namespace n ON n.oid = t.relnamespace WHERE n.nspname = 'public'
UNION ALL
SELECT 'sequence', coalesce(t.relname, '-'), s.relname FROM pg_class s JOIN pg_namespace n ON n.oid = s.relnamespace
  LEFT JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = s.oid AND d.refclassid = 'pg_class'::regclass
                       AND d.deptype IN ('a', 'i')
  LEFT JOIN pg_class t ON t.oid = d.refobjid
  WHERE n.nspname = 'public' AND s.relkind = 'S'
UNION ALL
SELECT 'trigger', t.relname, g.tgname FROM pg_trigger g JOIN pg_class t ON t.oid = g.tgrelid
  JOIN pg_namespace n ON n.oid = t.relnamespace WHERE n.nspname = 'public' AND NOT g.tgisinternal
"""
SQLITE_NAMES = "SELECT type, tbl_name, name FROM sqlite_master WHERE type IN ('index', 'trigger', 'view')"
# Names a fresh install from the new history never gives: after a table's or a column's old name
# (catalog Item -> Product, ItemImage -> ProductImage, search Query -> SavedQuery, FK fields
# item -> product, WorkflowStage.label -> name).
OLD_NAMED = re.compile(r"catalog_item|search_query|_item_id|workflowstage_label")


def names_of(case):
    """{table: sorted (kind, name)}: the indexes, constraints, sequences, triggers (and SQLite
    views) of every table but the removed model's."""
    out = {}
    for kind, table, name in case.query(PG_NAMES if case.engine == "postgresql" else SQLITE_NAMES):
        if table != REMOVED_TABLE:
            out.setdefault(table, []).append((kind, name))
    return {t: sorted(v) for t, v in out.items()}


def storage_of(case):
    """Where each table's rows are stored: (oid, relfilenode) on PostgreSQL, the root page on SQLite.
    A table rewritten or reloaded gets new ones."""
    if case.engine == "postgresql":
        found = case.query("SELECT c.relname, c.oid::int8, c.relfilenode::int8 FROM pg_class c "
                           "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind = 'r'")
        return {name: rest for name, *rest in found if name != REMOVED_TABLE}
    return {name: page for name, page in case.query("SELECT name, rootpage FROM sqlite_master WHERE type = 'table'")
            if name != REMOVED_TABLE}


def fresh_install(case, tmp_path, request):
    """An empty database of the same engine migrated with the project's migration files as they
    are now (the new history after a reset)."""
    if case.engine == "sqlite":
        path = tmp_path / "fresh.sqlite3"
        fresh = Atelier("sqlite", case.project, {"DB_PATH": str(path)}, tmp_path / "fresh-backups", path=path)
    else:
        pg = request.getfixturevalue("pg")
        n = next(_ids)
        db = PgDb(pg, f"atelier_strategies_fresh_{n}", f"atelier_strategies_fresh_{n}", NASTY_PASSWORD)
        pg.create_app_database(db.name, db.role, db.password)
        request.addfinalizer(lambda: pg.drop_app_database(db.name, db.role))
        fresh = Atelier("postgresql", case.project, db.env(), tmp_path / "fresh-backups", pg_db=db)
    manage(case.project, fresh.env, "migrate", "-v0")
    return fresh


def project_tree(project):
    """Every file of the project folder (none added beside the database, say), __pycache__ aside."""
    return sorted(str(p.relative_to(project)) for p in project.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def databases_of(case):
    """PostgreSQL: the database and any made beside it under its name; SQLite: the files named after it."""
    if case.engine == "sqlite":
        return sorted(p.name for p in case.path.parent.iterdir() if p.name.startswith(case.path.name))
    name = case.pg_db.name
    with psycopg_admin(case.pg_db.cluster) as conn:
        every = [r[0] for r in conn.execute("SELECT datname FROM pg_database")]
    return sorted(d for d in every if d == name or d.startswith(name + "__") or "__remigrate_" in d)


def expected_databases(case):
    return [case.path.name] if case.engine == "sqlite" else [case.pg_db.name]


def new_history(case):
    """(app, name) of every migration file of the project's apps on disk."""
    return sorted((app, p.stem) for app in APPS for p in (case.project / app / "migrations").glob("[0-9]*.py"))


def recorded(case):
    placeholders = ", ".join(f"'{a}'" for a in APPS)
    return sorted(case.query(f"SELECT app, name FROM django_migrations WHERE app IN ({placeholders})"))


def shown_by_showmigrations(case):
    """{(app, name): applied} as `manage.py showmigrations APPS` lists them."""
    shown, app = {}, None
    for line in manage(case.project, case.env, "showmigrations", *APPS).splitlines():
        if line.strip() and not line.startswith(" "):
            app = line.strip()
        elif m := re.match(r"^\s*\[([X ])\] (\S+)", line):
            shown[(app, m.group(2))] = m.group(1) == "X"
    return shown


def django_sees_the_new_history_applied(case):
    """migrate --check and makemigrations --check are clean; showmigrations lists the new files
    (and only them) as applied; django_migrations holds exactly them for the project's apps."""
    problems = []
    for args in (("migrate", "--check"), ("makemigrations", "--check", "--dry-run")):
        out = subprocess.run([PYTHON, "manage.py", *args], cwd=case.project, env=clean_child_env(case.env),
                             capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            problems.append(f"manage.py {' '.join(args)} exits {out.returncode}: {(out.stdout + out.stderr)[-800:]}")
    files = new_history(case)
    shown = shown_by_showmigrations(case)
    if shown != {m: True for m in files}:
        problems.append(f"showmigrations lists {shown}, expected exactly the new files applied: {files}")
    if recorded(case) != files:
        problems.append(f"django_migrations of {APPS} holds {recorded(case)}, expected {files}")
    return problems


def bundle_file(case, name):
    found = list(case.backup_dir.glob(f"*/{name}"))
    assert len(found) == 1, f"expected one {name} in {case.backup_dir}, found {found}"
    return json.loads(found[0].read_text())


def inv_rollback(case, *args):
    out = case.inv("rollback", "--yes", *args)
    require_ok(out, "inv rollback")
    return out


def sequences_of(case):
    """PostgreSQL: each sequence's last value (SQLite's counters are the rows of sqlite_sequence)."""
    if case.engine == "sqlite":
        return {}
    return {name: [value] for name, value in case.query(
        "SELECT sequencename, last_value FROM pg_sequences WHERE schemaname = 'public'")}


def everything_of(case):
    """Rows (django_migrations included), sequences, schema, names, migration files and the project folder."""
    return {"rows": rows_of(case), "sequences": sequences_of(case), "schema": schema_of(case), "names": names_of(case),
            "files": migration_files(case.project), "tree": project_tree(case.project)}


def everything_differences(before, after):
    problems = [f"rows: {d}" for d in differences(before["rows"], after["rows"])]
    problems += [f"sequences: {d}" for d in differences(before["sequences"], after["sequences"], what="values")]
    problems += schema_differences(before["schema"], after["schema"])
    problems += [f"names: {d}" for d in differences(before["names"], after["names"], what="names")]
    problems += [f"migration files: {d}" for d in differences(before["files"], after["files"], what="files")]
    if before["tree"] != after["tree"]:
        problems.append(f"project folder: added {sorted(set(after['tree']) - set(before['tree']))}, "
                        f"gone {sorted(set(before['tree']) - set(after['tree']))}")
    return problems


# ---------------------------------------------------------------- swap

def open_application_sessions(case):
    """PostgreSQL: application sessions open through a swap: idle, idle in a transaction that
    holds a lock, and in a transaction that wrote a row and never committed."""
    if case.engine != "postgresql":
        return {}
    sessions = {label: case.pg_db.connect() for label in ("idle", "idle in transaction", "uncommitted write")}
    sessions["idle"].execute("SELECT 1")
    sessions["idle in transaction"].execute("BEGIN")
    sessions["idle in transaction"].execute("SELECT count(*) FROM catalog_product").fetchone()
    sessions["uncommitted write"].execute("BEGIN")
    # (its id given: a sequence's next value taken is never given back, and the rollback's check compares sequences)
    sessions["uncommitted write"].execute("INSERT INTO accounts_sitesetting (id, key, value) "
                                          "VALUES (987654, 'uncommitted.during.swap', 'x')")
    return sessions


def sessions_left_working(case, sessions):
    """The sessions that still work after the swap (it must end them all) and those still on the
    server (asked before ours are closed)."""
    pids = [c.info.backend_pid for c in sessions.values()]
    alive = case.query("SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,)) if pids else []
    working = []
    for label, conn in sessions.items():
        try:
            conn.execute("SELECT 1")
            working.append(label)
        except psycopg.OperationalError:
            pass
        conn.close()
    return working + [f"server pid {pid}" for (pid,) in alive]


def test_swap_keeps_every_row_and_object_and_its_rollback_renames_the_old_database_back(case):
    probe_before = probe(case)  # before the snapshot: what it does to rows is in it
    assert "error" not in probe_before, probe_before
    before = everything_of(case)
    sessions = open_application_sessions(case)
    try:
        out = case.inv("reset", "--yes", "--strategy", "swap", "--remove-model", REMOVED_MODEL)
        require_ok(out, "reset --strategy swap")
    finally:
        left = sessions_left_working(case, sessions)
    assert not left, f"the application's sessions were not ended by the swap: {left}"
    rows_after = rows_of(case)  # (PostgreSQL: the open session's uncommitted row is nowhere)
    check(differences(data_rows(before["rows"]), data_rows(rows_after)), "rows that differ after the swap")
    check([REMOVED_TABLE] if REMOVED_TABLE in rows_after else [], "the removed model's table is still there")
    problems = schema_differences(before["schema"], schema_of(case), skip=(REMOVED_TABLE,))
    probe_after = probe(case)
    if probe_after != probe_before:
        problems.append(f"the {'tally trigger' if case.engine == 'postgresql' else 'full-text index'} does not "
                        f"answer as before: {probe_after}, before {probe_before}")
    check(problems, "database objects lost or broken by the swap")

    report, journal = bundle_file(case, "report.json"), bundle_file(case, "journal.json")
    assert report["strategy"] == "swap", report
    assert report.get("downtime_seconds") is not None and report["downtime_seconds"] < 5, report
    kept = journal["kept"].rsplit("/", 1)[-1]  # SQLite: a file beside the database; PostgreSQL: a database
    assert kept in databases_of(case), f"the old database is not kept as {kept}: {databases_of(case)}"

    if case.engine == "postgresql":  # a rollback killed between its two renames: no database under the live name
        env = {**os.environ, **case.env, "REMIGRATE_FAULT": "pause:rollback-set-aside:60"}
        killed = subprocess.Popen([PYTHON, "-m", "invoke", "rollback", "--project-dir", str(case.project), "--backup-dir",
                                   str(case.backup_dir), "--yes"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 120
        while not any("__remigrate_rejected_" in d for d in databases_of(case)) and time.monotonic() < deadline:
            assert killed.poll() is None, "the rollback ended before setting the new database aside"
            time.sleep(0.2)
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait()
        assert case.pg_db.name not in databases_of(case), databases_of(case)
        out = case.inv("cleanup", "--yes")  # the kept and the set-aside databases are all there is: never removed
        assert out.returncode == 1 and "run `inv rollback` first" in out.stderr, out.stdout + out.stderr
        assert len(databases_of(case)) == 2, databases_of(case)
    out = inv_rollback(case)
    assert "kept aside by the swap is back" in out.stdout, out.stdout[-2000:]
    # The new database (the application may have written to it) is set aside, never dropped, until cleanup;
    # found and named even when the rollback that set it aside was killed before recording it.
    assert "__remigrate_rejected_" in out.stdout or "remigrate-rejected-" in out.stdout, out.stdout[-2000:]
    assert len(databases_of(case)) == len(expected_databases(case)) + 1, databases_of(case)
    require_ok(case.inv("cleanup", "--yes"), "inv cleanup")
    check(everything_differences(before, everything_of(case)), "not as before the swap after its rollback")
    assert databases_of(case) == expected_databases(case), f"left beside after the rollback: {databases_of(case)}"
    if case.engine == "postgresql":  # open to the application again, under its own role
        with case.pg_db.connect() as conn:
            assert conn.execute("SELECT count(*) FROM catalog_product").fetchone()[0] > 0


# ---------------------------------------------------------------- fake

def test_fake_moves_no_row_gives_the_names_of_a_fresh_install_and_rolls_back(case, tmp_path, request):
    probe_before = probe(case)
    assert "error" not in probe_before, probe_before
    before = everything_of(case)
    storage = storage_of(case)
    old_named = sorted(n for names in before["names"].values() for _, n in names if OLD_NAMED.search(n))
    if case.engine == "postgresql":  # what the fake has to rename (SQLite remade those tables under new names)
        assert any("catalog_item" in n for n in old_named) and any("search_query" in n for n in old_named), old_named
        assert any("workflowstage_label" in n for n in old_named), old_named

    out = case.inv("reset", "--yes", "--strategy", "fake", "--remove-model", REMOVED_MODEL)
    require_ok(out, "reset --strategy fake")
    assert "fake       possible" in out.stdout and "no row was moved" in out.stdout, out.stdout[-2000:]
    assert bundle_file(case, "report.json")["strategy"] == "fake"

    rows_after = rows_of(case)
    check(differences(data_rows(before["rows"]), data_rows(rows_after)), "rows that differ after the fake")
    check([REMOVED_TABLE] if REMOVED_TABLE in rows_after else [], "the removed model's table is still there")
    check(differences(storage, storage_of(case), what="places"), "tables rewritten by the fake (rows were moved)")
    problems = schema_differences(before["schema"], schema_of(case), skip=(REMOVED_TABLE,))
    if probe(case) != probe_before:
        problems.append("the trigger or the full-text index does not answer as before")
    check(problems, "database objects lost or broken by the fake")

    # Names included: the live database is what a fresh install from the new history makes.
    names = names_of(case)
    check([f"{t}: {n}" for t, v in names.items() for _, n in v if OLD_NAMED.search(n)],
          "objects still named after an old table or column name")
    check(differences(names_of(fresh_install(case, tmp_path, request)), names, what="names"),
          "names that differ between a fresh install from the new history (before ->) and the faked database (-> after)")
    check(django_sees_the_new_history_applied(case), "Django does not see exactly the new history applied")

    # The history is fresh after a fake: a second one (nothing to remove) has nothing to do but may
    # not break anything; its rollback goes one step back, exactly.
    [first_bundle] = dirs_in(case.backup_dir)
    after_first = everything_of(case)
    problems = []
    out = case.inv("reset", "--yes", "--strategy", "fake")
    if out.returncode != 0:
        assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
        one_line_error(out)
        problems += [f"refused second fake changed {p}" for p in everything_differences(after_first, everything_of(case))]
    else:
        assert "no row was moved" in out.stdout, out.stdout[-2000:]
        now = everything_of(case)
        problems += [f"second fake changed rows: {d}" for d in differences(data_rows(after_first["rows"]), data_rows(now["rows"]))]
        problems += [f"second fake changed names: {d}" for d in differences(after_first["names"], now["names"], what="names")]
        problems += [f"second fake changed the schema: {d}" for d in schema_differences(after_first["schema"], now["schema"])]
        problems += [f"after the second fake: {p}" for p in django_sees_the_new_history_applied(case)]
        inv_rollback(case)  # the second one: back to what the first left
        problems += [f"second fake rolled back, not as after the first: {p}"
                     for p in everything_differences(after_first, everything_of(case))]
    check(problems, "a second fake right after the first, and its rollback")

    out = inv_rollback(case, "--backup", first_bundle)
    # The rollback of a fake restores no data: what was written since (here the probe's row, made and
    # deleted after the fake) stays written, so its sequences may only have moved on.
    now = everything_of(case)
    moved = {name for name in set(before["sequences"]) & set(now["sequences"])
             if now["sequences"][name] != before["sequences"][name]
             and min(v or 0 for v in now["sequences"][name]) >= max(v or 0 for v in before["sequences"][name])}
    assert moved <= {"workflow_task_id_seq", "workflow_stagetally_id_seq"}, moved
    before["sequences"] = {k: v for k, v in before["sequences"].items() if k not in moved}
    now["sequences"] = {k: v for k, v in now["sequences"].items() if k not in moved}
    check(everything_differences(before, now), "not as before the fake after its rollback")
    assert databases_of(case) == expected_databases(case), databases_of(case)


def drift(case, kind):
    """(statements, name) of something made by hand on the live database before the reset."""
    if kind == "check constraint":
        return ["ALTER TABLE catalog_product ADD CONSTRAINT handmade_check CHECK (id > 0)"], "handmade_check"
    if kind == "renamed index":  # the index of a column, given a name of one's own
        [(index,)] = case.query("SELECT indexname FROM pg_indexes WHERE schemaname = 'public' AND tablename = 'catalog_product' "
                                "AND indexdef LIKE '%USING btree (category_id)'")
        return [f'ALTER INDEX "{index}" RENAME TO handmade_category_idx'], "handmade_category_idx"
    return ["CREATE INDEX handmade_index ON catalog_product (name)"], "handmade_index"


@pytest.mark.parametrize("engine, kind", [("postgresql", "check constraint"), ("postgresql", "renamed index"),
                                          ("sqlite", "hand-made index")])
def test_fake_is_refused_when_the_live_schema_drifted_by_hand_and_nothing_changes(case, kind):
    statements, name = drift(case, kind)
    case.execute(statements)
    before = everything_of(case)
    assert any(name == n for v in before["names"].values() for _, n in v), before["names"]
    # An object made by hand stays a difference even when accepted (a fake cannot make it what the
    # new history makes); a name given by hand is renamed only when accepted by that name.
    accept = [] if kind == "renamed index" else ["--accept-difference", name]
    out = case.inv("reset", "--yes", "--strategy", "fake", "--remove-model", REMOVED_MODEL, *accept)
    assert out.returncode == 1, f"exit {out.returncode}, expected a refusal:\n{out.stdout[-2500:]}\n{out.stderr[-1500:]}"
    assert "fake       not possible" in out.stdout, out.stdout[-2500:]
    listed = [ln for ln in out.stdout.splitlines() if ln.strip().startswith("- ") and name in ln]
    assert listed, f"the refusal does not name {name}:\n{out.stdout[-2500:]}"
    assert "--strategy swap or rebuild" in one_line_error(out)
    check(everything_differences(before, everything_of(case)), "changed by a refused fake")
    assert not list(case.backup_dir.glob("*/journal.json")) and not dirs_in(case.backup_dir), dirs_in(case.backup_dir)
    if kind == "renamed index":  # accepted by name: the fake renames it to the new history's name
        out = case.inv("reset", "--yes", "--strategy", "fake", "--remove-model", REMOVED_MODEL, "--accept-difference", name)
        require_ok(out, "the fake with the hand-given name accepted")
        assert f"rename index {name} -> catalog_product_category_id_" in out.stdout, out.stdout[-2500:]
        assert not any(name == n for v in everything_of(case)["names"].values() for _, n in v)


# ---------------------------------------------------------------- adversarial

@pytest.mark.parametrize("engine", ["postgresql"])
def test_a_fake_meeting_an_open_application_transaction_gives_up_and_changes_nothing(case):
    """The renames need the tables to themselves: an application's transaction that holds a lock
    on a renamed table makes the fake give up (lock timeout) and roll back, not hang nor end the
    application's session; once the transaction ends, nothing of that run is in the way: the
    plan offers the fake again."""
    before = everything_of(case)
    app = case.pg_db.connect()
    try:
        app.execute("BEGIN")
        app.execute("SELECT count(*) FROM catalog_product").fetchone()
        out = case.inv("reset", "--yes", "--strategy", "fake", "--remove-model", REMOVED_MODEL, timeout=120)
        assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
        assert "rolled back" in one_line_error(out)
        assert app.execute("SELECT count(*) FROM catalog_product").fetchone()[0] == len(before["rows"]["catalog_product"])
        app.execute("COMMIT")  # its session and transaction were left alone
    finally:
        app.close()
    check(everything_differences(before, everything_of(case)), "changed by a fake that gave up")
    # Nothing of the run that gave up is left in the way (lock, journal): the plan offers the fake again.
    out = case.inv("reset", "--dry-run", "--strategy", "fake", "--remove-model", REMOVED_MODEL)
    require_ok(out, "the fake's plan once the application's transaction ended")
    assert "fake       possible" in out.stdout, out.stdout[-2000:]
