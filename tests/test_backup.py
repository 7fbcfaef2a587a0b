"""Backup, list and restore against a real SQLite file and a real PostgreSQL server."""
import json
import sqlite3
import stat
import subprocess
from pathlib import Path

from conftest import pg_rows, run_inv

from tasks.backup import choose_compression
from tasks.bundle import MANIFEST


def bundles_in(folder):
    return sorted(p for p in Path(folder).iterdir() if p.is_dir() and not p.name.startswith("."))


def only_bundle(folder):
    found = bundles_in(folder)
    assert len(found) == 1, found
    return found[0]


def inv_ok(*args, env=None):
    out = run_inv(*args, env=env)
    assert out.returncode == 0, f"stdout:\n{out.stdout}\nstderr:\n{out.stderr}"
    return out


# Deleted, changed and new rows, a table made and a table dropped after the backup.
DAMAGE = [
    "DELETE FROM optimization_optimizationtask WHERE id % 2 = 0",
    "UPDATE planner_keyword SET phrase = 'changed'",
    "INSERT INTO system_setting (key, value) VALUES ('after.backup', '1')",
    "CREATE TABLE made_after_backup (id integer primary key, ref bigint REFERENCES writer_task(id))",
    "DROP TABLE igny8_site_blueprint_workflow_states",
]


def damage_pg(db):
    with db.connect() as conn:
        for statement in DAMAGE:
            conn.execute(statement)


def test_backup_then_restore_brings_back_every_row_and_sequence(seeded, tmp_path):
    backups = tmp_path / "backups"
    before = seeded.rows()
    inv_ok("backup", "--project-dir", str(seeded.project), "--backup-dir", str(backups), env=seeded.env)
    seeded.damage(DAMAGE)
    assert seeded.rows() != before
    out = inv_ok("restore", "--project-dir", str(seeded.project), "--backup-dir", str(backups), "--yes", env=seeded.env)
    assert "content matches" in out.stdout
    assert seeded.rows() == before
    # the state before the restore was saved too
    kinds = sorted(json.loads((b / MANIFEST).read_text())["kind"] for b in bundles_in(backups))
    assert kinds == ["backup", "pre-restore"]


def test_sqlite_backup_of_a_wal_database_keeps_uncheckpointed_rows(sqlite_project, tmp_path):
    project, env = sqlite_project
    db = project / "db.sqlite3"
    writer = sqlite3.connect(db)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")
    with writer:
        writer.execute("INSERT INTO system_setting (key, value) VALUES ('only.in.wal', '42')")
    assert Path(f"{db}-wal").stat().st_size > 0
    inv_ok("backup", "--project-dir", str(project), "--backup-dir", str(tmp_path / "b"), env=env)
    copy = only_bundle(tmp_path / "b") / "db.sqlite3"
    rows = sqlite3.connect(copy).execute("SELECT value FROM system_setting WHERE key = 'only.in.wal'").fetchall()
    writer.close()
    assert rows == [("42",)]


def test_inv_backup_restore_is_a_round_trip_with_shared_config(pg_project, tmp_path):
    project, env, db = pg_project
    before = pg_rows(db)
    env = {**env, "INVOKE_REMIGRATE_PROJECT_DIR": str(project), "INVOKE_REMIGRATE_BACKUP_DIR": str(tmp_path / "b")}
    out = inv_ok("backup", "restore", "--yes", "--no-safety-backup", env=env)
    assert "verified" in out.stdout and "content matches" in out.stdout
    assert pg_rows(db) == before
    assert len(bundles_in(tmp_path / "b")) == 1


def test_bundle_holds_manifest_dump_and_migrations_readable_by_owner_only(pg_project, tmp_path):
    project, env, db = pg_project
    inv_ok("backup", "--project-dir", str(project), "--backup-dir", str(tmp_path / "b"), env=env)
    bundle = only_bundle(tmp_path / "b")
    assert sorted(p.name for p in bundle.iterdir()) == ["db.dump", "manifest.json", "migrations.tar.gz"]
    for path in [bundle, *bundle.iterdir()]:
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path
    manifest = json.loads((bundle / MANIFEST).read_text())
    assert manifest["engine"] == "postgresql"
    assert manifest["database"]["properties"]["owner"] == db.role
    assert manifest["database"]["tables"]["igny8_site_blueprint_workflow_states"] == 10
    assert manifest["database"]["server_version"].startswith("15")
    seqs = {(s["table"], s["column"]): s for s in manifest["database"]["sequences"]}
    assert seqs[("planner_keyword", "id")]["high_water"] == 60  # deleted rows leave it above max(id)
    assert seqs[("planner_contentidea", "id")]["sequence"] == "public.planner_idea_id_seq"  # renamed model
    assert ["site_building", "0003_workflow_and_taxonomies"] in manifest["applied_migrations"]
    assert "igny8_core/business/site_building/migrations/0003_workflow_and_taxonomies.py" in manifest["migrations_archive"]["files"]
    assert "igny8_core/modules/system/migrations/default_settings.csv" in manifest["migrations_archive"]["files"]
    assert set(manifest["files"]) == {"db.dump", "migrations.tar.gz"}
    # the folder has room: not compressed (pg_dump's deflate is most of its time), and said so
    assert manifest["dump"]["compress"] == "0" and manifest["database"]["content_digest"] == "hash-bytes"
    listing = subprocess.run(["pg_restore", "--list", str(bundle / "db.dump")], capture_output=True, text=True).stdout
    assert "Compression: 0" in listing


def test_compression_is_chosen_by_the_room_in_the_backup_folder():
    gib = 1 << 30
    assert choose_compression("auto", 20 * gib, 4 * gib)[0] == "0"
    level, why = choose_compression("auto", 15 * gib, 4 * gib)
    assert level == "1" and "15.0 GiB free is less than 4 times the database (4.0 GiB)" in why
    assert choose_compression("zstd:3", 1, 4 * gib)[0] == "zstd:3"  # asked for: never overruled


def test_a_compressed_backup_is_asked_for_by_flag(pg_project, tmp_path):
    project, env, db = pg_project
    out = inv_ok("backup", "--project-dir", str(project), "--backup-dir", str(tmp_path / "b"), "--compress", "1", env=env)
    assert "--compress 1" in out.stdout
    bundle = only_bundle(tmp_path / "b")
    assert json.loads((bundle / MANIFEST).read_text())["dump"]["compress"] == "1"
    listing = subprocess.run(["pg_restore", "--list", str(bundle / "db.dump")], capture_output=True, text=True).stdout
    assert "Compression: 1" in listing


def test_backups_lists_bundles_and_names_never_collide(sqlite_project, tmp_path):
    project, env = sqlite_project
    for _ in range(2):
        inv_ok("backup", "--project-dir", str(project), "--backup-dir", str(tmp_path / "b"), env=env)
    assert len(bundles_in(tmp_path / "b")) == 2
    out = inv_ok("backups", "--project-dir", str(project), "--backup-dir", str(tmp_path / "b"), env=env)
    assert out.stdout.count("ok (sizes match)") == 2 and "sqlite" in out.stdout
    # a rollback (or a later verify) needs a reset's bundle, and says these are not
    out = run_inv("rollback", "--project-dir", str(project), "--backup-dir", str(tmp_path / "b"), "--yes", env=env)
    assert out.returncode == 1 and ("this database's bundles there: 2 backup; none of a reset that can be used; "
                                    "`inv restore` puts a plain backup back") in out.stderr, out.stderr


def test_restore_by_name_picks_that_bundle(seeded, tmp_path):
    common = ["--project-dir", str(seeded.project), "--backup-dir", str(tmp_path / "b")]
    first = seeded.rows()
    inv_ok("backup", *common, env=seeded.env)
    name = only_bundle(tmp_path / "b").name
    seeded.damage(DAMAGE)
    inv_ok("backup", *common, env=seeded.env)
    inv_ok("restore", *common, "--backup", name, "--yes", "--no-safety-backup", env=seeded.env)
    assert seeded.rows() == first


def test_default_backup_folder_lives_in_the_project_and_is_ignored_by_git(sqlite_project):
    project, env = sqlite_project
    inv_ok("backup", "--project-dir", str(project), env=env)
    assert len(bundles_in(project / ".remigrate" / "backups")) == 1
    assert (project / ".remigrate" / ".gitignore").read_text().strip().endswith("*")
