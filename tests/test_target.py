"""Command building: argv quoted once, environment as `env K=V` words, pipes under pipefail."""
import shlex
import subprocess

from tasks.target import command_line, group, pipeline


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
