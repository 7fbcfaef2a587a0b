"""Options shared by every task: a flag beats the config (environment, invoke.yaml/fabric.yaml,
code defaults). Plain module: no invoke import, so it is tested as data in, data out."""
import re
from dataclasses import dataclass

# The `remigrate` section of the config. Set per host in fabric.yaml under remigrate:, or
# per run with INVOKE_REMIGRATE_PROJECT_DIR=... / FABRIC_REMIGRATE_PROJECT_DIR=...
DEFAULTS = {
    "project_dir": ".",  # folder holding manage.py
    "python": "",  # the project's interpreter; "" finds its virtualenv, else the current one
    "settings": "",  # Django settings module; "" reads manage.py
    "env_file": ".env",  # relative to project_dir; loaded without overriding the environment
    "backup_dir": "",  # "" is <project_dir>/.remigrate/backups
    "compress": "auto",  # pg_dump's compression of backups: none when there is room (fastest), else 1
    "jobs": "",  # sessions that load at once; "" is the number of cores
    "strategy": "rebuild",  # how a reset puts the new history in place: rebuild, swap or fake
}
STRATEGIES = ("rebuild", "swap", "fake")
# Not per-task flags: remigrate.accept_unknown_hosts (fab: accept a host key missing from
# known_hosts) and remigrate.hosts.<host>.<key> (per-host values of the keys above).

HELP = {
    "project_dir": "folder of the Django project (the one holding manage.py); default: config remigrate.project_dir or '.'",
    "python": "the project's Python interpreter; default: its virtualenv (.venv, venv, env) if found, else the current one",
    "settings": "Django settings module; default: DJANGO_SETTINGS_MODULE, else what manage.py sets",
    "env_file": "env file loaded for the project (the environment wins over it); default: .env in the project folder",
    "backup_dir": "folder of the backup bundles; default: <project-dir>/.remigrate/backups",
    "compress": "PostgreSQL backups: pg_dump --compress value (0-9, or gzip:N / lz4 / zstd where pg_dump supports "
                "them); default: config remigrate.compress or auto (none when the backup folder has room for four "
                "times the database: 2-3x faster; else 1)",
    "jobs": "PostgreSQL: sessions that load the data and build the indexes at once; default: config remigrate.jobs "
            "or the number of cores (at most 8); never more than the server has connections free",
    "strategy": "how the reset puts the new history in place: rebuild (default: the database is closed while it is "
                "rebuilt beside and renamed in), swap (built beside while the application keeps running, then "
                "renamed in; the old one is kept for an instant rollback until `inv cleanup`) or fake (the data "
                "stays where it is: only the history is rewritten, after proving the schemas equal)",
    "yes": "do not ask for confirmation (needed when there is no terminal)",
    "backup": "bundle name or path (under fab, a bundle folder on this machine is uploaded first); default: the newest bundle",
    "no_fetch": "under fab -H: do not copy the new bundle back to this machine",
    "fetch_dir": "under fab -H: where bundles are copied on this machine; default: .remigrate/fetched/<host>/",
}


@dataclass(frozen=True)
class Options:
    project_dir: str
    python: str
    settings: str
    env_file: str
    backup_dir: str
    compress: str = "auto"
    jobs: str = ""
    strategy: str = "rebuild"


def resolve(config_section, host=None, **flags) -> Options:
    """Flag if given (not None), else the host's config value, else the config value, else the
    code default."""
    section = dict(DEFAULTS)
    config_section = dict(config_section or {})
    section.update({k: v for k, v in config_section.items() if k in DEFAULTS})
    per_host = dict((config_section.get("hosts") or {}).get(host) or {}) if host else {}
    section.update({k: v for k, v in per_host.items() if k in DEFAULTS})
    values = {}
    for key in DEFAULTS:
        flag = flags.get(key)
        value = flag if flag is not None else section[key]
        values[key] = "" if value is None else str(value)
    if not re.fullmatch(r"auto|[0-9]|(none|gzip|lz4|zstd)(:\d+)?", values["compress"]):
        raise ValueError(f"--compress {values['compress']}: give auto, a level 0-9 (or gzip:N, lz4, zstd where pg_dump "
                         "supports them)")
    if values["jobs"] and not (values["jobs"].isdigit() and int(values["jobs"]) > 0):
        raise ValueError(f"--jobs {values['jobs']}: give a number of sessions, 1 or more")
    if values["strategy"] not in STRATEGIES:
        raise ValueError(f"--strategy {values['strategy']}: choose one of {', '.join(STRATEGIES)}")
    return Options(**values)


def help_for(*names):
    return {name: HELP[name] for name in names}


COMMON = ("project_dir", "python", "settings", "env_file", "backup_dir")
