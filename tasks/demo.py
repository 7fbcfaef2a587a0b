"""The embedded default: the whole job on a scratch copy of the sample project, on SQLite."""
import os
import shutil
import sys
import tempfile
from pathlib import Path

from invoke import Context

from tasks.base import resolve, task
from tasks.console import Timer, ok, say, step
from tasks.engines import engine_for
from tasks.project import open_project
from tasks.reset import run_reset
from tasks.target import command_line

SAMPLE = Path(__file__).resolve().parent.parent / "examples" / "igny8"
DB_VARS = ("DATABASE_URL", "DB_ENGINE", "DB_NAME", "DB_USER", "DB_PASSWORD", "DB_HOST", "DB_PORT", "DB_PATH",
           "DJANGO_SETTINGS_MODULE")


def scratch_copy(dest=None):
    """Copy the sample project into a fresh folder, with a .env that points at its own SQLite file."""
    folder = Path(dest) if dest else Path(tempfile.mkdtemp(prefix="remigrate-demo-"))
    target = folder / "igny8"
    shutil.copytree(SAMPLE, target, ignore=shutil.ignore_patterns("__pycache__", "*.sqlite3", ".remigrate", ".env"))
    (target / ".env").write_text(f"DB_PATH={target / 'db.sqlite3'}\n", encoding="utf-8")
    return target


@task(help={"scale": "sample data size multiplier (default 1)", "scratch": "folder for the scratch copy (default: a new temporary folder)"})
def demo(c, scale=1, scratch=None):
    """Reset the migrations of a scratch copy of the sample project (SQLite), phase by phase."""
    total = Timer()
    for var in DB_VARS:  # the demo must never reach a database of yours configured in the environment
        os.environ.pop(var, None)
    step("Scratch copy of the sample project")
    project_dir = scratch_copy(scratch)
    say(f"    {project_dir}")
    local = Context()

    def manage(*args):
        line = command_line([sys.executable, "manage.py", *args], env={"DB_PATH": str(project_dir / "db.sqlite3")}, cwd=project_dir)
        return local.run(line, hide=True, in_stream=False).stdout.strip()

    step("Creating and filling its SQLite database")
    timer = Timer()
    manage("migrate", "-v0")
    ok(f"{manage('seed_sample', f'--scale={int(scale)}')} ({timer})")
    opts = resolve(c, project_dir=str(project_dir), python=sys.executable, settings="", env_file=".env",
                   backup_dir=str(project_dir.parent / "backups"))
    with open_project(c, opts) as project:
        engine = engine_for(project)
        engine.preflight()
        run_reset(project, engine, ["site_building.WorkflowState"], [], yes=True, dry_run=False)
    ok(f"demo finished in {total}")
    say(f"    the scratch copy stays at {project_dir}; its old state is one command away:")
    inv = sys.argv[0] if sys.argv[0].endswith(("inv", "invoke")) else "inv"
    say(f"    {inv} rollback --project-dir {project_dir} --backup-dir {project_dir.parent / 'backups'} --yes")
