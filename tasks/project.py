"""The Django project on the target: its folder, interpreter, .env, and what Django resolves.

The truth about the database is Django's own resolved DATABASES["default"], read by
scripts/remigrate_probe.py running in the project's interpreter with the project's settings.
"""
import contextlib
import io
import json
import os
import posixpath
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import dj_database_url
from dotenv import dotenv_values

from tasks.bundle import database_identity
from tasks.console import PROGRESS, RemigrateError, Secrets, check_stop, stops_only_noted
from tasks.engines import engine_name
from tasks.target import CommandFailed, Target

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
PROBE = "remigrate_probe.py"
REPLY = "REMIGRATE-REPLY: "  # the long-lived probe's lines
HELPERS = ("remigrate_schema.py", "remigrate_history.py", "remigrate_scrub.py")  # modules the probe imports, uploaded beside it
VENV_CANDIDATES = (".venv", "venv", "env")
FIELDS = ("ENGINE", "NAME", "USER", "PASSWORD", "HOST", "PORT")
FIELD_VARS = {"ENGINE": ("DB_ENGINE",), "NAME": ("DB_NAME", "DB_PATH"), "USER": ("DB_USER",),
              "PASSWORD": ("DB_PASSWORD",), "HOST": ("DB_HOST",), "PORT": ("DB_PORT",)}


@dataclass(frozen=True)
class DbConfig:
    """The project's resolved default database, and where each part came from."""

    engine: str
    name: str
    user: str = ""
    password: str = ""
    host: str = ""
    port: str = ""
    options: dict = field(default_factory=dict)
    sources: dict = field(default_factory=dict)

    def describe(self):
        """Field, value, source rows for display; the password masked."""
        rows = []
        for key in FIELDS:
            value = getattr(self, key.lower())
            shown = ("***" if value else "(none)") if key == "PASSWORD" else (value or "(default)")
            rows.append((key.lower(), shown, self.sources.get(key, "")))
        return rows


def attribute_sources(database, environment, from_env_file, settings_module):
    """Say where each field of the resolved database came from: DATABASE_URL, DB_*, or settings."""

    def where(var):
        return f"{var} ({'.env' if var in from_env_file else 'environment'})"

    parsed = {}
    if environment.get("DATABASE_URL"):
        try:
            parsed = dj_database_url.parse(environment["DATABASE_URL"])
        except Exception:  # an unparsable URL is reported by the settings themselves
            parsed = {}
    sources = {}
    for key in FIELDS:
        value = str(database.get(key) or "")
        source = f"settings ({settings_module})"
        if parsed and str(parsed.get(key) or "") == value:
            source = where("DATABASE_URL")
        else:
            for var in FIELD_VARS[key]:
                if var in environment and environment[var] and (environment[var] == value or value.endswith(environment[var]) or key == "ENGINE"):
                    source = where(var)
                    break
        sources[key] = source
    return sources


def db_config_from_probe(settings, project_dir):
    database = settings["database"]
    name = str(database.get("NAME") or "")
    if "sqlite" in str(database.get("ENGINE", "")) and name and not posixpath.isabs(name) and name != ":memory:":
        name = posixpath.normpath(posixpath.join(project_dir, name))  # Django opens it relative to the cwd
    return DbConfig(
        engine=str(database.get("ENGINE") or ""),
        name=name,
        user=str(database.get("USER") or ""),
        password=str(database.get("PASSWORD") or ""),
        host=str(database.get("HOST") or ""),
        port=str(database.get("PORT") or ""),
        options=dict(database.get("OPTIONS") or {}),
        sources=attribute_sources(database, settings.get("environment", {}), settings.get("from_env_file", []),
                                  settings.get("settings_module", "settings")),
    )


class Project:
    """A Django project on a target, with a private scratch folder for the length of one task."""

    def __init__(self, target: Target, options, workdir):
        self.target = target
        self.options = options
        self.workdir = workdir  # private (0700) temporary folder on the target
        self.dir = self._project_dir(options.project_dir)
        self.python = self._python(options.python)
        self.env_values = self._load_env_file(options.env_file)
        self.probe_path = posixpath.join(workdir, PROBE)
        for name in (PROBE, *HELPERS):
            target.put_file(SCRIPTS / name, posixpath.join(workdir, name))
        self.env_json = posixpath.join(workdir, "env.json")
        target.write_private(self.env_json, json.dumps(self.env_values))
        self._settings = None
        self._identity = None
        # the long-lived probe, started at the first probe command; False: one process per step
        # (it could not start, or REMIGRATE_PROBE=per-step asks for it)
        self._server = False if os.environ.get("REMIGRATE_PROBE") == "per-step" else None
        self._requests = 0

    def _project_dir(self, path):
        t = self.target
        resolved = t.real_dir(path)
        if not resolved:
            raise RemigrateError(f"project folder {path} does not exist on {t.name}; pass --project-dir with the folder that holds manage.py")
        if not t.exists(posixpath.join(resolved, "manage.py"), "-f"):
            raise RemigrateError(f"no manage.py in {resolved} on {t.name}; pass --project-dir with the folder that holds manage.py")
        return resolved

    def _python(self, explicit):
        t = self.target
        if explicit:
            path = explicit if posixpath.isabs(explicit) or "/" not in explicit else posixpath.join(self.dir, explicit)
            if t.run(["sh", "-c", 'command -v "$1"', "sh", path], check=False).exited != 0:
                raise RemigrateError(f"interpreter {explicit} not found on {t.name}; pass --python with the project's Python")
            return path
        found = t.first_executable([posixpath.join(base, venv, "bin", "python")
                                    for base in (self.dir, posixpath.dirname(self.dir)) for venv in VENV_CANDIDATES])
        return found or ("python3" if t.remote else sys.executable)

    def _load_env_file(self, env_file):
        if not env_file:
            return {}
        path = env_file if posixpath.isabs(env_file) else posixpath.join(self.dir, env_file)
        if not self.target.exists(path, "-f"):
            return {}
        values = {k: v for k, v in dotenv_values(stream=io.StringIO(self.target.read_text(path))).items() if v is not None}
        for key, value in values.items():
            if any(word in key.upper() for word in ("PASSWORD", "SECRET", "TOKEN", "DATABASE_URL")):
                Secrets.add(value)
        return values

    def _run_probe(self, argv, command):
        """One probe command: answered by the task's long-lived probe (forked from one Django
        start-up), or run on its own if that cannot start (the error is then the command's own)."""
        if self._server is None:
            self._server = self._start_server()
        if self._server is not False and self._server.finished:  # it ended between two steps: each on its own now
            self._server.release()
            self._server = False
        if self._server is False:
            return self.target.run(argv, cwd=self.dir, check=False)
        self._requests += 1
        self._server.stdin.write(json.dumps({"id": self._requests, "argv": argv[2:]}) + "\n")
        try:  # the step runs on in its child: its answer is awaited even when stopped (check_stop after)
            with stops_only_noted():
                while (message := server_message(self._server)) is not None and "progress" in message:
                    PROGRESS(**message["progress"])
        finally:
            PROGRESS.close()
        if message is None or message.get("id") != self._requests:
            result = self._server.release()
            self._server = False
            raise CommandFailed(f"{command} in the project's interpreter (the long-lived probe ended without "
                                "answering)", result)
        return SimpleNamespace(stdout=message["stdout"], stderr=message["stderr"], exited=message["exit"])

    def _start_server(self):
        """The long-lived probe, once it says it is ready; False if it cannot serve (one process
        per step then)."""
        start = [self.python, self.probe_path, "--serve", "--env-json", self.env_json]
        if self.options.settings:
            start += ["--settings", self.options.settings]
        server = self.target.hold(start, cwd=self.dir)
        ready = server_message(server)
        if not (ready and ready.get("ready")):
            server.release()
            return False
        return server

    def close(self):
        """End the long-lived probe."""
        if self._server:
            self._server.release()
        self._server = None

    def probe(self, command, *args, what=None, db_name=None, migrations_from=None, sqlite_scratch=None):
        """Run a probe command in the project's interpreter; returns its JSON answer."""
        argv = self._probe_argv(command, args, db_name, migrations_from, sqlite_scratch)
        return self._answer(self._run_probe(argv, command), command, what)

    def probe_beside(self, command, *args, what=None):
        """Start a probe command in a process of its own, beside the long-lived probe, for work that
        can overlap; returns a function that waits for it and gives its JSON answer."""
        held = self.target.hold(self._probe_argv(command, args, None, None, None), cwd=self.dir)

        def answer():
            with stops_only_noted():  # (invoke would write an interrupt into its closed input)
                result = held.release()
            return self._answer(result, command, what)
        return answer

    def _probe_argv(self, command, args, db_name, migrations_from, sqlite_scratch):
        argv = [self.python, self.probe_path, "--env-json", self.env_json]
        if sqlite_scratch:
            argv += ["--sqlite-scratch", sqlite_scratch]
        if self.options.settings:
            argv += ["--settings", self.options.settings]
        if db_name:
            argv += ["--db-name", db_name]
        if migrations_from:
            argv += ["--migrations-from", migrations_from]
        return argv + [command, *map(str, args)]

    def _answer(self, result, command, what):
        check_stop()
        for line in (result.stdout or "").splitlines():
            if line.startswith("REMIGRATE-JSON: ") and result.exited == 0:
                return json.loads(line[len("REMIGRATE-JSON: "):])
            if line.startswith("REMIGRATE-ERROR: "):
                raise RemigrateError(Secrets.scrub(line[len("REMIGRATE-ERROR: "):]))
        if result.exited == 127 or "No such file" in (result.stderr or "") and self.python in (result.stderr or ""):
            raise RemigrateError(f"cannot run {self.python} on {self.target.name}; pass --python with the project's interpreter")
        raise CommandFailed(what or f"{command} in the project's interpreter", result)

    def manage(self, *args, db_name=None, check=True):
        """A management command in the project's interpreter (with its .env); returns its output."""
        return self.manage_many([args], db_name=db_name, check=check)[0]

    def manage_many(self, commands, db_name=None, check=True):
        """Several management commands in one start-up of the project's interpreter."""
        words = [w for i, args in enumerate(commands) for w in ([] if i == 0 else ["--then"]) + list(args)]
        results = self.probe("manage", *words, what=f"manage.py {' '.join(commands[0])}", db_name=db_name)["results"]
        for result in results:
            if check and result["exit"]:
                raise RemigrateError(f"manage.py {' '.join(result['args'])} failed: {(result['errors'] or result['output']).strip()}")
        return results

    def run_command(self, command, what):
        """A user's shell command in the project folder, with the project's .env values and its
        virtualenv first on PATH (the values travel in a 0600 file, never in argv)."""
        import shlex

        env_file = posixpath.join(self.workdir, "check-env.sh")
        self.target.write_private(env_file, "".join(f"export {k}={shlex.quote(v)}\n" for k, v in self.env_values.items()
                                                    if k.isidentifier()), replace=True)
        bindir = posixpath.dirname(self.python) if "/" in self.python else ""
        script = f". {shlex.quote(env_file)}; " + (f"PATH={shlex.quote(bindir)}:\"$PATH\"; " if bindir else "") + command
        return self.target.run(["bash", "-c", script], cwd=self.dir, what=what, check=False)

    @property
    def settings(self):
        if self._settings is None:
            self._settings = self.probe("settings", what="reading the project's Django settings")
            db = self._settings["database"]
            Secrets.add(db.get("PASSWORD"), self._settings.get("environment", {}).get("DATABASE_URL"),
                        self._settings.get("environment", {}).get("DB_PASSWORD"))
            if self._settings.get("setup_error"):
                engine_name(str(db.get("ENGINE") or ""))  # an unsupported engine is the clearer message
                raise RemigrateError(self._settings["setup_error"])
        return self._settings

    @property
    def db(self) -> DbConfig:
        return db_config_from_probe(self.settings, self.dir)

    def identity(self):
        """This database's identity (SQLite: the file's real path, links resolved)."""
        if self._identity is None:
            db, kind = self.db, engine_name(self.db.engine)
            real = None
            if kind == "sqlite":
                real = self.target.run(["readlink", "-m", "--", db.name], check=False).stdout.strip() or db.name
            self._identity = database_identity(kind, db.name, db.host, db.port, real)
        return self._identity

    def own_apps(self):
        """The project's own apps (code under the project folder) that have a migrations folder."""
        return [a for a in self.settings["apps"] if a["in_project"] and a["migrations_dir"]]

    def default_backup_dir(self):
        return self.options.backup_dir or posixpath.join(self.dir, ".remigrate", "backups")


def server_message(server):
    """The long-lived probe's next message (lines not its own, printed by the project, are
    skipped); None once it has ended."""
    while True:
        line = server.next_line()
        if line is None:
            return None
        if line.startswith(REPLY):
            return json.loads(line[len(REPLY):])


def probe_module():
    """scripts/remigrate_probe.py as a module, for code this machine shares with the targets."""
    import importlib.util

    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))  # its helper modules sit beside it
    spec = importlib.util.spec_from_file_location("remigrate_probe", SCRIPTS / PROBE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def open_project(c, options):
    """The project on the task's target, with a private scratch folder removed afterwards."""
    target = Target(c)
    workdir = target.make_private_dir()
    project = None
    try:
        project = Project(target, options, workdir)
        yield project
    finally:
        if project is not None:
            project.close()
        target.remove_tree(workdir)
