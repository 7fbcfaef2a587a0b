#!/usr/bin/env python3
"""Kill a reset with kill -9 at every phase boundary, on SQLite and PostgreSQL, and recover.

Usage: .venv/bin/python scripts/faultmatrix.py [--engine sqlite|postgresql|all] [--recover rollback|resume] [--ssh]
                                              [--strategy rebuild|swap|fake]

With --ssh every command runs as `fab -H` against an OpenSSH server started on loopback (the
project is a "host" copy with its own .env and interpreter), and kill -9 hits the fab process.

For each phase: a scratch copy of the sample project is seeded, `inv reset` is started and
killed (with its children) once its journal (or its backup folder) reaches the phase, then
the next `inv reset` is run to see what it tells the user, then the recovery command, and the
rows and migration files are compared with what they were before (rollback) or with a clean
reset (resume). Prints one row per case. Not a test: the suite kills at a few phases; this
runs them all (several minutes).
"""
import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from servers import pg_cluster, psycopg_admin, ssh_server  # noqa: E402

PHASES = {
    ("sqlite", "rebuild"): ["backup-dump", "remove-models", "regenerate-migrations", "migrate", "load", "content-types",
                            "verify", "swap", "check-application"],
    ("postgresql", "rebuild"): ["backup-dump", "remove-models", "regenerate-migrations", "close", "drop", "dropped",
                                "migrate", "load", "content-types", "verify", "swap", "check-application"],
    ("postgresql", "swap"): ["backup-dump", "remove-models", "regenerate-migrations", "migrate", "load", "content-types",
                             "verify", "close", "swap", "swap-half", "check-application"],
    ("sqlite", "fake"): ["backup-dump", "remove-models", "regenerate-migrations", "fake", "verify", "check-application"],
}
PHASES[("sqlite", "swap")] = PHASES[("sqlite", "rebuild")]
PHASES[("postgresql", "fake")] = PHASES[("sqlite", "fake")]
# Moments inside a phase: (the journal's phase, the live name is gone then)
INSIDE = {"dropped": "drop", "swap-half": "swap"}
STRATEGY = ["--strategy", "rebuild"]
TOOL = [sys.executable, "-m", "invoke"]  # or fab -H, with --ssh
REMOVE = ["--remove-model", "site_building.WorkflowState"]


def run(argv, env, cwd, timeout=600):
    return subprocess.run(argv, env={**os.environ, **env}, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def files_digest(project):
    return {str(p.relative_to(project)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(project.glob("igny8_core/**/migrations/*")) if p.is_file() and "__pycache__" not in p.parts}


def snapshot(project, env):
    code = ("import json; from django.db import connection\n"
            "with connection.cursor() as c:\n"
            "    names = [t for t in connection.introspection.table_names(c) if t != 'django_migrations']\n"
            "    out = {}\n"
            "    for t in names:\n"
            "        c.execute('SELECT * FROM ' + connection.ops.quote_name(t))\n"
            "        cols = [d[0] for d in c.description]\n"
            "        out[t] = sorted(repr(sorted(zip(cols, map(str, r)))) for r in c.fetchall())\n"
            "print(json.dumps(out))")
    out = run([sys.executable, "manage.py", "shell", "-c", code], env, project)
    if out.returncode:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed"}
    data = json.loads(out.stdout.strip().splitlines()[-1])
    data.pop("igny8_site_blueprint_workflow_states", None)  # the removed model's rows are meant to go
    return data


def kill_at(project, backups, env, phase, gone):
    """Start a reset and kill -9 its process group once it reaches `phase`."""
    proc = subprocess.Popen([*TOOL, "reset", "--project-dir", str(project), "--backup-dir",
                             str(backups), *REMOVE, "--yes", *STRATEGY], cwd=REPO,
                            env={**os.environ, **env, "REMIGRATE_FAULT": f"pause:{phase}"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)

    def reached():
        if phase == "backup-dump":
            return bool(list(backups.glob(".*.partial")))
        journals = list(backups.glob("*/journal.json"))
        if not journals:
            return False
        at = json.loads(journals[0].read_text()).get("phase")
        return at == INSIDE[phase] and gone() if phase in INSIDE else at == phase

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if reached():
            time.sleep(0.3)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.2)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    return False


def case(engine, phase, recover, workdir, env_for):
    project = workdir / f"{engine}-{phase}" / "igny8"
    shutil.copytree(REPO / "examples" / "igny8", project, ignore=shutil.ignore_patterns("__pycache__", "*.sqlite3", ".env"))
    env, gone = env_for(project)
    if TOOL[2] == "fabric":  # the host's own .env and interpreter, as a deployed project has
        (project / ".env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
        (project / ".venv" / "bin").mkdir(parents=True)
        (project / ".venv" / "bin" / "python").write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
        (project / ".venv" / "bin" / "python").chmod(0o755)
    run([sys.executable, "manage.py", "migrate", "-v0"], env, project)
    run([sys.executable, "manage.py", "seed_sample"], env, project)
    before_rows, before_files = snapshot(project, env), files_digest(project)
    backups = project.parent / "backups"
    if not kill_at(project, backups, env, phase, gone):
        return [engine, phase, "never reached", "-", "-"]
    common = ["--project-dir", str(project), "--backup-dir", str(backups)]
    told = run([*TOOL, "reset", *common, *REMOVE, "--dry-run", *STRATEGY], env, REPO)
    said = (told.stderr.strip().splitlines() or told.stdout.strip().splitlines() or ["(nothing)"])[-1]
    said = said.replace("remigrate: error: ", "")[:110]
    args = ["rollback", *common, "--yes"] if recover == "rollback" else ["reset", *common, "--resume", "--yes"]
    out = run([*TOOL, *args], env, REPO)
    last = (out.stdout.strip().splitlines() or ["(nothing)"])[-1] if out.returncode == 0 else \
        (out.stderr.strip().splitlines() or ["failed"])[-1]
    after_rows = snapshot(project, env)
    if recover == "rollback" or phase == "backup-dump":  # killed in its backup: nothing to finish, nothing touched
        exact = after_rows == before_rows and files_digest(project) == before_files
    else:
        exact = after_rows == before_rows and all(f.endswith(("_initial.py", "_carried.py", "_carried.json", ".csv"))
                                                  for f in files_digest(project) if "/0" in f or f.endswith(".csv"))
    return [engine, phase, said, f"rc={out.returncode}: {last[:70]}", "exact" if exact else "DIFFERS"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=["sqlite", "postgresql", "all"], default="all")
    parser.add_argument("--recover", choices=["rollback", "resume"], default="rollback")
    parser.add_argument("--ssh", action="store_true", help="run every command with fab -H over a loopback SSH server")
    parser.add_argument("--strategy", choices=["rebuild", "swap", "fake"], default="rebuild")
    opts = parser.parse_args()
    STRATEGY[1] = opts.strategy
    with contextlib.ExitStack() as stack:
        if opts.ssh:
            server = stack.enter_context(ssh_server())
            TOOL[:] = [sys.executable, "-m", "fabric", "-S", str(server.ssh_config), "-H", server.host]
        matrix(opts)


def matrix(opts):
    for key in [k for k in os.environ if k.startswith(("DATABASE_URL", "DB_", "PG"))]:
        del os.environ[key]
    results = []
    with tempfile.TemporaryDirectory(prefix="remigrate-faults-") as tmp:
        workdir = Path(tmp)
        if opts.engine in ("sqlite", "all"):
            for phase in PHASES[("sqlite", opts.strategy)]:
                results.append(case("sqlite", phase, opts.recover, workdir,
                                    lambda p: ({"DB_PATH": str(p.parent / "db.sqlite3")}, lambda: False)))
                print(" | ".join(results[-1]), flush=True)
        if opts.engine in ("postgresql", "all"):
            with pg_cluster() as pg:
                for n, phase in enumerate(PHASES[("postgresql", opts.strategy)]):
                    name = f"fm{n}"
                    pg.create_app_database(name, name, "fm-pw", createdb=True)

                    def gone(name=name):
                        with psycopg_admin(pg) as conn:
                            return not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()

                    results.append(case("postgresql", phase, opts.recover, workdir, lambda p, name=name, gone=gone: (
                        {"DATABASE_URL": f"postgres://{name}:fm-pw@127.0.0.1:{pg.port}/{name}"}, gone)))
                    print(" | ".join(results[-1]), flush=True)


if __name__ == "__main__":
    main()
