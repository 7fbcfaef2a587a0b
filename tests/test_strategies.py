"""The strategies beyond the rebuild: swap (built beside while the application runs, renamed in,
the old database kept for an instant rollback) and fake (only the history rewritten, after the
proof that the live schema is the new history's). Real SQLite files, a real PostgreSQL server."""
import json
import os
import signal
import sqlite3
import subprocess

import psycopg
import pytest
from conftest import manage, run_inv
from servers import psycopg_admin
from test_faults import NEW_SETTING, access_rules, common, kept_access, handed_out_and_deleted, journal_phase, start_reset, wait_for
from test_reset import REMOVE, WF_TABLE, data_rows, query, reset, tree_digest


def journal_of(case):
    return json.loads(next((case.project.parent / "b").glob("*/journal.json")).read_text())


def report_of(case):
    return json.loads(next((case.project.parent / "b").glob("*/report.json")).read_text())


def database_names(case):
    if case.engine == "sqlite":
        return sorted(p.name for p in case.project.glob("db.sqlite3*"))
    with psycopg_admin(case.pg_db.cluster, "postgres") as conn:
        return sorted(r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s",
                                                 [case.pg_db.name + "%"]))


def kept_exists(case, kept):
    if case.engine == "sqlite":
        return os.path.exists(kept)
    return kept in database_names(case)


def applied(case, app):
    return [r[0] for r in query(case, f"SELECT name FROM django_migrations WHERE app = '{app}' ORDER BY name")]


def test_swap_keeps_every_row_and_cleanup_then_rollback_restores_from_the_backup(seeded):
    """A swap keeps the old database beside; cleanup removes it, after which a rollback can only
    restore the backup, and does. (The rollback by rename, while the old database is still kept,
    and the cleanup of the new database it sets aside: test_atelier_strategies' swap test.)"""
    if seeded.engine == "postgresql":  # the database's own access rules come along both ways
        seeded.damage(["REVOKE ALL ON SCHEMA public FROM PUBLIC", "ALTER DEFAULT PRIVILEGES REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC",
                       "GRANT SELECT (phrase) ON planner_keyword TO PUBLIC"])
    access = access_rules(seeded) if seeded.engine == "postgresql" else None
    before_all, before, files = seeded.rows(), data_rows(seeded), tree_digest(seeded.project)
    proc = start_reset(seeded, "pause:load:4", extra=("--strategy", "swap"))
    wait_for(journal_phase(seeded, "load"), "the load", proc)
    # An id handed out during the build, to no row that stays (SQLite: a row added and deleted;
    # PostgreSQL: an id taken ahead, so the proof of no write still goes by the write counters),
    # is never handed out again by the new database.
    given = (handed_out_and_deleted(seeded) if seeded.engine == "sqlite"
             else query(seeded, "SELECT nextval(pg_get_serial_sequence('system_setting', 'id'))")[0][0])
    stdout, stderr = proc.communicate(timeout=300)
    out = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    assert out.returncode == 0, out.stdout + out.stderr
    assert data_rows(seeded) == before  # every row, by content
    assert access is None or access_rules(seeded) == kept_access(access)
    assert query(seeded, "INSERT INTO system_setting (key, value) VALUES ('after.swap', '1') RETURNING id")[0][0] > given
    seeded.damage(["DELETE FROM system_setting WHERE key = 'after.swap'"])
    for moved_on in ("<sequences>", "sqlite_sequence"):  # by that id, as they must
        before_all.pop(moved_on, None)
    assert "the application could not write for" in out.stdout
    report, journal = report_of(seeded), journal_of(seeded)
    assert report["strategy"] == "swap" and report["status"] == "ok"
    assert report["downtime_seconds"] is not None and report["downtime_seconds"] < 5
    kept = journal["kept"]
    assert kept_exists(seeded, kept)
    if seeded.engine == "postgresql":  # closed for the swap: proven unwritten without reading the rows
        assert "write counters" in out.stdout or "no transaction committed" in out.stdout, out.stdout
    listing = run_inv("backups", *common(seeded), env=seeded.env)
    assert "old database kept as" in listing.stdout and "(swap)" in listing.stdout, listing.stdout
    # Asked without a terminal, the rollback refuses, and its question says what becomes of new writes.
    out = run_inv("rollback", *common(seeded), env=seeded.env)
    assert out.returncode != 0 and "stays in the new database, which is set aside" in out.stderr, out.stdout + out.stderr
    assert kept_exists(seeded, kept) and data_rows(seeded) == before
    out = run_inv("cleanup", *common(seeded), "--yes", env=seeded.env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"removed {kept}" in out.stdout and not kept_exists(seeded, kept)
    assert database_names(seeded) == (["db.sqlite3"] if seeded.engine == "sqlite" else [seeded.pg_db.name])
    out = run_inv("cleanup", *common(seeded), "--yes", env=seeded.env)
    assert out.returncode == 0 and "nothing to clean up" in out.stdout
    out = run_inv("rollback", *common(seeded), "--yes", env=seeded.env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "kept aside" not in out.stdout
    assert {k: v for k, v in seeded.rows().items() if k in before_all} == before_all and tree_digest(seeded.project) == files
    assert len(applied(seeded, "site_building")) > 1  # the old history's rows, as the backup had them
    assert access is None or access_rules(seeded) == access
    out = run_inv("rollback", *common(seeded), "--yes", env=seeded.env)  # once is enough
    assert out.returncode == 0 and "rolled back already" in out.stdout, out.stdout + out.stderr


def test_a_write_while_the_swap_builds_is_found_and_nothing_is_lost(seeded):
    """The application keeps writing during a swap's build: the write is found when the live
    database is closed for the swap, the new database is thrown away, and the row stays."""
    files = tree_digest(seeded.project)
    proc = start_reset(seeded, "pause:load:4", extra=("--strategy", "swap"))
    wait_for(lambda: (seeded.project.parent / "b").exists() and any(
        json.loads(p.read_text()).get("phase") == "load" for p in (seeded.project.parent / "b").glob("*/journal.json")),
        "the load", proc)
    seeded.damage([NEW_SETTING])  # the live database is open: the application writes
    after_write = seeded.rows()
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, out + err
    assert "written.during.reset" not in err  # names the table, not the row
    assert "changed system_setting" in err and "database was never changed" in err, err
    assert seeded.rows() == after_write  # the written row is there, nothing else changed
    assert tree_digest(seeded.project) == files
    expected = ["db.sqlite3"] if seeded.engine == "sqlite" else [seeded.pg_db.name]
    assert database_names(seeded) == expected  # no half-built database left beside
    if seeded.engine == "postgresql":  # open again for the application
        assert query(seeded, "SELECT count(*) FROM system_setting WHERE key = 'written.during.reset'") == [(1,)]


@pytest.mark.parametrize("moment", ["load", "swap", "swap-half"])
def test_a_swap_killed_while_it_copies_or_renames_is_rolled_back_exactly(pg_case, moment):
    """kill -9 during the copy, and between the two renames (no database under the live name)."""
    case = pg_case
    before_all, files = case.rows(), tree_digest(case.project)
    proc = start_reset(case, f"pause:{moment}", extra=("--strategy", "swap"))
    if moment == "swap-half":
        wait_for(lambda: any("__remigrate_old_" in n for n in database_names(case)), "the live database set aside", proc)
        assert case.pg_db.name not in database_names(case)  # the moment with the live name free
        with pytest.raises(psycopg.OperationalError, match="does not exist"):  # the application cannot write
            psycopg.connect(case.pg_db.url, connect_timeout=5).close()
    elif moment == "swap":  # closed for the swap, not yet renamed: the application's writes are refused
        wait_for(lambda: any(json.loads(p.read_text()).get("phase") == "swap"
                             for p in (case.project.parent / "b").glob("*/journal.json")), "the swap", proc)
        with pytest.raises(psycopg.OperationalError, match="not currently accepting connections"):
            psycopg.connect(case.pg_db.url, connect_timeout=5).close()
    else:
        wait_for(lambda: any(json.loads(p.read_text()).get("phase") == "load"
                             for p in (case.project.parent / "b").glob("*/journal.json")), "the load", proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    again = reset(case, *REMOVE, "--yes", "--strategy", "swap")
    assert again.returncode == 1 and "inv rollback" in again.stderr
    out = run_inv("rollback", *common(case), "--yes", env=case.env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert case.rows() == before_all and tree_digest(case.project) == files
    assert database_names(case) == [case.pg_db.name]
    with psycopg_admin(case.pg_db.cluster, "postgres") as conn:  # open to the application again
        assert conn.execute("SELECT datallowconn FROM pg_database WHERE datname = %s", [case.pg_db.name]).fetchone() == (True,)


def test_a_sqlite_swap_killed_while_it_replaces_the_live_file_is_rolled_back_exactly(sqlite_case):
    """kill -9 once the live file has its second name but is not replaced. (Killed during the
    copy, a SQLite swap is a rebuild killed during its load: test_reset's kill test.)"""
    case = sqlite_case
    before_all, files = case.rows(), tree_digest(case.project)
    proc = start_reset(case, "pause:sqlite-linked", extra=("--strategy", "swap"))
    wait_for(lambda: list(case.project.glob("db.sqlite3.remigrate-old-*")), "the live file kept under a second name", proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    out = run_inv("rollback", *common(case), "--yes", env=case.env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert case.rows() == before_all and tree_digest(case.project) == files
    assert database_names(case) == ["db.sqlite3"]


def test_a_wal_mode_sqlite_file_is_wal_again_after_a_swap_is_rolled_back(sqlite_case):
    case = sqlite_case
    db = case.project / "db.sqlite3"
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode=WAL").fetchone() == ("wal",)
    before_all = case.rows()
    out = reset(case, *REMOVE, "--yes", "--strategy", "swap")
    assert out.returncode == 0, out.stdout + out.stderr
    out = run_inv("rollback", *common(case), "--yes", env=case.env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert case.rows() == before_all
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def names_of(case):
    """SQLite: the index names of the planner's renamed model."""
    return sorted(r[0] for r in query(case, "SELECT name FROM sqlite_master WHERE type = 'index' "
                                            "AND tbl_name = 'planner_contentidea' AND sql IS NOT NULL"))


def test_fake_rewrites_only_the_history_renames_what_an_old_table_name_named_and_rolls_back(sqlite_case):
    """(PostgreSQL, with more renames to make: test_atelier_strategies' fake test.)"""
    seeded = sqlite_case
    before_all, before, files = seeded.rows(), data_rows(seeded), tree_digest(seeded.project)
    old_names = names_of(seeded)
    assert any("planner_idea" in n for n in old_names)  # named after the model's table before its RenameModel
    plan = reset(seeded, *REMOVE, "--dry-run", "--strategy", "fake")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "fake       possible" in plan.stdout and "rename index planner_idea_cluster_id" in plan.stdout
    out = reset(seeded, *REMOVE, "--yes", "--strategy", "fake")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "no row was moved" in out.stdout and "names included" in out.stdout
    assert data_rows(seeded) == before  # every row where it was
    new_names = names_of(seeded)
    assert not any("planner_idea" in n for n in new_names) and len(new_names) == len(old_names)
    assert applied(seeded, "site_building") == ["0001_initial"]
    assert "0002_remigrate_carried" in applied(seeded, "system")
    assert applied(seeded, "auth")[0] == "0001_initial" and len(applied(seeded, "auth")) > 5  # Django's own stay
    assert query(seeded, "SELECT count(*) FROM system_setting_keys") == [(5,)]  # the view is still there
    # The live database is what a fresh install from the new history makes, names included.
    assert manage(seeded.project, seeded.env, "makemigrations", "--check", "--dry-run") is not None
    fresh = seeded.project.parent / "fresh.sqlite3"
    manage(seeded.project, {"DB_PATH": str(fresh)}, "migrate", "-v0")
    with sqlite3.connect(fresh) as conn:
        fresh_names = sorted(r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'planner_contentidea' AND sql IS NOT NULL"))
    assert fresh_names == new_names
    # The application keeps writing; the rollback brings the dropped table back from the backup and
    # undoes the renames and the history in place: the row written since stays.
    seeded.damage([NEW_SETTING])
    out = run_inv("rollback", *common(seeded), "--yes", env=seeded.env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "made again from the backup" in out.stdout and "undone in place" in out.stdout, out.stdout
    assert query(seeded, "SELECT count(*) FROM system_setting WHERE key = 'written.during.reset'") == [(1,)]
    seeded.damage(["DELETE FROM system_setting WHERE key = 'written.during.reset'"])
    after = seeded.rows()
    for volatile in ("<sequences>", "sqlite_sequence"):  # the row's id was handed out
        after.pop(volatile, None), before_all.pop(volatile, None)
    assert after == before_all and tree_digest(seeded.project) == files
    assert names_of(seeded) == old_names


def test_a_fake_killed_at_any_point_is_rolled_back_exactly(sqlite_case):
    """Killed after its transaction committed. (Its PostgreSQL rollback in place: the
    fake-without-a-backup test; a fake refused on drift: test_atelier_strategies.)"""
    seeded = sqlite_case
    before_all, files = seeded.rows(), tree_digest(seeded.project)
    proc = start_reset(seeded, "pause:verify", extra=("--strategy", "fake"))  # after its transaction committed
    wait_for(lambda: any(json.loads(p.read_text()).get("phase") == "verify"
                         for p in (seeded.project.parent / "b").glob("*/journal.json")), "the verification", proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert applied(seeded, "site_building") == ["0001_initial"]  # it had committed
    out = run_inv("rollback", *common(seeded), "--yes", env=seeded.env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert seeded.rows() == before_all and tree_digest(seeded.project) == files


def test_the_strategy_is_checked_before_anything_runs(seeded):
    out = reset(seeded, *REMOVE, "--yes", "--strategy", "teleport")
    assert out.returncode != 0 and "choose one of rebuild, swap, fake" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_fake_without_a_backup_needs_the_database_name_and_rolls_back_in_place(seeded):
    name = "db.sqlite3" if seeded.engine == "sqlite" else seeded.pg_db.name
    # A fake that drops a table keeps that table, only, in its bundle (PostgreSQL: the rest of the
    # database is not dumped; SQLite: the whole file is copied, its backup anyway); its rollback
    # makes the table again with its rows.
    original_all, original_files = seeded.rows(), tree_digest(seeded.project)
    out = reset(seeded, *REMOVE, "--yes", "--strategy", "fake", "--no-backup", name)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "no row was moved" in out.stdout and WF_TABLE not in seeded.rows()
    first_out = out.stdout
    (bundle,) = [p.parent for p in (seeded.project.parent / "b").glob("*/journal.json")]
    manifest = json.loads((bundle / "manifest.json").read_text())
    later = run_inv("verify", *common(seeded), env=seeded.env)  # later: the fake's proof, or the rows where it has them
    assert later.returncode == 0, later.stdout + later.stderr
    assert ("holds no rows to compare" in later.stdout) == (seeded.engine == "postgresql"), later.stdout
    # The history is fresh now: the next fake drops no table, and without a backup keeps no dump at all.
    history = query(seeded, "SELECT id, app, name, applied FROM django_migrations ORDER BY id")
    before_all, files = seeded.rows(), tree_digest(seeded.project)
    out = reset(seeded, "--yes", "--strategy", "rebuild", "--no-backup", name)
    assert out.returncode == 1 and "only with --strategy fake" in out.stderr
    out = reset(seeded, "--yes", "--strategy", "fake", "--no-backup", "not-the-name")
    assert out.returncode == 1 and f"type the database's name ({name})" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    out = reset(seeded, "--yes", "--strategy", "fake", "--no-backup", name)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "no database dump" in out.stdout and "no row was moved" in out.stdout
    newest = max((seeded.project.parent / "b").glob("*/journal.json"), key=lambda p: p.stat().st_mtime).parent
    assert newest != bundle
    assert sorted(p.name for p in newest.iterdir()) == ["fake-proof.json", "fake-undo.json", "journal.json",
                                                         "manifest.json", "migrations.tar.gz", "report.json"]
    assert data_rows(seeded) == {k: v for k, v in before_all.items() if k in data_rows(seeded)}
    assert query(seeded, "SELECT id, app, name, applied FROM django_migrations ORDER BY id") != history
    out = run_inv("restore", *common(seeded), "--backup", newest.name, "--yes", env=seeded.env)
    assert out.returncode == 1 and "holds no database dump (a fake reset run with --no-backup)" in out.stderr, out.stderr
    out = run_inv("restore", *common(seeded), "--yes", env=seeded.env)  # the newest is never passed over unasked
    assert out.returncode == 1 and "does not hold the whole database" in out.stderr, out.stderr
    assert (f"the newest that can is {bundle.name}: name it with --backup" if seeded.engine == "sqlite"
            else "no bundle here can; take one with `inv backup`") in out.stderr, out.stderr
    out = run_inv("rollback", *common(seeded), "--yes", env=seeded.env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "undone in place" in out.stdout
    assert query(seeded, "SELECT id, app, name, applied FROM django_migrations ORDER BY id") == history
    assert seeded.rows() == before_all and tree_digest(seeded.project) == files
    # Back to the first fake's bundle, which holds the dropped table and no more.
    if seeded.engine == "postgresql":
        assert manifest["dump"]["scope"] == [WF_TABLE] and "tables the fake drops" in first_out
        out = run_inv("restore", *common(seeded), "--yes", env=seeded.env)  # never taken for the newest backup
        assert out.returncode == 1 and "no bundle here can; take one with `inv backup`" in out.stderr, out.stderr
        out = run_inv("restore", *common(seeded), "--backup", bundle.name, "--yes", env=seeded.env)
        assert out.returncode == 1 and "holds only the tables a fake reset dropped (igny8_site" in out.stderr, out.stderr
        # without the journal that says what the fake did, it is never taken for a whole database to put back
        journal = (bundle / "journal.json").read_bytes()
        (bundle / "journal.json").unlink()
        out = run_inv("rollback", *common(seeded), "--backup", bundle.name, "--yes", env=seeded.env)
        assert out.returncode == 1 and "no journal of that fake reset" in out.stderr, out.stdout + out.stderr
        assert WF_TABLE not in seeded.rows() and "planner_keyword" in seeded.rows()  # nothing touched
        (bundle / "journal.json").write_bytes(journal)
    else:
        assert "scope" not in manifest["dump"] and manifest["dump"]["file"] == "db.sqlite3"
    out = run_inv("rollback", *common(seeded), "--backup", bundle.name, "--yes", env=seeded.env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"{WF_TABLE} made again from the backup" in out.stdout
    assert seeded.rows() == original_all and tree_digest(seeded.project) == original_files
