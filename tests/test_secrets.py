"""The database password never reaches a child's argv, the output, or a bundle's manifest."""
import os
import shutil
import threading
from pathlib import Path

from conftest import NASTY_PASSWORD, PYTHON, run_inv
from test_backup import damage_pg

LOGGED = ("pg_dump", "pg_restore", "psql", "env", "bash", "cat", "sh")


def make_shims(folder, log):
    """Wrappers that record every argv they get, then exec the real program."""
    folder.mkdir()
    for name in LOGGED:
        real = shutil.which(name)
        (folder / name).write_text(f'#!/bin/sh\nprintf "%s\\n" "{name} $*" >> {log}\nexec {real} "$@"\n')
        (folder / name).chmod(0o755)
    (folder / "python").write_text(f'#!/bin/sh\nprintf "%s\\n" "python $*" >> {log}\nexec {PYTHON} "$@"\n')
    (folder / "python").chmod(0o755)
    return folder


class ArgvWatcher(threading.Thread):
    """Reads every process's command line while the run goes on."""

    def __init__(self):
        super().__init__(daemon=True)
        self.seen = set()
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            for pid in os.listdir("/proc"):
                if pid.isdigit():
                    try:
                        self.seen.add(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace"))
                    except OSError:
                        pass
            self.stop.wait(0.005)


def test_password_never_in_argv_output_or_manifest(pg_project, tmp_path):
    project, env, db = pg_project
    log = tmp_path / "argv.log"
    shims = make_shims(tmp_path / "shims", log)
    env = {**env, "PATH": f"{shims}:{os.environ['PATH']}"}
    common = ["--project-dir", str(project), "--python", str(shims / "python")]
    watcher = ArgvWatcher()
    watcher.start()
    try:
        outputs = [run_inv("detect", *common, env=env), run_inv("backup", *common, "--backup-dir", str(tmp_path / "b"), env=env)]
        damage_pg(db)
        outputs.append(run_inv("restore", *common, "--backup-dir", str(tmp_path / "b"), "--yes", env=env))
        outputs.append(run_inv("backup", "--project-dir", str(project), "--backup-dir", str(tmp_path / "b"),
                               env={**env, "DATABASE_URL": env["DATABASE_URL"].replace("%40", "%41")}))
    finally:
        watcher.stop.set()
        watcher.join()
    assert [o.returncode for o in outputs] == [0, 0, 0, 1], [o.stderr for o in outputs]
    calls = log.read_text()
    assert "pg_dump " in calls and "pg_restore " in calls and "psql " in calls and "python " in calls
    secrets = [NASTY_PASSWORD, "p@ss:w", "$HOME `x`"]
    for secret in secrets:
        assert secret not in calls
        for o in outputs:
            assert secret not in o.stdout and secret not in o.stderr
        for cmdline in watcher.seen:
            assert secret not in cmdline
    assert any("pg_dump" in c for c in watcher.seen) or "pg_dump" in calls
    manifest = (only_bundle_of(tmp_path / "b") / "manifest.json").read_text()
    assert NASTY_PASSWORD not in manifest and "p%40ss" not in manifest
    assert "***" in outputs[0].stdout  # detect shows the password masked


def only_bundle_of(folder):
    return sorted(p for p in Path(folder).iterdir() if p.is_dir() and not p.name.startswith("."))[0]
