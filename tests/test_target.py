"""Command building: argv quoted once, environment as `env K=V` words, pipes under pipefail."""
import shlex
import subprocess

from tasks.target import Target, command_line, group, parallel, pipeline


def test_argv_is_quoted_once():
    line = command_line(["pg_dump", "--dbname=my db", "--file=/tmp/a b;rm -rf /"])
    assert shlex.split(line) == ["pg_dump", "--dbname=my db", "--file=/tmp/a b;rm -rf /"]


def test_environment_goes_in_env_words_and_cwd_in_cd():
    line = command_line(["psql"], env={"PGPASSFILE": "/tmp/p q/pgpass"}, cwd="/srv/my app")
    assert line == "cd '/srv/my app' && env 'PGPASSFILE=/tmp/p q/pgpass' psql"


def test_pipeline_fails_when_the_producer_fails():
    line = pipeline(group(["true"], ["false"]), ["cat"])
    assert subprocess.run(line, shell=True, executable="/bin/bash").returncode != 0
    assert subprocess.run(pipeline(["false"], ["cat"]), shell=True).returncode != 0
    assert subprocess.run(pipeline(group(["echo", "a"], ["echo", "b"]), ["cat"]), shell=True, capture_output=True).stdout == b"a\nb\n"


def test_a_scratch_folder_that_lost_its_owner_mark_is_removed_once_it_is_old(tmp_path, monkeypatch):
    """A removal cut short can leave a folder without owner.json (and with a password file):
    a later run removes ours once they are an hour old, never a folder being made right now."""
    import os
    import time

    import invoke

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    old, fresh, foreign = (tmp_path / f"remigrate.{n}" for n in ("old00001", "new00001", "other001"))
    for folder in (old, fresh, foreign):
        folder.mkdir()
        (folder / "pgpass").write_text("*:*:*:app:secret\n")
    for folder in (old, fresh):
        (folder / "remigrate_probe.py").write_text("")
    hour_ago = time.time() - 2 * 3600
    for folder in (old, foreign):
        os.utime(folder, (hour_ago, hour_ago))
    Target(invoke.Context()).remove_dead_private_dirs()
    assert not old.exists() and fresh.exists() and foreign.exists()


def test_parallel_waits_for_every_command_and_fails_if_any_fails():
    assert subprocess.run(parallel(["true"], ["true"]), shell=True).returncode == 0
    assert subprocess.run(parallel(["sh", "-c", "sleep 0.3; exit 3"], ["true"]), shell=True).returncode != 0
    out = subprocess.run(parallel(["sh", "-c", "sleep 0.2; echo late"], ["echo", "early"]), shell=True, capture_output=True)
    assert out.stdout.split() == [b"early", b"late"]


def test_the_first_executable_of_several_is_found_in_one_command(tmp_path):
    import invoke

    plain, runnable, later = tmp_path / "a" / "python", tmp_path / "b dir" / "python", tmp_path / "c" / "python"
    for path, mode in ((plain, 0o644), (runnable, 0o755), (later, 0o755)):
        path.parent.mkdir()
        path.write_text("#!/bin/sh\n")
        path.chmod(mode)
    t = Target(invoke.Context())
    assert t.first_executable([str(tmp_path / "gone"), str(plain), str(runnable), str(later)]) == str(runnable)
    assert t.first_executable([str(plain), str(tmp_path / "gone")]) is None
