"""The same tasks on a host over SSH: fab -H against a real OpenSSH server the tests start."""
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time

import pytest
from conftest import NASTY_PASSWORD, PYTHON, REPO, SAMPLE, PgDb, pg_copy, pg_rows, run_inv, sqlite_rows
from servers import ssh_server
from test_reset import REMOVE, WF_TABLE, tree_digest
from test_secrets import ArgvWatcher

HOST = "remigrate-test-host"


@pytest.fixture(scope="session")
def ssh():
    with ssh_server() as server:
        yield server


def make_host_project(folder, env_lines):
    """A deployed copy of the sample project on the "host": its own folder, its own virtualenv
    path (remote commands get no virtualenv on PATH) and its own .env."""
    project = folder / "srv" / "igny8"
    shutil.copytree(SAMPLE, project, ignore=shutil.ignore_patterns("__pycache__", "*.sqlite3", ".env", ".remigrate"))
    venv_bin = project / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "python").write_text(f'#!/bin/sh\nexec {PYTHON} "$@"\n')
    (venv_bin / "python").chmod(0o755)
    (project / ".env").write_text("".join(f"{line}\n" for line in env_lines))
    return project


@pytest.fixture(params=["sqlite", "postgresql"])
def host_case(request, tmp_path, seeded_sqlite_file):
    if request.param == "sqlite":
        db_path = tmp_path / "srv" / "host.sqlite3"
        project = make_host_project(tmp_path, [f"DB_PATH={db_path}"])
        shutil.copyfile(seeded_sqlite_file, db_path)
        return "sqlite", project, (lambda: sqlite_rows(db_path)), None
    db = request.getfixturevalue("pg_db")
    pg_copy(db, request.getfixturevalue("seeded_pg_template"))
    escaped = NASTY_PASSWORD.replace("\\", "\\\\").replace('"', '\\"')
    project = make_host_project(tmp_path, ["DB_ENGINE=django.db.backends.postgresql", f"DB_NAME={db.name}", f"DB_USER={db.role}",
                                           "DB_HOST=127.0.0.1", f"DB_PORT={db.cluster.port}", f'DB_PASSWORD="{escaped}"'])
    return "postgresql", project, (lambda: pg_rows(db)), db


def fab(ssh, *args, hosts=HOST, ssh_config=None, config=None, timeout=300, env=None):
    argv = [PYTHON, "-m", "fabric", "-S", str(ssh_config or ssh.ssh_config)]
    if config:
        argv += ["-f", str(config)]
    argv += ["-H", hosts, *args]
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                          env={**os.environ, **(env or {})})


def data(rows):
    return {k: v for k, v in rows.items() if k not in ("django_migrations", WF_TABLE, "<sequences>", "sqlite_sequence")}


@pytest.mark.parametrize("host_case", ["postgresql"], indirect=True)  # (SQLite: the two-hosts test reads the .env)
def test_detect_on_the_host_uses_the_hosts_interpreter_and_env_file(ssh, host_case):
    engine, project, rows, db = host_case
    out = fab(ssh, "detect", "--project-dir", str(project))
    assert out.returncode == 0, out.stderr
    assert f"{project}/.venv/bin/python" in out.stdout and f"({HOST})" in out.stdout
    assert "(.env)" in out.stdout
    assert NASTY_PASSWORD not in out.stdout + out.stderr


def assert_fetched_as_made(project, fetched, engine):
    """The bundle made on the host is also here, and identical."""
    host_bundle = next((project / ".remigrate" / "backups").iterdir())
    local = fetched / HOST / host_bundle.name
    for name in ("db.dump" if engine == "postgresql" else "db.sqlite3", "migrations.tar.gz", "manifest.json"):
        assert hashlib.sha256((local / name).read_bytes()).hexdigest() == hashlib.sha256((host_bundle / name).read_bytes()).hexdigest()


@pytest.mark.parametrize("host_case", ["postgresql"], indirect=True)  # SQLite: the pushed bundle's test below
def test_remote_backup_then_restore_round_trip(ssh, host_case, tmp_path):
    engine, project, rows, db = host_case
    before = rows()
    out = fab(ssh, "backup", "--project-dir", str(project), "--fetch-dir", str(tmp_path / "f"))
    assert out.returncode == 0, out.stderr
    assert "copied to this machine and checked" in out.stdout
    with db.connect() as conn:
        conn.execute("DELETE FROM planner_keyword")
    assert rows() != before
    out = fab(ssh, "restore", "--project-dir", str(project), "--yes", "--no-safety-backup")
    assert out.returncode == 0, out.stdout + out.stderr
    assert rows() == before


def test_a_local_bundle_is_pushed_to_the_host_for_restore(ssh, tmp_path, seeded_sqlite_file):
    db_path = tmp_path / "srv" / "host.sqlite3"
    project = make_host_project(tmp_path, [f"DB_PATH={db_path}"])
    shutil.copyfile(seeded_sqlite_file, db_path)
    before = sqlite_rows(db_path)
    assert fab(ssh, "backup", "--project-dir", str(project), "--fetch-dir", str(tmp_path / "f")).returncode == 0
    shutil.rmtree(project / ".remigrate")  # the host lost its bundles
    db_path.unlink()
    shutil.copyfile(seeded_sqlite_file, db_path)
    import sqlite3

    with sqlite3.connect(db_path) as conn:
        conn.execute("DELETE FROM writer_task")
    local = next((tmp_path / "f" / HOST).iterdir())
    out = fab(ssh, "restore", "--project-dir", str(project), "--backup", str(local), "--yes", "--no-safety-backup")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "uploaded" in out.stdout and sqlite_rows(db_path) == before


def test_an_unknown_host_key_is_refused(ssh, tmp_path, seeded_sqlite_file):
    project = make_host_project(tmp_path, [f"DB_PATH={tmp_path / 'x.sqlite3'}"])
    config = tmp_path / "ssh_config"
    (tmp_path / "empty_known_hosts").write_text("")
    config.write_text(ssh.ssh_config.read_text().replace(str(ssh.known_hosts), str(tmp_path / "empty_known_hosts")))
    out = fab(ssh, "backup", "--project-dir", str(project), ssh_config=config)
    assert out.returncode == 1
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "not found in known_hosts" in lines[0] and "ssh-keyscan" in lines[0], out.stderr
    assert not (project / ".remigrate").exists()


def test_a_wrong_project_folder_on_the_host_fails_before_anything(ssh, tmp_path):
    out = fab(ssh, "reset", "--project-dir", str(tmp_path / "no-such-project"), *REMOVE, "--yes")
    assert out.returncode == 1
    assert f"does not exist on {HOST}" in out.stderr


def test_two_hosts_the_second_failing_preflight_leaves_it_untouched(ssh, tmp_path, seeded_sqlite_file):
    db_path = tmp_path / "srv" / "host.sqlite3"
    project = make_host_project(tmp_path, [f"DB_PATH={db_path}"])
    shutil.copyfile(seeded_sqlite_file, db_path)
    config = tmp_path / "ssh_config"
    config.write_text(ssh.ssh_config.read_text() + ssh.ssh_config.read_text().replace(f"Host {HOST}", f"Host {HOST}-2"))
    settings = tmp_path / "fabric.yaml"
    settings.write_text(f"remigrate:\n  hosts:\n    {HOST}:\n      project_dir: {project}\n"
                        f"    {HOST}-2:\n      project_dir: {tmp_path / 'missing'}\n")
    before, fetched = data(sqlite_rows(db_path)), tmp_path / "fetched"
    out = fab(ssh, "reset", *REMOVE, "--yes", "--fetch-dir", str(fetched), hosts=f"{HOST},{HOST}-2", ssh_config=config,
              config=settings)
    assert out.returncode == 1
    assert "reset done" in out.stdout  # the first host, configured in fabric.yaml's hosts section
    assert data(sqlite_rows(db_path)) == before
    assert sorted(p.name for p in (project / "igny8_core/business/site_building/migrations").glob("0*.py")) == ["0001_initial.py"]
    assert_fetched_as_made(project, fetched, "sqlite")
    assert f"does not exist on {HOST}-2" in out.stderr
    summary = out.stdout[out.stdout.index("per-host summary"):]
    assert f"{HOST}    reset  ok" in summary and f"{HOST}-2  reset  FAILED: remigrate: error: project folder" in summary


# Resume after a kill is proven on both engines locally (test_reset.py), rollback after a kill
# on SQLite there and on PostgreSQL between drop and create (test_faults.py); here what is remote:
# the SSH connection dying with the client mid-load, on one engine each.
@pytest.mark.parametrize("host_case, finish", [("postgresql", "rollback"), ("sqlite", "resume")], indirect=["host_case"])
def test_connection_dropped_during_the_load_then_the_host_is_recovered(ssh, host_case, finish):
    engine, project, rows, db = host_case
    before, files = rows(), tree_digest(project)
    argv = [PYTHON, "-m", "fabric", "-S", str(ssh.ssh_config), "-H", HOST, "reset", "--project-dir", str(project), *REMOVE,
            "--yes", "--no-fetch"]
    proc = subprocess.Popen(argv, cwd=REPO, env={**os.environ, "REMIGRATE_FAULT": "pause:load"}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        journals = list((project / ".remigrate" / "backups").glob("*/journal.json")) if (project / ".remigrate").exists() else []
        if journals and json.loads(journals[0].read_text()).get("phase") == "load":
            break
        time.sleep(0.2)
    else:
        pytest.fail("the remote reset never reached the load")
    os.killpg(proc.pid, signal.SIGKILL)  # the SSH connection dies with the client
    proc.wait()
    if finish == "rollback":
        out = fab(ssh, "rollback", "--project-dir", str(project), "--yes")
        assert out.returncode == 0, out.stdout + out.stderr
        assert rows() == before and tree_digest(project) == files
    else:
        out = fab(ssh, "reset", "--resume", "--project-dir", str(project), "--yes")
        assert out.returncode == 0, out.stdout + out.stderr
        assert data(rows()) == data(before) and "reset done" in out.stdout


# The carried migration matters most where production runs PostgreSQL; the same task code runs on SQLite.
@pytest.mark.parametrize("host_case", ["postgresql"], indirect=True)
def test_deployed_new_history_resets_only_the_database(ssh, host_case, tmp_path, seeded_pg_template):
    engine, project, rows, db = host_case
    before = data(rows())
    # On a laptop: a reset regenerates the migrations (this is what gets committed and deployed),
    # on the engine production runs (what the old history made there is carried over).
    laptop = tmp_path / "laptop" / "igny8"
    shutil.copytree(SAMPLE, laptop, ignore=shutil.ignore_patterns("__pycache__", "*.sqlite3", ".env", ".remigrate"))
    local = PgDb(db.cluster, db.name + "_laptop", db.role + "_laptop", NASTY_PASSWORD)
    db.cluster.create_app_database(local.name, local.role, local.password, createdb=True)
    local_env = local.env()
    pg_copy(local, seeded_pg_template)

    out = run_inv("reset", "--project-dir", str(laptop), *REMOVE, "--yes", env=local_env)
    assert out.returncode == 0, out.stdout + out.stderr
    for migrations in laptop.glob("igny8_core/**/migrations"):
        target = project / migrations.relative_to(laptop)
        for old in target.glob("0*.py"):
            old.unlink()
        for new in migrations.glob("0*"):  # the carried-over migration's data file comes along
            shutil.copyfile(new, target / new.name)
    out = fab(ssh, "reset", "--project-dir", str(project), *REMOVE, "--yes", "--no-fetch")
    assert out.returncode == 1 and "--drop-table" in out.stderr  # the old history is gone from the host
    out = fab(ssh, "reset", "--project-dir", str(project), "--drop-table", WF_TABLE, "--yes", "--no-fetch")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "already a fresh history" in out.stdout
    assert data(rows()) == before



# The strategies are proven on both engines locally (test_strategies.py, test_atelier_strategies.py);
# here that they work through fab -H: the swap (a rename of databases) and its rollback by rename on
# PostgreSQL, the fake on SQLite. (The rebuild through fab -H: the two-hosts test on SQLite, the
# deployed-history and dropped-connection tests on PostgreSQL.)
@pytest.mark.parametrize("host_case", ["postgresql"], indirect=True)
def test_a_swap_on_a_host_keeps_every_row_copies_the_backup_here_and_rolls_back_by_rename(ssh, host_case, tmp_path):
    engine, project, rows, db = host_case
    before_all, before, fetched = rows(), data(rows()), tmp_path / "f"
    watcher = ArgvWatcher()
    watcher.start()
    try:
        out = fab(ssh, "reset", "--project-dir", str(project), "--fetch-dir", str(fetched), *REMOVE, "--yes", "--strategy", "swap")
    finally:
        watcher.stop.set()
        watcher.join()
    assert out.returncode == 0, out.stdout + out.stderr
    assert "the application could not write for" in out.stdout and data(rows()) == before
    assert sorted(p.name for p in (project / "igny8_core/business/site_building/migrations").glob("0*.py")) == ["0001_initial.py"]
    assert_fetched_as_made(project, fetched, engine)
    # the password never travelled in a command line, and was never printed
    for cmdline in watcher.seen:
        assert NASTY_PASSWORD not in cmdline and "p@ss:w" not in cmdline
    assert NASTY_PASSWORD not in out.stdout + out.stderr
    out = fab(ssh, "rollback", "--project-dir", str(project), "--yes")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "kept aside by the swap is back" in out.stdout and rows() == before_all
    out = fab(ssh, "cleanup", "--project-dir", str(project), "--yes")  # the new database the rollback set aside
    assert out.returncode == 0 and "removed" in out.stdout, out.stdout + out.stderr


@pytest.mark.parametrize("host_case", ["sqlite"], indirect=True)
def test_a_fake_on_a_host_rewrites_the_history_only(ssh, host_case, tmp_path):
    engine, project, rows, db = host_case
    before = data(rows())
    out = fab(ssh, "reset", "--project-dir", str(project), "--fetch-dir", str(tmp_path / "f"), *REMOVE, "--yes", "--strategy", "fake")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "no row was moved" in out.stdout and data(rows()) == before
    assert sorted(p.name for p in (project / "igny8_core/business/site_building/migrations").glob("0*.py")) == ["0001_initial.py"]
    assert (tmp_path / "f" / HOST).is_dir()  # its backup came here too


def test_files_written_on_a_host_are_private_and_replaced_whole(ssh, tmp_path):
    """A host's files go over the open SFTP session (a command costs a new SSH session and the
    login shell's start-up): 0600 from their first byte, never over a file unasked, replaced by a
    rename; what `test -e/-f/-d` and `cd && pwd -P` would answer, answered the same."""
    import pwd
    import stat

    from fabric import Config, Connection
    from paramiko import SFTPClient
    from paramiko.sftp_file import SFTPFile

    from tasks.console import RemigrateError
    from tasks.target import Target, write_private_sftp

    with Connection(HOST, config=Config(runtime_ssh_path=str(ssh.ssh_config))) as c:
        t = Target(c)
        assert t.remote
        folder = tmp_path / "private"
        folder.mkdir(mode=0o700)
        path = folder / "journal.json"
        t.write_private(path, '{"phase": "backup"}')
        assert path.read_text() == '{"phase": "backup"}' and stat.S_IMODE(path.stat().st_mode) == 0o600
        with pytest.raises(RemigrateError, match="journal.json on remigrate-test-host: it exists already"):
            t.write_private(path, "over it")  # only with replace
        t.write_private(path, '{"phase": "load"}', replace=True)
        assert path.read_text() == '{"phase": "load"}' and stat.S_IMODE(path.stat().st_mode) == 0o600
        assert sorted(p.name for p in folder.iterdir()) == ["journal.json"]
        assert t.exists(path) and t.exists(path, "-f") and not t.exists(path, "-d")
        assert t.exists(folder, "-d") and not t.exists(folder, "-f") and not t.exists(folder / "gone")
        (tmp_path / "link").symlink_to(folder)
        assert t.real_dir(str(tmp_path / "link")) == str(folder.resolve())
        assert t.real_dir(str(path)) == "" and t.real_dir(str(folder / "gone")) == ""
        assert t.home == pwd.getpwnam(ssh.user).pw_dir
        # 0600 from the OPEN request itself, before any chmod (paramiko's own open sends no mode)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(SFTPFile, "chmod", lambda self, mode: None)
            with t.sftp() as sftp:
                write_private_sftp(sftp, str(folder / "pgpass"), b"*:*:*:*:secret")
        assert stat.S_IMODE((folder / "pgpass").stat().st_mode) == 0o600
        # a dead SFTP session (the connection dropped and came back) is opened again, not taken for "no file"
        c.sftp().close()
        assert t.exists(path, "-f") and t.real_dir(str(folder)) == str(folder.resolve())
        t.write_private(path, "{}", replace=True)
        assert path.read_text() == "{}"
        # a server without posix-rename: the file is still replaced whole (by mv), and stays 0600
        def no_posix_rename(self, old, new):
            raise OSError("posix-rename@openssh.com is not supported")

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(SFTPClient, "posix_rename", no_posix_rename)
            t.write_private(path, '{"phase": "swap"}', replace=True)
        assert path.read_text() == '{"phase": "swap"}' and stat.S_IMODE(path.stat().st_mode) == 0o600
        assert sorted(p.name for p in folder.iterdir()) == ["journal.json", "pgpass"]
