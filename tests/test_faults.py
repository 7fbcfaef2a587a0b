"""Faults and concurrency: rollback bound to the exact run and database, writes during a reset,
killed runs, signals, damaged bundles. Real SQLite files and a real PostgreSQL server."""
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from conftest import PYTHON, REPO, SAMPLE, manage, run_inv, sqlite_copy
from servers import SUPERUSER, psycopg_admin
from test_reset import REMOVE, add_writer_migration, data_rows, query, reset, tree_digest

NEW_SETTING = "INSERT INTO system_setting (key, value) VALUES ('written.during.reset', '\"kept\"')"


def common(case, backup_dir=None):
    return ["--project-dir", str(case.project), "--backup-dir", str(backup_dir or case.project.parent / "b")]


def start_reset(case, fault, backup_dir=None, remove=True, extra=()):
    env = {**os.environ, **case.env, "REMIGRATE_FAULT": fault}
    return subprocess.Popen([PYTHON, "-m", "invoke", "reset", *common(case, backup_dir), *(REMOVE if remove else []), "--yes",
                             *extra],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def wait_for(predicate, what, proc=None, seconds=120):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the run ended before {what}:\n{out[-3000:]}\n{err[-2000:]}")
        time.sleep(0.2)
    pytest.fail(f"never saw {what}")


def journal_phase(case, phase):
    def reached():
        found = list((case.project.parent / "b").glob("*/journal.json"))
        return bool(found) and json.loads(found[0].read_text()).get("phase") == phase
    return reached


def test_a_reset_killed_during_its_backup_leaves_nothing_to_roll_back(sqlite_case):
    """The newest bundle in the folder is an earlier, finished reset: rolling back to it would
    lose every row written since. The interrupted run never touched anything, and says so.
    (The bundle chosen does not depend on the engine; one engine proves it end to end.)"""
    seeded = sqlite_case
    first = reset(seeded, *REMOVE, "--yes")
    assert first.returncode == 0, first.stdout + first.stderr
    seeded.damage([NEW_SETTING])
    before, files = seeded.rows(), tree_digest(seeded.project)
    proc = start_reset(seeded, "pause:backup-dump", remove=False)  # a second reset, of the new history
    wait_for(lambda: list((seeded.project.parent / "b").glob(".*.partial")), "the backup under way", proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    out = run_inv("rollback", *common(seeded), "--yes", env=seeded.env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "never touched the database" in out.stdout and "nothing to roll back" in out.stdout
    assert seeded.rows() == before and tree_digest(seeded.project) == files
    again = reset(seeded, "--dry-run")  # and the lock is gone
    assert again.returncode == 0, again.stderr


def test_two_projects_sharing_a_backup_folder_each_roll_back_their_own(sqlite_case, tmp_path, request):
    """Which bundle belongs to which project and database is engine-blind (its unit test:
    test_bundle.py); one engine proves it end to end."""
    seeded, shared = sqlite_case, tmp_path / "shared-backups"
    other = tmp_path / "second" / "igny8"
    shutil.copytree(SAMPLE, other, ignore=shutil.ignore_patterns("__pycache__", "*.sqlite3", ".env", ".remigrate"))
    other_env = sqlite_copy(other, request.getfixturevalue("seeded_sqlite_file"))
    out = reset(seeded, *REMOVE, "--yes", backup_dir=shared)
    assert out.returncode == 0, out.stdout + out.stderr
    seeded.damage([NEW_SETTING])  # project A changes after its reset
    a_rows, a_files = seeded.rows(), tree_digest(seeded.project)
    manage(other, other_env, "shell", "-c", "from igny8_core.modules.system.models import Setting; "
                                            "Setting.objects.create(key='b.only', value=1)")
    out = run_inv("reset", "--project-dir", str(other), "--backup-dir", str(shared), *REMOVE, "--yes", env=other_env)
    assert out.returncode == 0, out.stdout + out.stderr  # B's reset is now the newest bundle in the folder
    keys = [json.loads(m.read_text())["identity"]["key"] for m in shared.glob("*/manifest.json")]
    assert len(keys) == 2 and len(set(keys)) == 2
    out = run_inv("rollback", *common(seeded, shared), "--yes", env=seeded.env)
    assert out.returncode == 0, out.stdout + out.stderr
    settings = {k for (k,) in query(seeded, "SELECT key FROM system_setting")}
    assert "b.only" not in settings and "written.during.reset" not in settings  # A's own state before its reset
    assert query(seeded, "SELECT count(*) FROM igny8_site_blueprint_workflow_states") == [(10,)]
    assert seeded.rows() != a_rows and tree_digest(seeded.project) != a_files  # the old history is back
    # restore's default is A's own newest bundle too, never B's newer one
    out = run_inv("restore", *common(seeded, shared), "--yes", "--no-safety-backup", env=seeded.env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "b.only" not in {k for (k,) in query(seeded, "SELECT key FROM system_setting")}


def test_a_write_during_the_reset_stops_it_and_is_kept(pg_case):
    """(SQLite: the swap's write test in test_strategies, which reaches the same check.)"""
    seeded, phase = pg_case, "regenerate-migrations"
    before_files = tree_digest(seeded.project)
    proc = start_reset(seeded, f"pause:{phase}:8")
    wait_for(journal_phase(seeded, phase), f"phase {phase}", proc)
    seeded.damage([NEW_SETTING])  # the application commits a row after the backup
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, out + err
    assert "changed system_setting" in err and "database was never changed" in err, err
    assert query(seeded, "SELECT value FROM system_setting WHERE key = 'written.during.reset'")  # the row is there
    assert tree_digest(seeded.project) == before_files
    # and the database takes sessions again
    assert query(seeded, "SELECT datallowconn FROM pg_database WHERE datname = current_database()") == [(True,)]


def handed_out_and_deleted(case):
    """The application adds a row and deletes it (the content as it was); the id it was given."""
    given = query(case, "INSERT INTO system_setting (key, value) VALUES ('brief', '1') RETURNING id")[0][0]
    case.damage(["DELETE FROM system_setting WHERE key = 'brief'"])
    return given


def test_sigterm_during_the_load_rolls_back_like_ctrl_c(sqlite_case):
    """(PostgreSQL's signal tests: the probe-step ones below.)"""
    seeded = sqlite_case
    before, files = seeded.rows(), tree_digest(seeded.project)
    proc = start_reset(seeded, "pause:load:60")
    wait_for(journal_phase(seeded, "load"), "phase load", proc)
    os.kill(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode != 0
    assert "Rolling back" in out and "SIGTERM" in out + err, out + err
    assert seeded.rows() == before and tree_digest(seeded.project) == files


def forge(manifest_path, change):
    data = json.loads(manifest_path.read_text())
    change(data)
    manifest_path.write_text(json.dumps(data))


@pytest.mark.parametrize("damage, expect", [
    (lambda m: m.update(files={}), "the manifest lists no files"),
    (lambda m: m["database"]["tables"].update(planner_keyword=1), "checksum mismatch"),
    (lambda m: m.pop("checksum"), "has no checksum"),
])
def test_a_damaged_manifest_is_refused_before_anything_and_listed_as_damaged(sqlite_project, tmp_path, damage, expect):
    project, env = sqlite_project
    args = ["--project-dir", str(project), "--backup-dir", str(tmp_path / "b")]
    assert run_inv("backup", *args, env=env).returncode == 0
    manifest = next((tmp_path / "b").glob("*/manifest.json"))
    forge(manifest, damage)
    db = project / "db.sqlite3"
    before = db.read_bytes()
    out = run_inv("restore", *args, "--yes", "--no-safety-backup", env=env)
    assert out.returncode == 1 and expect in out.stderr, out.stderr
    assert db.read_bytes() == before
    listing = run_inv("backups", *args, env=env)
    assert "DAMAGED" in listing.stdout and expect in listing.stdout and "safe to delete" not in listing.stdout


def test_backups_tells_a_truncated_or_bit_flipped_dump_from_a_good_one(sqlite_project, tmp_path):
    project, env = sqlite_project
    args = ["--project-dir", str(project), "--backup-dir", str(tmp_path / "b")]
    for _ in range(3):
        assert run_inv("backup", *args, env=env).returncode == 0
        time.sleep(1.1)  # names are per second
    good, truncated, flipped = sorted((tmp_path / "b").glob("*/db.sqlite3"))
    truncated.write_bytes(truncated.read_bytes()[:4096])
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0xFF
    flipped.write_bytes(bytes(data))
    quick = run_inv("backups", *args, env=env).stdout
    assert "has 4096 bytes" in quick and quick.count("ok (sizes match)") == 2  # a flipped bit keeps the size
    deep = run_inv("backups", *args, "--check", env=env).stdout
    assert deep.count("verified now") == 1 and deep.count("DAMAGED") == 2, deep


def damage_indexes(path):
    """Zero every index's root page of a SQLite file: its tables still read, its integrity_check fails."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        size = conn.execute("PRAGMA page_size").fetchone()[0]
        roots = [r for (r,) in conn.execute("SELECT rootpage FROM sqlite_master WHERE type = 'index' AND rootpage > 0")]
    data = bytearray(Path(path).read_bytes())
    for root in roots:
        data[(root - 1) * size:root * size] = bytes(size)
    Path(path).write_bytes(bytes(data))


def stale_index(path):
    """A SQLite file whose index on site_building_pageblueprint.slug misses a row's new value (the
    row changed while SQLite did not know the index): every query reads, quick_check passes,
    integrity_check fails."""
    index = "site_building_pageblueprint_slug_56c3b17e"
    conn = sqlite3.connect(path, isolation_level=None)
    entry = conn.execute("SELECT type, name, tbl_name, rootpage, sql FROM sqlite_master WHERE name = ?", (index,)).fetchone()
    version = conn.execute("PRAGMA schema_version").fetchone()[0]
    conn.execute("PRAGMA writable_schema = ON")
    conn.execute("DELETE FROM sqlite_master WHERE name = ?", (index,))
    conn.execute(f"PRAGMA schema_version = {version + 1}")
    conn.close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("UPDATE site_building_pageblueprint SET slug = slug || '-stale' WHERE id = (SELECT min(id) FROM site_building_pageblueprint)")
    conn.execute("PRAGMA writable_schema = ON")
    conn.execute("INSERT INTO sqlite_master (type, name, tbl_name, rootpage, sql) VALUES (?, ?, ?, ?, ?)", entry)
    conn.execute(f"PRAGMA schema_version = {version + 2}")
    conn.close()


def test_a_sqlite_backup_copy_found_damaged_while_the_new_file_is_built_stops_the_reset(sqlite_case):
    """A SQLite reset's backup copy gets its integrity_check while the new file is built, not
    before: a damaged copy stops the run before the live file is replaced, with nothing changed,
    and the bundle says its check never passed. The copy's index pages are damaged (the load and
    the comparison read only its tables), so the failure seen is the check's own."""
    case = sqlite_case
    before, files = case.rows(), tree_digest(case.project)
    proc = start_reset(case, "pause:sqlite-verify:4")
    folder = case.project.parent / "b"
    wait_for(lambda: list(folder.glob("*/manifest.json")), "the finished bundle", proc)
    damage_indexes(next(folder.glob("*/db.sqlite3")))
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1 and "is damaged" in err and ("integrity_check failed" in err or "malformed" in err), out + err
    assert "the live database was not touched" in err
    assert case.rows() == before and tree_digest(case.project) == files
    manifest = json.loads(next(folder.glob("*/manifest.json")).read_text())
    assert manifest["dump"]["integrity_check"].startswith("FAILED: ") and "full read of the dump" not in manifest["verified"]["checks"]
    listed = run_inv("backups", *common(case), "--check", env=case.env).stdout
    assert "DAMAGED" in listed, listed
    assert reset(case, *REMOVE, "--dry-run").returncode == 0  # the run is over: nothing holds the database


def test_a_damaged_live_sqlite_file_is_named_and_a_run_killed_before_its_check_can_still_be_rolled_back(sqlite_case):
    """The copy is the live file's pages: when it fails its check, the live file is checked too
    and named as the damaged one. A run killed before it waited for that check cannot resume
    from the copy, but `inv rollback` (the migration files only: the database was never touched)
    still works; a failed check is recorded, and no restore takes that bundle unasked."""
    case = sqlite_case
    files, live = tree_digest(case.project), Path(case.env["DB_PATH"])
    stale_index(live)
    damaged = hashlib.sha256(live.read_bytes()).hexdigest()
    proc = start_reset(case, "pause:verify")
    wait_for(journal_phase(case, "verify"), "phase verify", proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    out = run_inv("reset", "--resume", *common(case), "--yes", env=case.env)
    assert out.returncode == 1 and "cannot go on from it" in out.stderr and "inv rollback" in out.stderr, out.stderr
    out = run_inv("rollback", *common(case), "--yes", env=case.env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert tree_digest(case.project) == files and hashlib.sha256(live.read_bytes()).hexdigest() == damaged
    out = reset(case, *REMOVE, "--yes")  # not killed: the check's verdict is awaited, and recorded
    assert out.returncode == 1, out.stdout
    assert f"the database {live} is damaged" in out.stderr and "repair it first" in out.stderr, out.stderr
    assert len(out.stderr) < 2000, out.stderr  # integrity_check's own list is cut short
    assert tree_digest(case.project) == files and hashlib.sha256(live.read_bytes()).hexdigest() == damaged
    newest = max((case.project.parent / "b").glob("*/manifest.json"), key=lambda p: json.loads(p.read_text())["created_at"])
    assert json.loads(newest.read_text())["dump"]["integrity_check"].startswith("FAILED: ")
    listed = run_inv("backups", *common(case), env=case.env).stdout
    assert "DAMAGED: the dump did not read back in full" in listed, listed
    out = run_inv("restore", *common(case), "--yes", env=case.env)
    assert out.returncode == 1 and "cannot be restored: its dump did not read back in full" in out.stderr, out.stderr


def test_killed_between_drop_and_create_then_rollback_recreates_the_database(pg_case):
    """kill -9 at the worst moment: the live database is gone. The next run names the way back,
    the listing shows the run unfinished, and rollback brings back every row and file; the
    password file the dead run wrote (it had no chance to remove it) goes with the rollback."""
    seeded, tmp = pg_case, Path(os.environ.get("TMPDIR", "/tmp"))
    rep = f"rep_{seeded.pg_db.name}"  # a grantee, dropped while the database is gone (its backup names it)
    with psycopg_admin(seeded.pg_db.cluster) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(rep)))
    seeded.damage([f'GRANT SELECT ON planner_keyword TO "{rep}"'])
    before, files = seeded.rows(), tree_digest(seeded.project)
    proc = start_reset(seeded, "pause:dropped")

    def dropped():
        with psycopg_admin(seeded.pg_db.cluster) as conn:
            return not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [seeded.pg_db.name]).fetchone()
    wait_for(dropped, "the database dropped", proc)
    mine = [p for p in tmp.glob("remigrate.*/owner.json") if json.loads(p.read_text()).get("pid") == proc.pid]
    assert mine and (mine[0].parent / "pgpass").exists()
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (mine[0].parent / "pgpass").exists()  # kill -9 gives no chance to clean up...
    assert tree_digest(seeded.project) != files  # the run died half-way, its new history in place
    listing = run_inv("backups", *common(seeded), env=seeded.env)
    assert "unfinished: --resume or rollback" in listing.stdout, listing.stdout
    again = reset(seeded, *REMOVE, "--yes")
    assert again.returncode == 1 and "inv rollback" in again.stderr  # the next run names the way back
    # a restore now would be dropped by the resume or undone by the rollback: refused, nothing made
    out = run_inv("restore", *common(seeded), "--yes", env=seeded.env)
    assert out.returncode == 1 and "inv rollback" in out.stderr and "nothing was restored" in out.stderr, out.stderr
    assert dropped()
    # a database someone made under the live name meanwhile is never dropped by the resume
    with psycopg_admin(seeded.pg_db.cluster) as conn:
        conn.execute(f'CREATE DATABASE "{seeded.pg_db.name}"')
    out = reset(seeded, "--resume", "--yes")
    assert out.returncode == 1 and "created by someone else" in out.stderr, out.stderr
    assert (out.stdout + out.stderr).count("created by someone else") == 1 and "Rolling back" not in out.stdout, out.stdout
    assert not dropped()
    journal = next((seeded.project.parent / "b").glob("*/journal.json"))
    assert json.loads(journal.read_text())["status"] == "running"  # still to resume or roll back, once it is moved away
    with psycopg_admin(seeded.pg_db.cluster) as conn:
        conn.execute(f'DROP DATABASE "{seeded.pg_db.name}"')
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(rep)))
    # the backup names a role gone since: the restore fails whole, says what to do, and the database
    # it made is its own, so the next try goes over it (not refused as someone else's)
    out = run_inv("rollback", *common(seeded), "--yes", env=seeded.env)
    assert out.returncode == 1 and f"role '{rep}', which the backup names" in out.stderr, out.stdout + out.stderr
    with psycopg_admin(seeded.pg_db.cluster) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(rep)))
    out = run_inv("rollback", *common(seeded), "--yes", env=seeded.env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert seeded.rows() == before and tree_digest(seeded.project) == files
    assert not mine[0].parent.exists()  # ...so the next run removes it
    journal = next((seeded.project.parent / "b").glob("*/journal.json"))
    assert json.loads(journal.read_text())["status"] == "rolled-back"


def test_sigterm_while_a_command_runs_still_rolls_back(sqlite_case):
    """Invoke swallows the interrupt while it waits for a child: the stop is remembered and the
    reset rolls back as soon as the command returns."""
    before, files = sqlite_case.rows(), tree_digest(sqlite_case.project)
    proc = start_reset(sqlite_case, "none", extra=["--check-command", "sleep 6"])
    wait_for(journal_phase(sqlite_case, "check-application"), "phase check-application", proc)
    time.sleep(1)
    os.kill(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "Rolling back" in out and "SIGTERM" in out + err, out + err
    assert sqlite_case.rows() == before and tree_digest(sqlite_case.project) == files


def test_a_sqlite_reset_killed_before_its_swap_never_rolls_the_live_file_back(sqlite_case):
    """Until the swap replaced it, the live file is the application's: a row it writes after
    the reset died survives the rollback."""
    files = tree_digest(sqlite_case.project)
    proc = start_reset(sqlite_case, "pause:swap")
    wait_for(journal_phase(sqlite_case, "swap"), "phase swap", proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    sqlite_case.damage([NEW_SETTING])
    after_write = sqlite_case.rows()
    out = run_inv("rollback", *common(sqlite_case), "--yes", env=sqlite_case.env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "the reset never touched the database" in out.stdout
    assert sqlite_case.rows() == after_write and tree_digest(sqlite_case.project) == files


def test_a_verification_that_found_problems_keeps_the_lock_until_rollback(sqlite_case):
    before, files = sqlite_case.rows(), tree_digest(sqlite_case.project)
    out = reset(sqlite_case, *REMOVE, "--yes", env={"REMIGRATE_FAULT": "problem:verify"})
    assert out.returncode == 1 and "verification found 1 problems" in out.stderr, out.stderr
    again = reset(sqlite_case, "--dry-run")  # nothing new starts on a database in that state
    assert again.returncode == 1 and "ended verify-failed" in again.stderr and "inv rollback" in again.stderr
    out = run_inv("rollback", *common(sqlite_case), "--yes", env=sqlite_case.env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert sqlite_case.rows() == before and tree_digest(sqlite_case.project) == files
    assert reset(sqlite_case, *REMOVE, "--dry-run").returncode == 0


COMMENTS = ("COMMENT ON TABLE writer_task IS 'the writers'' queue'; COMMENT ON COLUMN writer_content.title IS "
            "E'shown as C:\\\\path'; COMMENT ON MATERIALIZED VIEW writer_report IS 'nightly'; "
            "COMMENT ON SEQUENCE invoice_no_seq IS 'invoices'; COMMENT ON SCHEMA billing IS 'money'")
TYPES = ("CREATE TYPE ticket_state AS ENUM ('open', 'closed'); CREATE DOMAIN percent AS integer CHECK (VALUE BETWEEN "
         "0 AND 100); CREATE FUNCTION state_of(p percent) RETURNS ticket_state LANGUAGE sql AS "
         "$$ SELECT CASE WHEN p = 100 THEN 'closed'::ticket_state ELSE 'open' END $$; "
         # what some types need first: a function (a domain's CHECK), a table (its row type); and a
         # domain over an extension's type, with a CHECK calling the extension's function (made first)
         "CREATE FUNCTION is_even(n integer) RETURNS boolean LANGUAGE sql IMMUTABLE AS 'SELECT n % 2 = 0'; "
         "CREATE DOMAIN even AS integer CHECK (is_even(VALUE)); CREATE TYPE task_pair AS (a writer_task, b writer_task); "
         "CREATE EXTENSION IF NOT EXISTS citext; CREATE DOMAIN email AS citext CHECK (strpos(VALUE, '@') > 1); "
         "COMMENT ON CONSTRAINT percent_check ON DOMAIN percent IS 'a whole share'")
# every comment on a relation, a column, a routine or a schema other than public
COMMENTED = ("SELECT coalesce(c.relname || coalesce('.' || a.attname, ''), p.proname, s.nspname, t.typname, g.tgname, k.conname), "
             "d.description "
             "FROM pg_description d LEFT JOIN pg_class c ON d.classoid = 'pg_class'::regclass AND c.oid = d.objoid "
             "LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = d.objsubid AND d.objsubid > 0 "
             "LEFT JOIN pg_proc p ON d.classoid = 'pg_proc'::regclass AND p.oid = d.objoid "
             "LEFT JOIN pg_namespace s ON d.classoid = 'pg_namespace'::regclass AND s.oid = d.objoid "
             "LEFT JOIN pg_type t ON d.classoid = 'pg_type'::regclass AND t.oid = d.objoid "
             "LEFT JOIN pg_trigger g ON d.classoid = 'pg_trigger'::regclass AND g.oid = d.objoid "
             "LEFT JOIN pg_constraint k ON d.classoid = 'pg_constraint'::regclass AND k.oid = d.objoid "
             "WHERE (c.oid IS NOT NULL AND c.relnamespace <> 'pg_catalog'::regnamespace) OR (p.oid IS NOT NULL AND "
             "p.pronamespace <> 'pg_catalog'::regnamespace) OR s.nspname NOT LIKE 'pg\\_%' AND s.nspname NOT IN ('public', 'information_schema') "
             "OR t.typnamespace <> 'pg_catalog'::regnamespace OR g.oid IS NOT NULL OR k.connamespace <> 'pg_catalog'::regnamespace "
             "EXCEPT SELECT coalesce(p.proname, c.relname), d.description FROM pg_description d JOIN pg_depend e ON "
             "e.objid = d.objoid AND e.deptype = 'e' LEFT JOIN pg_proc p ON p.oid = d.objoid "
             "LEFT JOIN pg_class c ON c.oid = d.objoid ORDER BY 1")


def test_the_application_cannot_reach_a_half_built_postgresql_database(pg_case):
    """The new database is built under another name: while it is migrated and loaded, the
    application's connections fail (no row can be written into it and emptied by the load).
    What belongs to the database and not to its rows comes along: a comment that spans lines,
    and privileges given to other roles (the migrations make tables their owner's only; a
    read-only reporting role, an app role using a renamed model's sequence)."""
    comment, role = "Shop database;\nowned by the 'web' team", f"reporting_{pg_case.pg_db.name}"
    with psycopg_admin(pg_case.pg_db.cluster) as conn:
        conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(pg_case.pg_db.name), sql.Literal(comment)))
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
        conn.execute(sql.SQL("ALTER ROLE {} IN DATABASE {} SET statement_timeout = '7s'").format(  # the role's setting there
            sql.Identifier(pg_case.pg_db.role), sql.Identifier(pg_case.pg_db.name)))
        conn.execute(sql.SQL("ALTER ROLE {} IN DATABASE {} SET work_mem = '8MB'").format(  # another role's: said, not given
            sql.Identifier(role), sql.Identifier(pg_case.pg_db.name)))
    # a schema and a table of the old history's own, with names pg_dump quotes, and rows
    made = ('CREATE SCHEMA "Reports"; CREATE TABLE "Reports"."Odd Table" (id serial PRIMARY KEY, "Secret" text, plain text); '
            """INSERT INTO "Reports"."Odd Table" ("Secret", plain) VALUES ('s', 'p'); """
            'CREATE VIEW "Reports".keywords AS SELECT id, phrase FROM planner_keyword; '
            "CREATE FUNCTION \"Reports\".answer(n integer) RETURNS integer LANGUAGE sql AS 'SELECT n + 41'; "
            # a domain of the schema's own, which a function takes (pg_dump names its argument qualified)
            "CREATE DOMAIN \"Reports\".pct AS integer CHECK (VALUE <= 100); CREATE FUNCTION \"Reports\".half(p "
            "\"Reports\".pct) RETURNS integer LANGUAGE sql AS 'SELECT p / 2'; COMMENT ON TABLE planner_cluster IS 'groups'; "
            'CREATE SEQUENCE "Reports".report_no')
    add_writer_migration(pg_case, f"migrations.RunSQL({made!r})")
    with psycopg_admin(pg_case.pg_db.cluster) as conn:  # the application's role may act for the reporting one
        conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(role), sql.Identifier(pg_case.pg_db.role)))
    pg_case.damage([f'GRANT SELECT ON planner_keyword TO "{role}"', f'GRANT USAGE ON SEQUENCE planner_idea_id_seq TO "{role}"',
                    # what no row and no relation carries: the schema's, the columns' and the default privileges
                    "REVOKE ALL ON SCHEMA public FROM PUBLIC", f'GRANT USAGE ON SCHEMA public TO "{role}"',
                    f'GRANT USAGE ON SCHEMA "Reports" TO "{role}"', f'GRANT SELECT (plain, "Secret") ON "Reports"."Odd Table" TO "{role}"',
                    f'GRANT SELECT (key) ON system_setting_keys TO "{role}"', f'ALTER SCHEMA "Reports" OWNER TO "{role}"',
                    f'GRANT SELECT (id, phrase), UPDATE (volume) ON planner_keyword TO "{role}"',
                    # what the reporting role owns in its schema (the migrations make everything the
                    # app's): a table (its id sequence follows it), a view, a function, a sequence
                    f'ALTER VIEW "Reports".keywords OWNER TO "{role}"', f'ALTER SEQUENCE "Reports".report_no OWNER TO "{role}"',
                    f'ALTER FUNCTION "Reports".answer(integer) OWNER TO "{role}"', f'ALTER TABLE "Reports"."Odd Table" OWNER TO "{role}"',
                    f'ALTER DOMAIN "Reports".pct OWNER TO "{role}"',
                    # comments made by hand (no migration made them): kept from the live database
                    """COMMENT ON COLUMN planner_keyword.phrase IS 'what the reader searched'""",
                    """COMMENT ON FUNCTION "Reports".answer(integer) IS 'always 42'""",
                    """COMMENT ON TABLE "Reports"."Odd Table" IS 'odd'""",
                    """COMMENT ON FUNCTION "Reports".half("Reports".pct) IS 'rounds down'""",
                    """COMMENT ON DOMAIN "Reports".pct IS 'a share'""",
                    "COMMENT ON INDEX writer_content_published_idx IS 'by date'",
                    "COMMENT ON TRIGGER system_prompt_trim ON system_aiprompt IS 'trims names'",
                    "COMMENT ON CONSTRAINT writer_task_pkey ON writer_task IS 'the key'",
                    """COMMENT ON CONSTRAINT pct_check ON DOMAIN "Reports".pct IS 'at most 100'""",
                    # and one the history made, taken away by hand: not made again
                    "COMMENT ON TABLE planner_cluster IS NULL",
                    # and what the app's role has been given on it (gone if the owner were not given back first)
                    f'GRANT SELECT, INSERT, UPDATE ON "Reports"."Odd Table" TO "{pg_case.pg_db.role}"',
                    f'ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO "{role}"',
                    "ALTER DEFAULT PRIVILEGES REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC",
                    f'ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE ON SEQUENCES TO "{role}" WITH GRANT OPTION'])
    access, comments = access_rules(pg_case), query(pg_case, COMMENTED)
    before = data_rows(pg_case)
    proc = start_reset(pg_case, "pause:migrate:4")
    wait_for(journal_phase(pg_case, "migrate"), "phase migrate", proc)
    with pytest.raises(psycopg.OperationalError, match="does not exist"):
        pg_case.damage([NEW_SETTING])
    with psycopg_admin(pg_case.pg_db.cluster) as conn:
        names = {n for (n,) in conn.execute("SELECT datname FROM pg_database")}
    assert pg_case.pg_db.name not in names and f"{pg_case.pg_db.name}__remigrate_build" in names
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, out + err
    assert "a role's setting in the database could not be given back" in out, out
    assert f"IN DATABASE {pg_case.pg_db.name} SET work_mem" in out, out  # the live name, as the user will run it
    assert data_rows(pg_case) == before
    with psycopg_admin(pg_case.pg_db.cluster) as conn:
        names = {n for (n,) in conn.execute("SELECT datname FROM pg_database")}
    assert f"{pg_case.pg_db.name}__remigrate_build" not in names
    with psycopg_admin(pg_case.pg_db.cluster) as conn:
        got = conn.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
                           [pg_case.pg_db.name]).fetchone()[0]
        setting = conn.execute("SELECT s.setconfig FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase "
                               "JOIN pg_roles r ON r.oid = s.setrole WHERE d.datname = %s AND r.rolname = %s",
                               [pg_case.pg_db.name, pg_case.pg_db.role]).fetchone()
    assert got == comment and setting == (["statement_timeout=7s"],), setting
    checks = query(pg_case, f"SELECT has_table_privilege('{role}', 'planner_keyword', 'SELECT'), "
                            f"has_sequence_privilege('{role}', pg_get_serial_sequence('planner_contentidea', 'id'), 'USAGE')")
    assert checks == [(True, True)]
    assert access_rules(pg_case) == kept_access(access)
    assert query(pg_case, COMMENTED) == comments and len(comments) == 9, comments
    pg_case.damage([f'REVOKE SELECT ON planner_keyword FROM "{role}"',  # lost later: the later check names it
                    f'ALTER VIEW "Reports".keywords OWNER TO "{pg_case.pg_db.role}"', "COMMENT ON COLUMN planner_keyword.phrase IS 'x'",
                    "GRANT USAGE ON SCHEMA public TO PUBLIC", "ALTER DEFAULT PRIVILEGES GRANT EXECUTE ON FUNCTIONS TO PUBLIC"])
    out = run_inv("verify", *common(pg_case), env=pg_case.env)
    assert out.returncode == 1 and f"grant SELECT on planner_keyword to {role} is gone" in out.stdout, out.stdout
    assert "grant USAGE on schema public to PUBLIC is new" in out.stdout, out.stdout
    assert f"view Reports.keywords owned by {role} is gone" in out.stdout, out.stdout
    assert "comment on column planner_keyword.phrase changed (not the backup's text)" in out.stdout, out.stdout
    assert "default privilege EXECUTE on functions made by" in out.stdout, out.stdout


def kept_access(access, removed="igny8_site_blueprint_workflow_states"):
    """access_rules less those of the removed model's table (with its sequence)."""
    return [a for a in access if removed not in a[1]]


def access_rules(case):
    """The database's own access rules, as the server shows them: every schema's ACL (none set:
    its owner's default) and owner, every column's ACL, the default privileges (role names,
    not oids), and the owner and ACL of every relation and routine."""
    return query(case, "SELECT 'schema', nspname, coalesce(nspacl, acldefault('n', nspowner))::text || ' ' || "
                       "pg_get_userbyid(nspowner) FROM pg_namespace "
                       "WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema' "
                       "UNION ALL SELECT 'column', attrelid::regclass::text || '.' || attname, attacl::text FROM pg_attribute "
                       "WHERE attacl IS NOT NULL "
                       "UNION ALL SELECT 'default', pg_get_userbyid(defaclrole) || ' ' || defaclnamespace::regnamespace::text "
                       "|| ' ' || defaclobjtype::text, defaclacl::text FROM pg_default_acl "
                       # a column's sequence by its column (a renamed model's is named after its old table)
                       "UNION ALL SELECT 'relation', coalesce((SELECT 'sequence of ' || d.refobjid::regclass::text || '.' "
                       "|| d.refobjsubid FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid "
                       "AND d.deptype IN ('a', 'i')), c.oid::regclass::text), pg_get_userbyid(c.relowner) || ' ' || "
                       "coalesce(c.relacl::text, '') FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                       "WHERE c.relkind IN ('r', 'v', 'm', 'S') AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema' "
                       "UNION ALL SELECT 'type', t.oid::regtype::text, pg_get_userbyid(t.typowner) FROM pg_type t JOIN "
                       "pg_namespace n ON n.oid = t.typnamespace WHERE t.typtype = 'd' AND n.nspname <> 'information_schema' "
                       "UNION ALL SELECT 'routine', p.oid::regprocedure::text, pg_get_userbyid(p.proowner) || ' ' || "
                       "coalesce(p.proacl::text, '') FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                       "WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema' ORDER BY 1, 2")


def test_what_the_old_history_made_beyond_the_models_is_carried_with_its_values(pg_case):
    """What the old history made with SQL or with operations makemigrations does not write. A
    RunSQL CREATE SEQUENCE (invoice numbers: no column owns it): the new history carries it,
    with its options and the value the old history left (a fresh install has it), and the
    rebuilt database goes on after the last number the live one
    handed out, one taken while the reset ran included. A RunSQL CREATE MATERIALIZED VIEW (a
    report the application reads) is carried too, but the new history makes it while the tables
    are empty: the rebuilt database refreshes it once the rows are in, as pg_restore does,
    instead of an empty report until the next refresh. Row level security and its policy. A
    TrigramExtension that an index's operator class needs: made before any app's first migration.
    """
    # and one the custom user's app made (a case-insensitive email, say): the app others reach by __first__
    (pg_case.project / "igny8_core/auth/migrations/0003_citext.py").write_text(
        "from django.contrib.postgres.operations import CITextExtension\nfrom django.db import migrations\n\n\n"
        "class Migration(migrations.Migration):\n    dependencies = [('igny8_core_auth', '0002_user_timezone')]\n"
        "    operations = [CITextExtension()]\n")
    # the models as the history below leaves them (its migration imports a field of theirs)
    models = pg_case.project / "igny8_core/modules/writer/models.py"
    models.write_text("from django.contrib.postgres.indexes import GinIndex\n" + models.read_text().replace(
        "on_delete=models.SET_NULL)\n\n\nclass Content", "on_delete=models.SET_NULL)\n\n    class Meta:\n        indexes = "
        "[GinIndex(fields=['title'], name='writer_task_title_trgm', opclasses=['gin_trgm_ops'])]\n\n\nclass Content")
        .replace("    title = models.CharField(max_length=300)\n    body", "    title = models.CharField(max_length=300, "
                 "db_collation='case_insensitive')\n    body")
        .replace("\n\nclass Task(models.Model):\n", "\n\nclass TicketStateField(models.CharField):\n"
                 "    def db_type(self, connection):\n        return 'ticket_state' if connection.vendor == 'postgresql' "
                 "else super().db_type(connection)\n\n\nclass Task(models.Model):\n    state = TicketStateField("
                 "default='open', max_length=10)\n"))
    add_writer_migration(pg_case, "migrations.RunSQL(\"CREATE SEQUENCE invoice_no_seq START 1000 INCREMENT 5 MAXVALUE 999999; "
                                  "SELECT setval('invoice_no_seq', 1100)\", 'DROP SEQUENCE invoice_no_seq'), "
                                  "migrations.RunSQL('CREATE MATERIALIZED VIEW writer_report AS SELECT count(*) AS n, "
                                  "max(id) AS top FROM writer_content', 'DROP MATERIALIZED VIEW writer_report'), "
                                  # one the application fills itself: reading it fails until then
                                  "migrations.RunSQL('CREATE MATERIALIZED VIEW writer_later AS SELECT count(*) AS n "
                                  "FROM writer_content WITH NO DATA'), "
                                  # a tenant's rows hidden from another's sessions: lost, nothing would say so
                                  "migrations.RunSQL(\"ALTER TABLE writer_task ENABLE ROW LEVEL SECURITY; CREATE POLICY "
                                  "own_rows ON writer_task FOR SELECT TO PUBLIC USING (status <> 'secret')\"), "
                                  # a countdown (tickets left): further on is lower
                                  "migrations.RunSQL('CREATE SEQUENCE countdown_seq INCREMENT -1 START 100 MINVALUE 1 "
                                  "MAXVALUE 100'), "
                                  # in a schema of the history's own, and a name with a dot in it
                                  "migrations.RunSQL('CREATE SCHEMA billing; CREATE SEQUENCE billing.invoice_no; "
                                  "CREATE SEQUENCE \"inv.no\"; SELECT nextval(\\'billing.invoice_no\\')'), "
                                  # an extension in a schema of its own: there again
                                  "migrations.RunSQL('CREATE SCHEMA ext; CREATE EXTENSION IF NOT EXISTS unaccent WITH SCHEMA ext'), "
                                  # comments (COMMENT ON): of a table, a column, a view, a sequence, a schema
                                  f"migrations.RunSQL({COMMENTS!r}), "
                                  # a partitioned table with a partition, a key and an index (each partition's own follow)
                                  "migrations.RunSQL(\"CREATE TABLE billing.ledger (id int, at date) PARTITION BY RANGE "
                                  "(at); CREATE TABLE billing.ledger_2024 PARTITION OF billing.ledger FOR VALUES FROM "
                                  "('2024-01-01') TO ('2025-01-01'); ALTER TABLE billing.ledger ADD PRIMARY KEY (id, at); "
                                  "CREATE INDEX ledger_at ON billing.ledger (at); INSERT INTO billing.ledger VALUES "
                                  "(0, '2024-01-02'); CREATE FUNCTION billing.stamp() RETURNS trigger LANGUAGE plpgsql "
                                  "AS $$ BEGIN NEW.id := NEW.id + 1000; RETURN NEW; END $$; CREATE TRIGGER ledger_stamp "
                                  "BEFORE INSERT ON billing.ledger FOR EACH ROW EXECUTE FUNCTION billing.stamp()\"), "
                                  # types of its own (an enum, a domain) that a function and a model's column use
                                  f"migrations.RunSQL({TYPES!r}), migrations.AddField('task', 'state', "
                                  "TicketStateField(default='open', max_length=10)), "
                                  # an extension the models need before any table: an operator class of an index
                                  "TrigramExtension(), migrations.AddIndex('task', GinIndex(fields=['title'], "
                                  "name='writer_task_title_trgm', opclasses=['gin_trgm_ops'])), "
                                  # a collation a field names (Django's documented case-insensitive field)
                                  "CreateCollation('case_insensitive', provider='icu', locale='und-u-ks-level2', "
                                  "deterministic=False), migrations.AlterField('content', 'title', "
                                  "models.CharField(max_length=300, db_collation='case_insensitive'))",
                         imports="from django.contrib.postgres.indexes import GinIndex\n"
                                 "from django.contrib.postgres.operations import CreateCollation, TrigramExtension\n"
                                 "from django.db import models\n"
                                 "from igny8_core.modules.writer.models import TicketStateField")
    pg_case.damage(["REFRESH MATERIALIZED VIEW writer_report"])
    # the public schema a superuser's, as after pg_upgrade from PostgreSQL 14 or older: every new
    # database has a public schema of its own, so not a reason to refuse
    with psycopg_admin(pg_case.pg_db.cluster, pg_case.pg_db.name) as conn:
        conn.execute(sql.SQL("ALTER SCHEMA public OWNER TO {}").format(sql.Identifier(SUPERUSER)))
    report = query(pg_case, "SELECT n, top FROM writer_report")
    assert report[0][0] > 0
    pg_case.damage(["INSERT INTO billing.ledger VALUES (1, '2024-05-05'), (2, '2024-06-06')"])  # ids 1001, 1002
    taken = [query(pg_case, "SELECT nextval('invoice_no_seq')")[0][0] for _ in range(3)]
    left = [query(pg_case, "SELECT nextval('countdown_seq')")[0][0] for _ in range(3)]
    others = query(pg_case, """SELECT nextval('billing.invoice_no'), nextval('"inv.no"'), nextval('"inv.no"')""")
    before = data_rows(pg_case)
    proc = start_reset(pg_case, "pause:regenerate-migrations:6")
    wait_for(journal_phase(pg_case, "regenerate-migrations"), "phase regenerate-migrations", proc)
    taken.append(query(pg_case, "SELECT nextval('invoice_no_seq')")[0][0])  # the application numbers an invoice
    # and adds a row and deletes it: the content as it was, so the reset goes on; its id is never handed out again
    given = handed_out_and_deleted(pg_case)
    left.append(query(pg_case, "SELECT nextval('countdown_seq')")[0][0])
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, out + err
    assert taken == [1105, 1110, 1115, 1120]
    assert "made sequence invoice_no_seq" in out and "a fresh install from the new history equals one from the old " \
        "history" in out, out
    assert query(pg_case, "SELECT nextval('invoice_no_seq')") == [(1125,)]
    assert query(pg_case, "SELECT nextval(pg_get_serial_sequence('system_setting', 'id'))")[0][0] > given
    assert left == [100, 99, 98, 97] and query(pg_case, "SELECT nextval('countdown_seq')") == [(96,)]
    assert others == [(2, 1, 2)]
    # the extensions come first in every app's first migration (whichever runs first makes them), so
    # the index could be made
    for first in pg_case.project.glob("igny8_core/**/migrations/0001_initial.py"):
        text = first.read_text()
        assert text.index("name='citext'") < text.index("name='pg_trgm'") < text.index("CreateModel("), first
        assert "('igny8_core_auth', '__first__')" not in text, first  # still swappable_dependency(AUTH_USER_MODEL)
    writer = (pg_case.project / "igny8_core/modules/writer/migrations/0001_initial.py").read_text()
    assert "migrations.swappable_dependency(settings.AUTH_USER_MODEL)" in writer
    # the collation in the first app's first migration only (made twice, it would fail), which
    # every other first migration depends on
    firsts = {f.parent.parent.name: f.read_text() for f in pg_case.project.glob("igny8_core/**/migrations/0001_initial.py")}
    making = [app for app, text in firsts.items() if "def remigrate_first(" in text]
    assert making == ["auth"] and "CREATE COLLATION IF NOT EXISTS public.case_insensitive (provider = icu, locale = " \
        "'und-u-ks-level2', deterministic = false)" in firsts["auth"], making
    assert all("('igny8_core_auth', '0001_initial')" in text or "AUTH_USER_MODEL" in text
               for app, text in firsts.items() if app != "auth")
    assert query(pg_case, "SELECT collation_name FROM information_schema.columns WHERE table_name = 'writer_content' "
                          "AND column_name = 'title'") == [("case_insensitive",)]
    assert query(pg_case, "SELECT extname FROM pg_extension WHERE extname IN ('pg_trgm', 'citext') ORDER BY 1") == \
        [("citext",), ("pg_trgm",)]
    assert query(pg_case, "SELECT ext.unaccent('Hélène')") == [("Helene",)]
    pg_case.damage(["CREATE TABLE after_reset (id int)", "DROP TABLE after_reset"])  # the application may still make tables
    assert query(pg_case, "SELECT indexdef LIKE '%gin_trgm_ops%' FROM pg_indexes WHERE indexname = 'writer_task_title_trgm'") \
        == [(True,)]
    assert query(pg_case, """SELECT nextval('billing.invoice_no'), nextval('"inv.no"')""") == [(3, 3)]
    assert "made view writer_report" in out and query(pg_case, "SELECT n, top FROM writer_report") == report
    assert query(pg_case, "SELECT ispopulated FROM pg_matviews WHERE matviewname = 'writer_later'") == [(False,)]
    assert "row security of writer_task" in out and "policy writer_task.own_rows" in out, out
    assert query(pg_case, "SELECT c.relrowsecurity, p.polname, pg_get_expr(p.polqual, p.polrelid) FROM pg_class c "
                          "JOIN pg_policy p ON p.polrelid = c.oid WHERE c.relname = 'writer_task'") == \
        [(True, "own_rows", "((status)::text <> 'secret'::text)")]
    assert query(pg_case, "SELECT increment_by, max_value FROM pg_sequences WHERE sequencename = 'invoice_no_seq'") == [(5, 999999)]
    assert query(pg_case, "SELECT c.relispartition, pg_get_expr(c.relpartbound, c.oid), (SELECT count(*) FROM pg_index x "
                          "WHERE x.indrelid = c.oid) FROM pg_class c WHERE c.relname = 'ledger_2024'") == \
        [(True, "FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')", 2)]
    ledger = query(pg_case, "SELECT id, at::text FROM billing.ledger ORDER BY id")
    assert ledger == [(0, "2024-01-02"), (1001, "2024-05-05"), (1002, "2024-06-06")]  # the first from the old history
    # the partitioned table's row trigger is one (its partitions' copies come with it), and on
    assert query(pg_case, "SELECT count(*) FROM pg_trigger WHERE tgname = 'ledger_stamp'") == [(2,)]
    assert "comment on column writer_content.title" in out, out
    assert query(pg_case, "SELECT state_of(100), state_of(5)") == [("closed", "open")]
    assert query(pg_case, "SELECT typname FROM pg_type WHERE typname IN ('even', 'task_pair') ORDER BY 1") == \
        [("even",), ("task_pair",)]
    assert "CREATE DOMAIN public.email AS citext" in firsts["auth"]
    # the enum a column uses is made before any table, by the first app's first migration
    assert "CREATE TYPE public.ticket_state AS ENUM ('open', 'closed')" in firsts["auth"]
    assert query(pg_case, "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = "
                          "'writer_task'::regclass AND attname = 'state'") == [("ticket_state",)]
    assert query(pg_case, COMMENTED) == [("billing", "money"), ("invoice_no_seq", "invoices"),
                                         ("percent_check", "a whole share"), ("writer_content.title",
                                         "shown as C:\\path"), ("writer_report", "nightly"), ("writer_task", "the writers' queue")]
    assert data_rows(pg_case) == before
    carried = next(pg_case.project.rglob("*_remigrate_carried.json"))
    data = json.loads(carried.read_text())
    assert [None, '"public"."invoice_no_seq"', 1100] in data["sequences"]  # a fresh install starts where the old history left it
    # once gone from the live database, the check says so
    pg_case.damage(["DROP SEQUENCE invoice_no_seq", "DROP POLICY own_rows ON writer_task"])
    out = run_inv("verify", *common(pg_case), env=pg_case.env)
    assert out.returncode == 1 and 'sequence public.invoice_no_seq is gone' in out.stdout, out.stdout
    assert "policy writer_task.own_rows is gone" in out.stdout, out.stdout
    # and a restore of the backup over it puts back what it had, the partitioned table (whose
    # partition's key is its parent's) included
    out = run_inv("restore", *common(pg_case), "--yes", "--no-safety-backup", env=pg_case.env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert query(pg_case, "SELECT id, at::text FROM billing.ledger ORDER BY id") == ledger
    assert query(pg_case, "SELECT count(*) FROM pg_policy WHERE polname = 'own_rows'") == [(1,)]


def held_locks(db):
    with psycopg_admin(db.cluster) as conn:
        return conn.execute("SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                            "WHERE l.locktype = 'advisory' AND a.usename = %s", [db.role]).fetchone()[0]


def test_a_second_machine_cannot_reset_the_same_postgresql_database_meanwhile(pg_case, tmp_path):
    """The lock that matters is on the server: another machine (another HOME, no shared lock
    file) is refused while a run holds it, and a run killed with kill -9 leaves it free."""
    elsewhere = tmp_path / "other-machine"  # its own checkout of the project and its own HOME
    shutil.copytree(pg_case.project, elsewhere / "project")
    proc = start_reset(pg_case, "pause:regenerate-migrations:60")
    wait_for(journal_phase(pg_case, "regenerate-migrations"), "phase regenerate-migrations", proc)
    assert held_locks(pg_case.pg_db) == 1
    other = run_inv("reset", "--project-dir", str(elsewhere / "project"), "--backup-dir", str(elsewhere / "b"), *REMOVE,
                    "--yes", env={**pg_case.env, "HOME": str(elsewhere)})
    assert other.returncode == 1
    assert "holds its lock on the server" in other.stderr and "remigrate" in other.stderr, other.stderr
    assert "Traceback" not in other.stderr
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    wait_for(lambda: held_locks(pg_case.pg_db) == 0, "the server lock released by the dead run's session", seconds=20)
    out = run_inv("rollback", *common(pg_case), "--yes", env=pg_case.env)
    assert out.returncode == 0, out.stdout + out.stderr


def stop_while_the_close_waits(case, wait_sessions, stop):
    """A reset whose close waits (up to `wait_sessions` seconds) for an application's session, in
    the long-lived probe's child, stopped by `stop(pid)` meanwhile: (process, out, err, seconds
    from the stop to the end)."""
    with case.pg_db.connect() as idle:
        idle.execute("SELECT 1")
        proc = start_reset(case, "none", extra=["--wait-sessions", str(wait_sessions)])
        wait_for(journal_phase(case, "close"), "phase close", proc)
        time.sleep(1.5)  # pg-close is waiting in the probe's child
        stopped = time.monotonic()
        stop(proc.pid)
        out, err = proc.communicate(timeout=120)
    return proc, out, err, time.monotonic() - stopped


def test_sigterm_while_a_probe_step_runs_waits_for_it_and_rolls_back_in_order(pg_case):
    """The step goes on in the long-lived probe's child when the task is stopped: its answer is
    awaited, so the rollback's own steps get their own answers (not one behind)."""
    files = tree_digest(pg_case.project)
    proc, out, err, _took = stop_while_the_close_waits(pg_case, 8, lambda pid: os.kill(pid, signal.SIGTERM))
    assert proc.returncode != 0 and "Rolling back" in out, out + err
    assert "rollback failed" not in err and "database was never changed" in err, err
    assert tree_digest(pg_case.project) == files
    assert query(pg_case, "SELECT datallowconn FROM pg_database WHERE datname = current_database()") == [(True,)]
    assert reset(pg_case, *REMOVE, "--dry-run").returncode == 0  # no lock left behind


def test_a_ctrl_c_sent_to_the_process_group_while_a_probe_step_waits_stops_that_step_and_rolls_back(pg_case):
    """A Ctrl-C in a terminal interrupts the whole process group (a SIGTERM to the whole group,
    systemd's default, is handled the same way): the step under way in the long-lived probe's
    child (the close, waiting up to a minute here for an application's session) stops at once,
    cleaning up after itself; the probe lives on to answer the rollback's steps; the psql that
    held the run's lock on the server ends, and the lock is taken again for the rollback. The
    database is back and open, no scratch database or lock is left."""
    files = tree_digest(pg_case.project)
    proc, out, err, took = stop_while_the_close_waits(pg_case, 60, lambda pid: os.killpg(pid, signal.SIGINT))
    assert proc.returncode != 0 and "Rolling back" in out, out + err
    assert took < 40, f"the waiting close was not stopped: {took:.0f} s"
    assert "so did the rollback" not in out + err and "ended without answering" not in out + err, out + err
    assert tree_digest(pg_case.project) == files
    assert query(pg_case, "SELECT datallowconn FROM pg_database WHERE datname = current_database()") == [(True,)]
    with psycopg_admin(pg_case.pg_db.cluster) as admin:
        assert admin.execute("SELECT datname FROM pg_database WHERE datname LIKE '%\\_\\_remigrate\\_%'").fetchall() == []
    assert held_locks(pg_case.pg_db) == 0


def test_a_project_that_prints_while_it_starts_is_still_understood(sqlite_case):
    settings = sqlite_case.project / "igny8_core" / "settings.py"
    settings.write_text(settings.read_text() + '\nprint("settings loaded: REMIGRATE-JSON: {not json}")\n')
    before = data_rows(sqlite_case)
    out = reset(sqlite_case, *REMOVE, "--yes")
    assert out.returncode == 0, out.stdout + out.stderr
    assert data_rows(sqlite_case) == before
