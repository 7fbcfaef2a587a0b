"""The whole reset against real SQLite files and a real PostgreSQL server, with its traps and faults."""
import contextlib
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time

import pytest
from conftest import PYTHON, REPO, SAMPLE, engine_case, manage, pg_rows, run_inv, sqlite_rows
from servers import SUPERUSER, psycopg_admin
from psycopg import sql
from test_backup import bundles_in

REMOVE = ["--remove-model", "site_building.WorkflowState"]
WF_TABLE = "igny8_site_blueprint_workflow_states"
OWN_MIGRATION_DIRS = [
    "igny8_core/auth", "igny8_core/modules/planner", "igny8_core/modules/writer", "igny8_core/modules/system",
    "igny8_core/modules/billing", "igny8_core/modules/automation", "igny8_core/business/site_building",
    "igny8_core/business/optimization", "igny8_core/business/publishing", "igny8_core/business/integration",
]


def tree_digest(project):
    """Every migration file's bytes, by path."""
    out = {}
    for folder in OWN_MIGRATION_DIRS:
        for path in sorted((project / folder / "migrations").rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                out[str(path.relative_to(project))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def data_rows(case):
    """Every table's rows, except what a reset is meant to change."""
    rows = case.rows()
    for key in ("django_migrations", WF_TABLE, "<sequences>", "sqlite_sequence"):
        rows.pop(key, None)
    return rows


def query(case, statement):
    if case.engine == "sqlite":
        with sqlite3.connect(case.project / "db.sqlite3") as conn:
            return conn.execute(statement).fetchall()
    with psycopg_admin(case.pg_db.cluster, case.pg_db.name) as conn:
        return [tuple(r) for r in conn.execute(statement).fetchall()]


PERMISSIONS = ("SELECT u.username, ct.app_label, p.codename FROM igny8_core_auth_user_user_permissions up "
               "JOIN igny8_core_auth_user u ON u.id = up.user_id JOIN auth_permission p ON p.id = up.permission_id "
               "JOIN django_content_type ct ON ct.id = p.content_type_id ORDER BY 1, 2, 3")
ADMIN_LOG = ("SELECT l.id, ct.app_label, ct.model, l.object_id, l.object_repr FROM django_admin_log l "
             "JOIN django_content_type ct ON ct.id = l.content_type_id ORDER BY 1")


def fresh_install(path, skip):
    """A fresh SQLite install as data: tables with their columns (in name order: a regenerated
    table orders them as the model does), views, triggers and virtual tables with their SQL,
    and every table's rows, less the `skip` tables."""
    with sqlite3.connect(path) as conn:
        objects = []
        for kind, name, sql_text in conn.execute("SELECT type, name, sql FROM sqlite_master WHERE type <> 'index'"):
            if name in skip:
                continue
            if kind == "table" and not (sql_text or "").startswith("CREATE VIRTUAL"):
                sql_text = sorted(tuple(r[1:]) for r in conn.execute(f'PRAGMA table_info("{name}")'))
            objects.append((kind, name, sql_text if isinstance(sql_text, list) else " ".join((sql_text or "").split())))
        objects.sort(key=repr)
        # Content types and permissions by natural key (a removed model's are the expected difference)
        natural = sorted(conn.execute(
            "SELECT ct.app_label, ct.model, p.codename FROM django_content_type ct "
            "LEFT JOIN auth_permission p ON p.content_type_id = ct.id WHERE ct.model <> 'workflowstate'"))
    tables = sqlite_rows(path)
    ids = {"sqlite_sequence", "django_content_type", "auth_permission"}
    return objects, natural, {t: rows for t, rows in tables.items() if t not in skip and t not in ids}


def reset(case, *extra, env=None, timeout=300, backup_dir=None):
    return run_inv("reset", "--project-dir", str(case.project), "--backup-dir", str(backup_dir or case.project.parent / "b"), *extra,
                   env={**case.env, **(env or {})}, timeout=timeout)


def test_full_reset_keeps_every_row_and_leaves_one_fresh_history(seeded):
    # Content types (and what points at them) numbered away from any fresh migrate's order: the
    # ids survive, and a user's permission is still the same permission.
    seeded.damage(["UPDATE django_content_type SET id = id + 1000",
                   "UPDATE auth_permission SET content_type_id = content_type_id + 1000",
                   "UPDATE django_admin_log SET content_type_id = content_type_id + 1000"])
    types = query(seeded, "SELECT id, app_label, model FROM django_content_type ORDER BY id")
    assert types[0][0] > 1000
    if seeded.engine == "sqlite":  # a collation production (PostgreSQL) needs, which SQLite's history leaves be
        add_writer_migration(seeded, "CreateCollation('ci', provider='icu', locale='und-u-ks-level2', deterministic=False)",
                             imports="from django.contrib.postgres.operations import CreateCollation")
    before_rows, rows_before_reset = data_rows(seeded), seeded.rows()
    perms, log = query(seeded, PERMISSIONS), query(seeded, ADMIN_LOG)
    view = query(seeded, "SELECT * FROM system_setting_keys ORDER BY 1")  # made by a RunSQL of the old history
    assert perms and log and len(view) == 5
    seeded.env["REMIGRATE_SQLITE_PARALLEL_FROM"] = "0"  # SQLite: the backup's and the new file's rows read by several processes
    header = ("journal_mode", "user_version", "application_id", "page_size", "auto_vacuum")
    if seeded.engine == "sqlite":  # the file's own settings and the application's marks in its header survive
        with contextlib.closing(sqlite3.connect(seeded.project / "db.sqlite3")) as conn:
            for pragma in ("page_size = 8192", "auto_vacuum = INCREMENTAL", "journal_mode = WAL", "user_version = 7",
                           "application_id = 1234"):
                if pragma.startswith("journal_mode"):
                    conn.execute("VACUUM")  # page size and auto-vacuum change only with a VACUUM outside WAL mode
                conn.execute(f"PRAGMA {pragma}")
    out = reset(seeded, *REMOVE, "--yes", "--check-command", "python manage.py shell -c 'print(\"app-ok\")'")
    if seeded.engine == "sqlite":
        with contextlib.closing(sqlite3.connect(seeded.project / "db.sqlite3")) as conn:
            assert [conn.execute(f"PRAGMA {p}").fetchone()[0] for p in header] == ["wal", 7, 1234, 8192, 2]
    assert out.returncode == 0, out.stdout + out.stderr
    assert "reset done" in out.stdout and "removed (expected)" in out.stdout
    assert "manage.py check --deploy" in out.stdout and "| app-ok" in out.stdout
    # Every row identical in content: the cache table, the retired LegacyFlag's table and (SQLite)
    # the full-text table included, though no model describes them.
    assert data_rows(seeded) == before_rows
    assert len(before_rows["igny8_cache"]) == 4 and len(before_rows["system_legacyflag"]) == 4
    # the plan said what it carries, and from which migration
    assert "0004_reporting_view_and_prompt_search" in out.stdout and "carried: made view system_setting_keys" in out.stdout
    assert "a fresh install from the new history equals one from the old history" in out.stdout
    assert query(seeded, "SELECT * FROM system_setting_keys ORDER BY 1") == view  # the live view is back, same rows
    if seeded.engine == "sqlite":
        assert query(seeded, "SELECT count(*) FROM system_prompt_fts WHERE system_prompt_fts MATCH 'Write'") == [(4,)]
    else:  # the trigger made by a RunPython is back, and on
        seeded.damage(["INSERT INTO system_aiprompt (name, template) VALUES ('  padded  ', 't')"])
        assert query(seeded, "SELECT name FROM system_aiprompt WHERE template = 't'") == [("padded",)]
        seeded.damage(["DELETE FROM system_aiprompt WHERE template = 't'"])
    common = ["--project-dir", str(seeded.project), "--backup-dir", str(seeded.project.parent / "b")]
    if seeded.engine == "sqlite":  # the copy's full read, done while the new file was built, is recorded
        assert "the copy is checked while the new file is built" in out.stdout
        manifest = json.loads(next((seeded.project.parent / "b").glob("*/manifest.json")).read_text())
        assert manifest["dump"]["integrity_check"] == "ok" and "full read of the dump" in manifest["verified"]["checks"]
        listed = run_inv("backups", *common, env=seeded.env).stdout
        assert "ok (sizes match)" in listed and "not recorded" not in listed, listed
    # The check on its own, later. An in-place change keeps every count: only a comparison of
    # content sees it; and (SQLite, which lets one in with foreign keys off) a broken reference the
    # backup did not have.
    key, value = query(seeded, "SELECT key, value FROM system_setting ORDER BY id LIMIT 1")[0]
    damage, repair = [f"UPDATE system_setting SET value = NULL WHERE key = '{key}'"], [
        f"UPDATE system_setting SET value = '{value if isinstance(value, str) else json.dumps(value)}' WHERE key = '{key}'"]
    if seeded.engine == "sqlite":
        (log_id, user_id), = query(seeded, "SELECT id, user_id FROM django_admin_log ORDER BY id LIMIT 1")
        damage.append(f"UPDATE django_admin_log SET user_id = 987654 WHERE id = {log_id}")
        repair.append(f"UPDATE django_admin_log SET user_id = {user_id} WHERE id = {log_id}")
    seeded.damage(damage)
    out = run_inv("verify", *common, env=seeded.env)
    assert out.returncode == 1 and "system_setting: content differs from the backup" in out.stdout, out.stdout
    if seeded.engine == "sqlite":
        assert "broken foreign keys that the backup did not have" in out.stdout, out.stdout
    seeded.damage(repair)
    assert run_inv("verify", *common, env=seeded.env).returncode == 0
    assert query(seeded, "SELECT id, app_label, model FROM django_content_type ORDER BY id") == types
    assert query(seeded, PERMISSIONS) == perms  # a user's permission is still the same permission
    assert query(seeded, ADMIN_LOG) == log  # admin log entries still point at the same objects
    names = {"sqlite": "SELECT name FROM sqlite_master WHERE name = 'igny8_site_blueprint_workflow_states'",
             "postgresql": "SELECT tablename FROM pg_tables WHERE tablename = 'igny8_site_blueprint_workflow_states'"}
    assert query(seeded, names[seeded.engine]) == []
    if seeded.engine == "sqlite":  # kept for production, in the first app's first migration (nothing here)
        firsts = [f for f in seeded.project.glob("igny8_core/**/migrations/0001_initial.py") if "CreateCollation(" in f.read_text()]
        assert [f.parent.parent.name for f in firsts] == ["auth"] and "name='ci'" in firsts[0].read_text()
    for folder in OWN_MIGRATION_DIRS:
        files = sorted(p.name for p in (seeded.project / folder / "migrations").glob("*.py"))
        assert "__init__.py" in files and files[0] == "0001_initial.py", (folder, files)
        # a cycle may add a 0002_initial; what the old history made beyond the models is carried over
        assert all(f.endswith(("_initial.py", "_remigrate_carried.py")) for f in files if f != "__init__.py"), files
    carried = seeded.project / "igny8_core/modules/system/migrations/0002_remigrate_carried.py"
    assert carried.exists() and carried.with_suffix(".json").exists()
    # A fresh install from the new history has the rows the old history seeded from its CSV file.
    fresh = seeded.project.parent / "fresh.sqlite3"
    manage(seeded.project, {"DB_PATH": str(fresh)}, "migrate", "-v0")
    with sqlite3.connect(fresh) as conn:
        seeded_keys = sorted(r[0] for r in conn.execute("SELECT key FROM system_setting"))
    assert seeded_keys == ["site.language", "site.timezone", "writer.max_words"]
    with sqlite3.connect(fresh) as conn:  # a PostgreSQL reset measures the old history on SQLite too
        assert conn.execute("SELECT count(*) FROM system_setting_keys").fetchone() == (3,)
    if seeded.engine == "sqlite":  # and equals a fresh install from the old history, object for object
        old_copy = seeded.project.parent / "old-history"
        shutil.copytree(SAMPLE, old_copy, ignore=shutil.ignore_patterns("__pycache__", "*.sqlite3"))
        old_fresh = seeded.project.parent / "old-fresh.sqlite3"
        manage(old_copy, {"DB_PATH": str(old_fresh)}, "migrate", "-v0")
        removed = {WF_TABLE, "django_migrations"}
        assert fresh_install(old_fresh, removed) == fresh_install(fresh, removed)
    assert (seeded.project / "igny8_core/modules/system/migrations/default_settings.csv").exists()
    assert manage(seeded.project, seeded.env, "makemigrations", "--check", "--dry-run")
    applied = query(seeded, "SELECT app, name FROM django_migrations WHERE app = 'site_building'")
    assert applied == [("site_building", "0001_initial")]
    # New rows get ids above every id ever used, also for the model renamed in the old history.
    code = ("from igny8_core.modules.planner.models import Keyword, ContentIdea, Cluster;"
            "c = Cluster.objects.first();"
            "print(Keyword.objects.create(phrase='new').id, ContentIdea.objects.create(cluster=c, title='new').id)")
    new_keyword, new_idea = map(int, manage(seeded.project, seeded.env, "shell", "--verbosity=0", "-c", code).split())
    assert new_keyword == 61 and new_idea == 21
    report = json.loads(next((seeded.project.parent / "b").glob("*/report.json")).read_text())
    assert report["status"] == "ok" and not report["problems"]
    out = run_inv("verify", *common, env=seeded.env)  # the new rows above are differences now
    assert out.returncode == 1 and "planner_keyword: 48 rows before, 49 after" in out.stdout
    # Days later, `inv restore` of the backup the reset took puts the old database back, though
    # the new history named keys, indexes and sequences otherwise (the renamed model's)
    (bundle,) = [p.parent for p in (seeded.project.parent / "b").glob("*/manifest.json")]
    out = run_inv("restore", *common, "--backup", bundle.name, "--yes", "--no-safety-backup", env=seeded.env)
    assert out.returncode == 0 and "content matches" in out.stdout, out.stdout + out.stderr
    assert seeded.rows() == rows_before_reset


def test_dry_run_changes_nothing(seeded):
    before_rows, files = seeded.rows(), tree_digest(seeded.project)
    db_file = seeded.project / "db.sqlite3"
    file_hash = hashlib.sha256(db_file.read_bytes()).hexdigest() if seeded.engine == "sqlite" else None
    settings = seeded.project / "igny8_core" / "settings.py"  # a second database, and a replica alias of the first
    settings.write_text(settings.read_text() + '\nDATABASES["archive"] = {"ENGINE": "django.db.backends.sqlite3", '
                        '"NAME": "/nonexistent/archive.sqlite3"}\nDATABASES["replica"] = dict(DATABASES["default"])\n')
    out = reset(seeded, *REMOVE, "--dry-run")
    assert out.returncode == 0, out.stderr
    assert "dry run: nothing was changed" in out.stdout
    assert "the settings name other databases (archive): only 'default' is reset" in out.stdout, out.stdout
    assert "site_building.WorkflowState" in out.stdout and "RunPython" in out.stdout
    assert seeded.rows() == before_rows and tree_digest(seeded.project) == files
    assert not (seeded.project.parent / "b").exists() or not bundles_in(seeded.project.parent / "b")
    if file_hash:  # the SQLite file byte for byte
        assert hashlib.sha256(db_file.read_bytes()).hexdigest() == file_hash


def test_a_table_with_rows_but_no_model_is_refused_before_anything(seeded):
    before_rows, files = seeded.rows(), tree_digest(seeded.project)
    out = reset(seeded, "--yes")
    assert out.returncode == 1
    assert "igny8_site_blueprint_workflow_states" in out.stderr and "--drop-table" in out.stderr
    assert seeded.rows() == before_rows and tree_digest(seeded.project) == files
    assert not (seeded.project.parent / "b").exists() or not bundles_in(seeded.project.parent / "b")


def test_pending_schema_changes_block_the_reset(seeded):
    models = seeded.project / "igny8_core/modules/billing/models.py"
    models.write_text(models.read_text().replace("is_active = models.BooleanField(default=True)",
                                                 "is_active = models.BooleanField(default=True)\n    tier = models.IntegerField(default=1)"))
    files = tree_digest(seeded.project)
    out = reset(seeded, *REMOVE, "--yes")
    assert out.returncode == 1
    assert "billing: Add field tier to plan" in out.stdout and "no migration holds yet" in out.stderr
    assert tree_digest(seeded.project) == files


def modes(project):
    return {p: (project / p).stat().st_mode & 0o7777 for p in tree_digest(project)}


def test_failure_after_the_rebuild_rolls_back_database_and_files(seeded):
    """(PostgreSQL: its public schema a superuser's, as after pg_upgrade from PostgreSQL 14 or
    older: the rollback restores into a new database all the same.)"""
    if seeded.engine == "postgresql":
        with psycopg_admin(seeded.pg_db.cluster, seeded.pg_db.name) as conn:
            conn.execute(sql.SQL("ALTER SCHEMA public OWNER TO {}").format(sql.Identifier(SUPERUSER)))
    shared = seeded.project / "igny8_core/modules/system/migrations/0002_seed_settings.py"
    shared.chmod(0o664)  # group-writable, as in a shared checkout: the rollback keeps it so
    before_all, files, before_modes = seeded.rows(), tree_digest(seeded.project), modes(seeded.project)
    out = reset(seeded, *REMOVE, "--yes", env={"REMIGRATE_FAULT": "fail:content-types"})
    assert out.returncode == 1
    assert "injected failure" in out.stderr
    # PostgreSQL rebuilt the live database, so it is rolled back; SQLite built a file beside it
    assert ("rolled back" if seeded.engine == "postgresql" else "the database was never changed") in out.stderr
    assert "ok  content types" not in out.stdout  # a failed phase is never reported as ok
    assert tree_digest(seeded.project) == files and modes(seeded.project) == before_modes
    assert seeded.rows() == before_all
    journal = json.loads(next((seeded.project.parent / "b").glob("*/journal.json")).read_text())
    assert journal["status"] == "rolled-back" and journal["phase"] == "content-types"


def kill_reset_at(case, phase):
    """Start a reset, kill -9 it (with its children) once its journal reaches `phase`."""
    env = {**os.environ, **case.env, "REMIGRATE_FAULT": f"pause:{phase}"}
    proc = subprocess.Popen([PYTHON, "-m", "invoke", "reset", "--project-dir", str(case.project), "--backup-dir",
                             str(case.project.parent / "b"), *REMOVE, "--yes"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found = list((case.project.parent / "b").glob("*/journal.json"))
        if found and json.loads(found[0].read_text()).get("phase") == phase:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return found[0]
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail(f"the reset never reached phase {phase}")


def test_kill_during_the_load_then_rollback_puts_everything_back(sqlite_case):
    """(PostgreSQL: killed between drop and create in test_faults, the connection dropped during
    the load, then rolled back, in test_remote.)"""
    seeded = sqlite_case
    before_all, files = seeded.rows(), tree_digest(seeded.project)
    journal = kill_reset_at(seeded, "load")
    assert tree_digest(seeded.project) != files  # the run died half-way
    listing = run_inv("backups", "--project-dir", str(seeded.project), "--backup-dir", str(seeded.project.parent / "b"),
                      env=seeded.env)
    assert "unfinished: --resume or rollback" in listing.stdout
    again = reset(seeded, *REMOVE, "--yes")
    assert again.returncode == 1 and "inv rollback" in again.stderr
    out = run_inv("rollback", "--project-dir", str(seeded.project), "--backup-dir", str(seeded.project.parent / "b"), "--yes", env=seeded.env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert tree_digest(seeded.project) == files
    assert seeded.rows() == before_all
    assert json.loads(journal.read_text())["status"] == "rolled-back"
    assert sorted(p.name for p in seeded.project.glob("db.sqlite3*")) == ["db.sqlite3"]  # nothing built beside is left


@pytest.mark.parametrize("engine, phase", [("sqlite", "regenerate-migrations"), ("sqlite", "swap"),
                                           ("postgresql", "swap")])
def test_a_killed_reset_can_be_resumed_to_the_end(request, project, engine, phase):
    """Resumed from before the database is touched, and from the swap of the rebuilt one."""
    seeded = engine_case(request, project, engine)
    before = data_rows(seeded)
    journal = kill_reset_at(seeded, phase)
    out = run_inv("reset", "--resume", "--project-dir", str(seeded.project), "--backup-dir", str(seeded.project.parent / "b"),
                  "--yes", env=seeded.env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Resuming" in out.stdout and "reset done" in out.stdout
    assert data_rows(seeded) == before
    assert json.loads(journal.read_text())["status"] == "done"
    files = sorted(p.name for p in (seeded.project / "igny8_core/business/site_building/migrations").glob("0*.py"))
    assert files == ["0001_initial.py"]


def test_a_dump_that_fails_verification_stops_the_reset_before_anything(pg_case, tmp_path):
    """PostgreSQL drops the live database right after its backup: the dump is read back in full
    first. (SQLite reads its copy while the new file is built: test_faults' damaged-copy test.)"""
    before_all, files = pg_case.rows(), tree_digest(pg_case.project)
    shims = tmp_path / "shims"
    shims.mkdir()
    real = subprocess.run(["sh", "-c", "command -v pg_restore"], capture_output=True, text=True).stdout.strip()
    (shims / "pg_restore").write_text(
        f'#!/bin/sh\ncase "$*" in *--file=/dev/null*) echo "pg_restore: error: could not read input file: end of file" >&2; exit 1;; esac\nexec {real} "$@"\n')
    (shims / "pg_restore").chmod(0o755)
    out = reset(pg_case, *REMOVE, "--yes", env={"PATH": f"{shims}:{os.environ['PATH']}"})
    assert out.returncode == 1, out.stdout
    assert "reading the whole backup failed" in out.stderr, out.stderr
    assert pg_case.rows() == before_all and tree_digest(pg_case.project) == files
    assert not bundles_in(pg_case.project.parent / "b")  # no bundle that looks valid


def add_writer_migration(case, operation, imports=""):
    """A migration 0003 in the writer app with one operation, applied to the live database."""
    (case.project / "igny8_core/modules/writer/migrations/0003_extra.py").write_text(
        f"from django.db import migrations\n{imports}\n\n"
        "class Migration(migrations.Migration):\n"
        "    dependencies = [('writer', '0002_content_word_count_and_more')]\n"
        f"    operations = [{operation}]\n")
    manage(case.project, case.env, "migrate", "-v0")


def scratch_databases(case):
    if case.engine == "sqlite":
        return []
    with psycopg_admin(case.pg_db.cluster) as conn:
        return [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE '%\\_\\_remigrate\\_%'")]


def test_an_old_history_that_no_longer_applies_to_an_empty_database_is_refused_and_leaves_no_scratch(seeded):
    """The scratch builds of the old and the new history run at once: when the old one fails (a
    data migration that needs rows only the live database has), the plan says so in one line,
    the builds that ran beside it are waited for and their scratch databases are gone."""
    add_writer_migration(seeded, "migrations.RunPython(needs_content, migrations.RunPython.noop)",
                         "\n\ndef needs_content(apps, schema_editor):\n"
                         "    if not apps.get_model('writer', 'Content').objects.exists():\n"
                         "        raise RuntimeError('there is no content to number')\n")
    before = data_rows(seeded)
    out = reset(seeded, *REMOVE, "--yes")
    assert out.returncode != 0
    error = out.stderr.strip().splitlines()[-1]
    assert "the old migration history does not apply to an empty database" in error, out.stderr
    assert "there is no content to number" in error and "Traceback" not in out.stderr
    assert scratch_databases(seeded) == []
    assert data_rows(seeded) == before and not (seeded.project.parent / "b").exists()


def test_an_old_history_that_does_not_apply_on_sqlite_is_said_and_the_postgresql_proof_still_made(pg_case):
    """Beside a PostgreSQL reset the old history is measured on SQLite too; a migration written
    for PostgreSQL only (no vendor check) makes that measure fail, which the plan notes; the
    proof on PostgreSQL is made all the same and the reset goes through."""
    add_writer_migration(pg_case, "migrations.RunSQL('CREATE INDEX writer_title_lower ON writer_content (lower(title)) "
                                  "WITH (fillfactor = 80)', 'DROP INDEX writer_title_lower')")
    out = reset(pg_case, *REMOVE, "--dry-run")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "note       the old history was not measured on SQLite (the old migration history does not apply to an " \
           "empty database on sqlite" in out.stdout
    assert "a fresh install from the new history equals one from the old history" in out.stdout
    assert "carried: made index writer_content btree (lower((title)::text))" in out.stdout
    assert "schema objects: " in out.stdout and "index writer_title_lower" in out.stdout
    assert scratch_databases(pg_case) == []


def test_a_sequence_made_by_hand_that_the_role_cannot_read_is_named_by_the_plan(pg_case):
    """A sequence another role made (a DBA's), which the application may use but not read: the
    plan names it as only in the live database, instead of failing to read it."""
    with psycopg_admin(pg_case.pg_db.cluster, pg_case.pg_db.name) as conn:
        conn.execute("CREATE SEQUENCE dba_seq")
        conn.execute(sql.SQL("GRANT USAGE ON SEQUENCE dba_seq TO {}").format(sql.Identifier(pg_case.pg_db.role)))
    out = reset(pg_case, *REMOVE, "--dry-run")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "- sequence dba_seq: only in the live database" in out.stdout, out.stdout[-2000:] + out.stderr
    assert "nothing was changed" in out.stderr and "permission denied" not in out.stderr, out.stderr


def test_what_the_role_could_not_make_again_stops_a_rebuild_in_its_plan(pg_case):
    """What lives in the database and belongs to another role: ALTER DEFAULT PRIVILEGES FOR ROLE
    another (a deploy role's rule), and a privilege granted by a role that is not the table's
    owner (WITH GRANT OPTION: only a superuser can give it again as that role, in a new
    database or a restore of the backup, which a rollback is). The plan says so, with the ways
    out, before anything is touched."""
    deployer, lead, rep, keeper = (f"{r}_{pg_case.pg_db.name}" for r in ("deployer", "lead", "rep", "keeper"))
    with psycopg_admin(pg_case.pg_db.cluster, pg_case.pg_db.name) as conn:
        for role in (deployer, lead, rep, keeper):
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
        conn.execute(sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} GRANT SELECT ON TABLES TO {}").format(
            sql.Identifier(deployer), sql.Identifier(pg_case.pg_db.role)))
        # a view the deploy role owns (the app's role could not give it back), and one a role it
        # may act for owns but that may not create objects in public (ALTER ... OWNER TO needs it)
        for view, owner in (("deploy_view", deployer), ("kept_view", keeper), ("admin_view", SUPERUSER)):
            conn.execute(sql.SQL("CREATE VIEW {} AS SELECT 1 AS one").format(sql.Identifier(view)))
            conn.execute(sql.SQL("ALTER VIEW {} OWNER TO {}").format(sql.Identifier(view), sql.Identifier(owner)))
        conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(keeper), sql.Identifier(pg_case.pg_db.role)))
    pg_case.damage([f'GRANT SELECT ON planner_keyword TO "{lead}" WITH GRANT OPTION'])
    with psycopg_admin(pg_case.pg_db.cluster, pg_case.pg_db.name) as conn:
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(lead)))
        conn.execute(sql.SQL("GRANT SELECT ON planner_keyword TO {}").format(sql.Identifier(rep)))
    before = data_rows(pg_case)
    out = reset(pg_case, *REMOVE, "--strategy", "swap", "--yes")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "cannot make again in a new database, nor restore from its backup" in out.stderr, out.stderr
    assert f"default privileges (ALTER DEFAULT PRIVILEGES FOR ROLE) of {deployer}" in out.stderr, out.stderr
    assert f"(WITH GRANT OPTION) by {lead}" in out.stderr and "--strategy fake" in out.stderr, out.stderr
    assert f"tables, views, sequences, functions, types or collations owned by {deployer} (GRANT {deployer} TO " \
        f"{pg_case.pg_db.role} for the reset's length);" in out.stderr, out.stderr
    assert f"what a superuser owns: view public.admin_view ({SUPERUSER}) (a superuser gives each to {pg_case.pg_db.role} " \
        "first" in out.stderr, out.stderr
    assert f"only by a GRANT (a restore gives owners before privileges), owned by {deployer}, {keeper} (only a " \
        "superuser could give them back);" in out.stderr, out.stderr
    assert "nothing was changed" in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert data_rows(pg_case) == before and scratch_databases(pg_case) == []
    assert not (pg_case.project.parent / "b").exists() or not bundles_in(pg_case.project.parent / "b")
    with psycopg_admin(pg_case.pg_db.cluster, pg_case.pg_db.name) as conn:
        for role in (deployer, lead, rep, keeper):
            conn.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_what_a_new_database_could_not_have_again_stops_a_rebuild_in_its_plan(pg_case):
    """A comment made by hand on a renamed model's index, which the new history names otherwise
    (a new database could not find it again: the verification would fail after the drop), and a
    domain's constraint left NOT VALID (a rollback's restore into a new database cannot make it
    again): refused before anything changes, with the way out; a fake keeps both as they are."""
    pg_case.damage(["COMMENT ON INDEX planner_idea_cluster_id_f03e886c IS 'by cluster'"])
    out = reset(pg_case, *REMOVE, "--dry-run")
    assert out.returncode == 1, out.stdout + out.stderr
    assert ("the comment on index planner_idea_cluster_id_f03e886c of planner_contentidea would not come back: the new "
            "history names it planner_contentidea_cluster_id_503a14dc") in out.stderr, out.stderr
    assert reset(pg_case, *REMOVE, "--strategy", "fake", "--dry-run").returncode == 0
    pg_case.damage(["COMMENT ON INDEX planner_idea_cluster_id_f03e886c IS NULL"])
    add_writer_migration(pg_case, "migrations.RunSQL('CREATE DOMAIN pos AS integer; ALTER DOMAIN pos ADD CONSTRAINT "
                                  "positive CHECK (VALUE > 0) NOT VALID')")
    out = reset(pg_case, *REMOVE, "--strategy", "swap", "--dry-run")
    assert out.returncode == 1 and "domain pos has a constraint left NOT VALID" in out.stderr, out.stdout + out.stderr
    assert reset(pg_case, *REMOVE, "--strategy", "fake", "--dry-run").returncode == 0


def test_a_project_whose_start_up_leaves_threads_running_is_proven_all_the_same(pg_case):
    """A project that starts a thread in its settings cannot be forked after its start-up: each
    step then runs in a process of its own, and the SQLite install of the carried migration,
    which the new history's build would fork, runs in that process once the build is done."""
    settings = pg_case.project / "igny8_core/settings.py"
    settings.write_text(settings.read_text() + "\nimport threading, time\n"
                        "threading.Thread(target=time.sleep, args=(600,), daemon=True).start()\n")
    before = data_rows(pg_case)
    out = reset(pg_case, *REMOVE, "--yes")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "a fresh install from the new history equals one from the old history" in out.stdout
    assert "SQLite histories built in" in out.stdout and "note       the old history was not measured" not in out.stdout
    assert scratch_databases(pg_case) == [] and data_rows(pg_case) == before
    fresh = pg_case.project.parent / "fresh.sqlite3"  # the carried migration knows what to make on SQLite too
    manage(pg_case.project, {"DB_PATH": str(fresh)}, "migrate", "-v0")
    with sqlite3.connect(fresh) as conn:
        assert conn.execute("SELECT count(*) FROM system_setting_keys").fetchone()[0] > 0


def test_a_second_reset_while_one_runs_is_refused(seeded):
    env = {**os.environ, **seeded.env, "REMIGRATE_FAULT": "pause:remove-models"}
    proc = subprocess.Popen([PYTHON, "-m", "invoke", "reset", "--project-dir", str(seeded.project), "--backup-dir",
                             str(seeded.project.parent / "b"), *REMOVE, "--yes"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not list((seeded.project.parent / "b").glob("*/journal.json")):
            time.sleep(0.2)
        # One lock per database, wherever the backups go: another --backup-dir is no way around it.
        out = reset(seeded, *REMOVE, "--yes", backup_dir=seeded.project.parent / "other-folder")
        assert out.returncode == 1 and "is running" in out.stderr, out.stderr
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_postgres_role_without_createdb_is_refused_before_anything(project, pg, seeded_pg_template):
    from conftest import PgDb, pg_copy

    db = PgDb(pg, "nocreatedb", "app_nocreatedb", "pw-no-createdb")
    pg.create_app_database(db.name, db.role, db.password, createdb=False)
    try:
        pg_copy(db, seeded_pg_template)
        out = run_inv("reset", "--project-dir", str(project), "--backup-dir", str(project.parent / "b"), *REMOVE, "--yes", env=db.env())
        assert out.returncode == 1 and "CREATEDB" in out.stderr
        assert not (project.parent / "b").exists() or not bundles_in(project.parent / "b")
        # backup and restore need no CREATEDB: the restore works inside the existing database
        before = pg_rows(db)
        common = ["--project-dir", str(project), "--backup-dir", str(project.parent / "b")]
        assert run_inv("backup", *common, env=db.env()).returncode == 0
        with db.connect() as conn:
            conn.execute("DELETE FROM planner_keyword")
        out = run_inv("restore", *common, "--yes", env=db.env())
        assert out.returncode == 0, out.stdout + out.stderr
        assert pg_rows(db) == before
    finally:
        pg.drop_app_database(db.name, db.role)


@pytest.fixture
def small_disk(tmp_path):
    """A 100 MiB filesystem of its own (tmpfs), so that it can be filled without harm."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=100m", "tmpfs", str(mount)]).returncode:
        pytest.skip("mounting a tmpfs needs root")
    yield mount
    subprocess.run(["umount", "-l", str(mount)])


def test_disk_full_while_backing_up_touches_nothing_and_leaves_no_bundle(seeded, small_disk):
    before_all, files = seeded.rows(), tree_digest(seeded.project)
    backups = small_disk / "b"
    env = {**os.environ, **seeded.env, "REMIGRATE_FAULT": "pause:backup-dump:4"}
    proc = subprocess.Popen([PYTHON, "-m", "invoke", "reset", "--project-dir", str(seeded.project), "--backup-dir", str(backups),
                             *REMOVE, "--yes"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(backups.glob(".*.partial")):
        time.sleep(0.05)
    assert list(backups.glob(".*.partial")), "the backup never started"
    filler = small_disk / "filler"
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1M"], capture_output=True)  # until the disk is full
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, out
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and ("full" in lines[0] or "No space" in lines[0]), err
    assert not [p for p in backups.iterdir()], list(backups.iterdir())  # no bundle, not even a partial one
    assert seeded.rows() == before_all and tree_digest(seeded.project) == files
    filler.unlink()


def test_a_disk_too_small_for_the_backup_is_refused_at_preflight(seeded, small_disk):
    (small_disk / "filler").write_bytes(b"\0" * (40 * 1024 * 1024))
    out = reset(seeded, *REMOVE, "--yes", backup_dir=small_disk / "b")
    assert out.returncode == 1 and "not enough free space" in out.stderr


TRIGGER_APP = '''
from django.apps import AppConfig
from django.db.models.signals import post_migrate


def add_trigger(sender, using, **kwargs):
    from django.db import connections

    conn = connections[using]
    with conn.cursor() as cursor:
        if conn.vendor == "postgresql":
            cursor.execute("CREATE OR REPLACE FUNCTION writer_stamp() RETURNS trigger LANGUAGE plpgsql AS "
                           "$$ BEGIN NEW.word_count := -1; RETURN NEW; END $$")
            cursor.execute("DROP TRIGGER IF EXISTS writer_stamp ON writer_content")
            cursor.execute("CREATE TRIGGER writer_stamp BEFORE INSERT ON writer_content FOR EACH ROW EXECUTE FUNCTION writer_stamp()")
        else:
            cursor.execute("CREATE TRIGGER IF NOT EXISTS writer_stamp AFTER INSERT ON writer_content "
                           "BEGIN UPDATE writer_content SET word_count = -1 WHERE id = NEW.id; END")


class WriterConfig(AppConfig):
    name = "igny8_core.modules.writer"
    label = "writer"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        post_migrate.connect(add_trigger, sender=self)
'''


def test_user_triggers_of_the_new_schema_do_not_fire_on_the_old_rows_and_work_afterwards(seeded):
    (seeded.project / "igny8_core/modules/writer/apps.py").write_text(TRIGGER_APP)
    manage(seeded.project, seeded.env, "migrate", "-v0")  # the live database gets the trigger too
    before = data_rows(seeded)
    out = reset(seeded, "--drop-table", WF_TABLE, "--yes")  # a table named to drop, instead of a model
    assert out.returncode == 0, out.stdout + out.stderr
    assert data_rows(seeded) == before  # no word_count turned into -1 during the load
    code = ("from igny8_core.modules.writer.models import Content;"
            "c = Content.objects.create(title='t', body='b');"
            "print(Content.objects.get(pk=c.pk).word_count)")
    assert manage(seeded.project, seeded.env, "shell", "--verbosity=0", "-c", code).strip() == "-1"  # and it is back on


def test_history_modes_tell_old_files_from_a_deployed_new_history():
    from tasks.console import RemigrateError
    from tasks.reset import history_mode

    old = [{"label": "shop", "migration_files": ["0001_initial.py", "0002_price.py"]}]
    new = [{"label": "shop", "migration_files": ["0001_initial.py"]}]
    odd = [{"label": "shop", "migration_files": ["0001_initial.py", "0002_other.py"]}]
    applied = [["shop", "0001_initial"], ["shop", "0002_price"], ["auth", "0001_initial"]]
    assert history_mode(old, applied) == "regenerate"
    assert history_mode(new, applied) == "deployed"
    # what a reset leaves plus a migration written by hand later: the probe says it starts initial
    later = [{"label": "shop", "migration_files": ["0001_initial.py", "0002_remigrate_carried.py", "0003_price.py"],
              "starts_initial": True}]
    assert history_mode(later, applied) == "deployed"
    with pytest.raises(RemigrateError, match="neither"):
        history_mode(odd, applied)


def test_a_failing_check_command_after_the_load_rolls_everything_back(sqlite_case):
    """(A failure after the rebuild on PostgreSQL: test_failure_after_the_rebuild_rolls_back.)"""
    seeded = sqlite_case
    before_rows, files = seeded.rows(), tree_digest(seeded.project)
    out = reset(seeded, *REMOVE, "--yes", "--check-command", "echo 'smoke test: 1 failed' >&2; exit 4")
    assert out.returncode == 1
    assert "--check-command" in out.stderr and "exit 4" in out.stderr and "rolled back" in out.stderr
    assert "| smoke test: 1 failed" in out.stdout  # the user sees the command's own output
    assert seeded.rows() == before_rows and tree_digest(seeded.project) == files


def test_drop_table_of_a_table_a_model_uses_is_refused_in_the_plan(seeded):
    before_rows = seeded.rows()
    out = reset(seeded, *REMOVE, "--drop-table", "planner_keyword", "--dry-run")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "--drop-table planner_keyword: a model of the code uses this table" in out.stderr
    assert seeded.rows() == before_rows
