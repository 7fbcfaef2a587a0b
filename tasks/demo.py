"""The embedded default: the whole job on a scratch copy of the sample project, on SQLite."""
import os
import shutil
import sys
import tempfile
from pathlib import Path

from invoke import Context

from tasks.backup import restore_bundle, take_backup
from tasks.base import resolve, task
from tasks.console import Timer, ok, say, step
from tasks.engines import engine_for
from tasks.project import open_project

SAMPLE = Path(__file__).resolve().parent.parent / "examples" / "igny8"
DB_VARS = ("DATABASE_URL", "DB_ENGINE", "DB_NAME", "DB_USER", "DB_PASSWORD", "DB_HOST", "DB_PORT", "DB_PATH")


def scratch_copy(dest=None):
    """Copy the sample project into a fresh folder (no database, no bundles in it yet)."""
    folder = Path(dest) if dest else Path(tempfile.mkdtemp(prefix="remigrate-demo-"))
    target = folder / "igny8"
    shutil.copytree(SAMPLE, target, ignore=shutil.ignore_patterns("__pycache__", "*.sqlite3", ".remigrate", ".env"))
    return target


@task(help={"scale": "sample data size multiplier (default 1)", "scratch": "folder for the scratch copy (default: a new temporary folder)"})
def demo(c, scale=1, scratch=None):
    """Run remigrate on a scratch copy of the sample project (SQLite), showing every phase."""
    total = Timer()
    step("Scratch copy of the sample project")
    project_dir = scratch_copy(scratch)
    say(f"    {project_dir}")
    env = {k: v for k, v in os.environ.items() if k not in DB_VARS}
    env["DB_PATH"] = str(project_dir / "db.sqlite3")
    local = Context()
    manage = [sys.executable, "manage.py"]
    step("Creating and filling its SQLite database")
    timer = Timer()
    with local.cd(str(project_dir)):
        local.run(" ".join(manage + ["migrate", "-v0"]), env=env, hide=True, in_stream=False)
        seeded = local.run(" ".join(manage + ["seed_sample", f"--scale={int(scale)}"]), env=env, hide=True, in_stream=False)
    ok(f"{seeded.stdout.strip()} ({timer})")
    os.environ.update({"DB_PATH": env["DB_PATH"]})
    for var in DB_VARS:
        if var != "DB_PATH":
            os.environ.pop(var, None)
    opts = resolve(c, project_dir=str(project_dir), python=sys.executable, backup_dir=str(project_dir.parent / "backups"))
    with open_project(c, opts) as project:
        engine = engine_for(project)
        manifest, path = take_backup(project, engine, project.default_backup_dir())
        step("Changing data after the backup (deleting every content row)")
        with local.cd(str(project_dir)):
            local.run(" ".join(manage + ["shell", "-c", "'from igny8_core.modules.writer.models import Content; print(Content.objects.all().delete()[0])'"]),
                      env=env, hide=True, in_stream=False)
        restore_bundle(project, engine, manifest, path, yes=True, safety_backup_dir=None)
    ok(f"demo finished in {total}; the scratch copy stays at {project_dir}")
