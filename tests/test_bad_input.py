"""Bad input: one clear line on stderr, a non-zero exit, and nothing lost or half-written."""
import os
import shutil
import time
from pathlib import Path

import pytest
from conftest import NASTY_PASSWORD, PYTHON, pg_rows, run_inv, sqlite_rows
from servers import free_port
from test_backup import bundles_in, damage_pg, inv_ok, only_bundle


def fails(*args, env=None, expect):
    out = run_inv(*args, env=env)
    assert out.returncode != 0, out.stdout
    lines = [ln for ln in out.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, out.stderr  # one line, no traceback
    assert expect in lines[0], lines[0]
    return lines[0]


def nothing_written(folder):
    folder = Path(folder)
    return not folder.exists() or not any(folder.iterdir())


def test_unknown_engine_is_refused_with_the_supported_list(project, tmp_path):
    env = {"DB_ENGINE": "django.db.backends.oracle", "DB_NAME": "orcl"}
    line = fails("backup", "--project-dir", str(project), "--backup-dir", str(tmp_path / "b"), env=env, expect="not supported")
    assert "django.db.backends.postgresql" in line and "django.db.backends.sqlite3" in line
    assert nothing_written(tmp_path / "b")


def test_unreachable_server_fails_at_once(project, tmp_path):
    env = {"DATABASE_URL": f"postgres://app:pw@127.0.0.1:{free_port()}/nowhere"}
    start = time.monotonic()
    fails("backup", "--project-dir", str(project), "--backup-dir", str(tmp_path / "b"), env=env, expect="cannot reach PostgreSQL at 127.0.0.1")
    assert time.monotonic() - start < 60
    assert nothing_written(tmp_path / "b")


def test_wrong_password_fails_at_once_without_prompting(project, pg_db, tmp_path):
    env = {"DATABASE_URL": pg_db.url.replace("%40", "%41")}
    start = time.monotonic()
    fails("backup", "--project-dir", str(project), "--backup-dir", str(tmp_path / "b"), env=env, expect="password authentication failed")
    assert time.monotonic() - start < 60
    assert nothing_written(tmp_path / "b")


def test_missing_pg_dump_is_named_with_how_to_install_it(pg_project, tmp_path):
    project, env, db = pg_project
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sh", "bash", "env", "mktemp", "rm", "test", "cat", "chmod", "mkdir", "psql", "pg_restore"):
        os.symlink(shutil.which(tool), bin_dir / tool)
    fails("backup", "--project-dir", str(project), "--python", PYTHON, "--backup-dir", str(tmp_path / "b"),
          env={**env, "PATH": str(bin_dir)}, expect="pg_dump not found")
    assert nothing_written(tmp_path / "b")


def test_malformed_database_url_is_one_line_without_the_password(project, tmp_path):
    env = {"DATABASE_URL": "postgres://app:Sup3rSecret@127.0.0.1:notaport/db"}
    line = fails("backup", "--project-dir", str(project), "--backup-dir", str(tmp_path / "b"), env=env, expect="settings failed to load")
    assert "Sup3rSecret" not in line
    assert nothing_written(tmp_path / "b")


def test_db_variables_from_dotenv_with_a_nasty_password_work(project, pg_db, tmp_path):
    escaped = NASTY_PASSWORD.replace("\\", "\\\\").replace('"', '\\"')
    (project / ".env").write_text(
        "DB_ENGINE=django.db.backends.postgresql\n"
        f"DB_NAME={pg_db.name}\nDB_USER={pg_db.role}\nDB_HOST=127.0.0.1\nDB_PORT={pg_db.cluster.port}\n"
        f'DB_PASSWORD="{escaped}"\n'
    )
    out = inv_ok("detect", "--project-dir", str(project))
    assert "DB_PASSWORD (.env)" in out.stdout and "DB_PORT (.env)" in out.stdout
    assert NASTY_PASSWORD not in out.stdout
    inv_ok("backup", "--project-dir", str(project), "--backup-dir", str(tmp_path / "b"))
    assert len(bundles_in(tmp_path / "b")) == 1


def test_environment_wins_over_dotenv(sqlite_project, tmp_path):
    project, env = sqlite_project
    (project / ".env").write_text("DB_PATH=/nonexistent/other.sqlite3\n")
    out = inv_ok("detect", "--project-dir", str(project), env=env)
    assert str(project / "db.sqlite3") in out.stdout and "DB_PATH (environment)" in out.stdout


def test_unwritable_backup_folder_is_refused_before_anything(sqlite_project, tmp_path):
    project, env = sqlite_project
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    fails("backup", "--project-dir", str(project), "--backup-dir", str(blocker / "backups"), env=env, expect="not writable")


def test_missing_project_folder_is_named(tmp_path):
    fails("backup", "--project-dir", str(tmp_path / "nope"), expect="does not exist")


@pytest.mark.parametrize("damage", ["truncate", "bitflip"])
def test_damaged_dump_is_refused_before_the_database_is_touched(pg_project, tmp_path, damage):
    project, env, db = pg_project
    inv_ok("backup", "--project-dir", str(project), "--backup-dir", str(tmp_path / "b"), env=env)
    dump = only_bundle(tmp_path / "b") / "db.dump"
    data = bytearray(dump.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 2] ^= 0x01
    dump.write_bytes(bytes(data))
    damage_pg(db)
    changed = pg_rows(db)
    fails("restore", "--project-dir", str(project), "--backup-dir", str(tmp_path / "b"), "--yes", env=env, expect="failed verification")
    assert pg_rows(db) == changed
    assert len(bundles_in(tmp_path / "b")) == 1  # not even a safety backup was needed


def test_damaged_dump_is_refused_even_with_a_forged_manifest(pg_project, tmp_path):
    """Checksums updated to match a truncated dump: the full read still catches it."""
    import hashlib
    import json

    project, env, db = pg_project
    inv_ok("backup", "--project-dir", str(project), "--backup-dir", str(tmp_path / "b"), env=env)
    bundle = only_bundle(tmp_path / "b")
    dump = bundle / "db.dump"
    dump.write_bytes(dump.read_bytes()[:-2000])
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"]["db.dump"] = {"size": dump.stat().st_size, "sha256": hashlib.sha256(dump.read_bytes()).hexdigest()}
    from tasks.bundle import seal

    (bundle / "manifest.json").write_text(json.dumps(seal(manifest)))  # even its own checksum forged
    before = pg_rows(db)
    fails("restore", "--project-dir", str(project), "--backup-dir", str(tmp_path / "b"), "--yes", env=env, expect="unreadable")
    assert pg_rows(db) == before


def test_bundle_of_another_engine_is_refused(sqlite_project, pg_db, tmp_path):
    project, env = sqlite_project
    inv_ok("backup", "--project-dir", str(project), "--backup-dir", str(tmp_path / "b"), env=env)
    fails("restore", "--project-dir", str(project), "--backup-dir", str(tmp_path / "b"), "--yes", env=pg_db.env(),
          expect="the bundles there are of other databases")  # never the default
    name = only_bundle(tmp_path / "b").name
    fails("restore", "--project-dir", str(project), "--backup-dir", str(tmp_path / "b"), "--backup", name, "--yes",
          env=pg_db.env(), expect="holds a sqlite database but this project uses postgresql")


def test_restore_without_terminal_or_yes_refuses_and_changes_nothing(sqlite_project, tmp_path):
    project, env = sqlite_project
    inv_ok("backup", "--project-dir", str(project), "--backup-dir", str(tmp_path / "b"), env=env)
    db = project / "db.sqlite3"
    import sqlite3

    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM planner_keyword")
    before = sqlite_rows(db)
    fails("restore", "--project-dir", str(project), "--backup-dir", str(tmp_path / "b"), env=env, expect="pass --yes")
    assert sqlite_rows(db) == before


def test_restore_with_no_bundle_says_how_to_make_one(sqlite_project, tmp_path):
    project, env = sqlite_project
    fails("restore", "--project-dir", str(project), "--backup-dir", str(tmp_path / "empty"), "--yes", env=env, expect="inv backup")
