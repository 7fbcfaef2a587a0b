#!/usr/bin/env python3
"""Time a full reset of the sample project on SQLite and PostgreSQL, phase by phase (the plan's
scratch builds of the old and new history included).

Usage: .venv/bin/python scripts/benchmark.py [--scale N] [--engine sqlite|postgresql|all]

Starts its own PostgreSQL cluster (as the tests do), seeds a scratch copy of the sample
project at the given scale, runs `inv reset --remove-model site_building.WorkflowState --yes`
and prints the seconds of each phase from the run's journal. Speed goals are judged from this
output, never by timing assertions in the tests.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from servers import pg_cluster  # noqa: E402


def run(argv, env, cwd):
    started = time.monotonic()
    out = subprocess.run(argv, env={**os.environ, **env}, cwd=cwd, capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"failed: {' '.join(argv[:4])}...\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return out.stdout, time.monotonic() - started


PAD = {  # about 1 KiB of text per row, written by the database itself
    "postgresql": "INSERT INTO writer_content (title, body, meta, word_count) "
                  "SELECT 'pad ' || g, repeat(md5(g::text), 32), '{{}}', 0 FROM generate_series(1, {rows}) g",
    "sqlite": "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < {rows}) "
              "INSERT INTO writer_content (title, body, meta, word_count) "
              "SELECT 'pad ' || n, printf('%.1024c', 'x') || n, '{{}}', 0 FROM g",
}


def pad(engine, megabytes, env, project):
    """Grow the database by about `megabytes` MiB of rows in writer_content."""
    code = ("from django.db import connection\n"
            "with connection.cursor() as c:\n"
            f"    c.execute({PAD[engine].format(rows=megabytes * 1024)!r})")
    run([sys.executable, "manage.py", "shell", "-c", code], env, project)


def plan_only(engine, env, project, workdir):
    """The plan alone (a dry run): its scratch builds, and the whole plan's wall time."""
    out, total = run([sys.executable, "-m", "invoke", "reset", "--project-dir", str(project), "--backup-dir",
                      str(workdir / engine / "backups"), "--remove-model", "site_building.WorkflowState", "--dry-run"],
                     env, REPO)
    size = next(ln for ln in out.splitlines() if ln.startswith("database "))
    proof = next((ln for ln in out.splitlines() if "built in" in ln), "(no proof line)")
    print(f"\n{engine} plan only: {size.split(',', 1)[1].strip()}\n  {proof.strip()}\n  dry run wall clock {total:.1f} s")


def bench(engine, scale, env, workdir, pad_mb=0, dry_run=False):
    project = workdir / engine / "igny8"
    shutil.copytree(REPO / "examples" / "igny8", project, ignore=shutil.ignore_patterns("__pycache__", "*.sqlite3", ".env"))
    run([sys.executable, "manage.py", "migrate", "-v0"], env, project)
    seeded, seconds = run([sys.executable, "manage.py", "seed_sample", f"--scale={scale}"], env, project)
    if pad_mb:
        pad(engine, pad_mb, env, project)
    if dry_run:
        return plan_only(engine, env, project, workdir)
    backups = workdir / engine / "backups"
    out, total = run([sys.executable, "-m", "invoke", "reset", "--project-dir", str(project), "--backup-dir", str(backups),
                      "--remove-model", "site_building.WorkflowState", "--yes"], env, REPO)
    journal = json.loads(next(backups.glob("*/journal.json")).read_text())
    backup = re.search(r"backup \S+: (\d+) tables, (\d+) rows, ([\d.]+ \w+), verified \(([\d.]+) s\)", out)
    report = json.loads(next(backups.glob("*/report.json")).read_text())
    proof = (report.get("history") or {}).get("seconds", {})
    rows = [("seed (not part of the reset)", f"{seconds:.1f}")]
    # the scratch builds migrate empty databases: their time must not grow with the data
    rows += [(f"plan: scratch database from the {name}", f"{secs:.1f}") for name, secs in proof.items()]
    rows.append(("backup", backup.group(4)))
    rows += [(p["phase"], f"{p.get('seconds', 0):.1f}") for p in journal["phases"]]
    rows.append(("total reset (wall clock, with plan and startup)", f"{total:.1f}"))
    print(f"\n{engine}: scale {scale}, {backup.group(1)} tables, {backup.group(2)} rows, backup {backup.group(3)}")
    width = max(len(r[0]) for r in rows)
    for name, secs in rows:
        print(f"  {name.ljust(width)}  {secs:>7} s")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=20)
    parser.add_argument("--engine", choices=["sqlite", "postgresql", "all"], default="all")
    parser.add_argument("--pad-mb", type=int, default=0, help="grow the database by about this many MiB of rows")
    parser.add_argument("--plan-only", action="store_true", help="time the plan (a dry run) instead of a reset")
    opts = parser.parse_args()
    for key in [k for k in os.environ if k.startswith(("DATABASE_URL", "DB_", "PG"))]:
        del os.environ[key]
    with tempfile.TemporaryDirectory(prefix="remigrate-bench-") as tmp:
        workdir = Path(tmp)
        if opts.engine in ("sqlite", "all"):
            bench("sqlite", opts.scale, {"DB_PATH": str(workdir / "sqlite" / "igny8" / "db.sqlite3")}, workdir,
                  opts.pad_mb, opts.plan_only)
        if opts.engine in ("postgresql", "all"):
            with pg_cluster() as pg:
                pg.create_app_database("bench", "bench", "bench-pw", createdb=True)
                bench("postgresql", opts.scale, {"DATABASE_URL": f"postgres://bench:bench-pw@127.0.0.1:{pg.port}/bench"},
                      workdir, opts.pad_mb, opts.plan_only)


if __name__ == "__main__":
    main()
