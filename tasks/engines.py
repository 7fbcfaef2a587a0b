"""One class per database engine, each with the same small surface:

preflight(), stats(), size_estimate(), dump(path), verify_dump(path), restore(path, manifest).

The command builders and error explanations are plain functions, tested without a server.
"""
import posixpath
import re

from psycopg import sql

from tasks.console import RemigrateError
from tasks.target import CommandFailed, group, pipeline

PG_TOOLS = ("pg_dump", "pg_restore", "psql")
# Django OPTIONS keys that libpq also reads from the environment.
PG_OPTION_ENV = {
    "sslmode": "PGSSLMODE", "sslrootcert": "PGSSLROOTCERT", "sslcert": "PGSSLCERT", "sslkey": "PGSSLKEY",
    "sslcrl": "PGSSLCRL", "connect_timeout": "PGCONNECT_TIMEOUT", "options": "PGOPTIONS", "service": "PGSERVICE",
    "passfile": "PGPASSFILE", "target_session_attrs": "PGTARGETSESSIONATTRS", "gssencmode": "PGGSSENCMODE",
}


def pgpass_line(user, password):
    """A .pgpass entry for any host, port and database of this run (':' and '\\' escaped)."""

    def esc(value):
        return str(value).replace("\\", "\\\\").replace(":", "\\:")

    return f"*:*:*:{esc(user) if user else '*'}:{esc(password)}\n"


def pg_env(db, pgpass_path=None):
    """Environment for libpq tools: no secret in it, only the path of a 0600 password file."""
    env = {"PGCONNECT_TIMEOUT": "10", "PGAPPNAME": "remigrate"}
    for key, var in PG_OPTION_ENV.items():
        if key in db.options and db.options[key] not in (None, ""):
            env[var] = str(db.options[key])
    if pgpass_path:
        env["PGPASSFILE"] = pgpass_path
    return env


def pg_conn_args(db, dbname=None):
    """Connection flags: -w so a missing password fails at once instead of prompting."""
    args = ["-w"]
    host = db.host or db.options.get("host")
    if host:
        args.append(f"--host={host}")
    if db.port:
        args.append(f"--port={db.port}")
    if db.user:
        args.append(f"--username={db.user}")
    args.append(f"--dbname={dbname or db.name}")
    return args


def parse_tool_version(text):
    """(major, minor) from `pg_dump (PostgreSQL) 15.18 (Debian ...)`."""
    match = re.search(r"\)\s+(\d+)(?:\.(\d+))?", text or "")
    if not match:
        return None
    return int(match.group(1)), int(match.group(2) or 0)


def explain_pg_error(stderr, db):
    """One line that says what failed connecting to PostgreSQL and what to do."""
    where = f"{db.host or 'local socket'}:{db.port or 5432}"
    text = stderr or ""
    if "password authentication failed" in text:
        return f"password authentication failed for user {db.user!r} at {where}; check DB_PASSWORD or DATABASE_URL"
    if "no password supplied" in text or "fe_sendauth" in text:
        return f"the server at {where} wants a password for {db.user!r} and none is configured; set DB_PASSWORD or DATABASE_URL"
    if re.search(r'database "[^"]*" does not exist', text):
        return f"database {db.name!r} does not exist at {where}; check DB_NAME or DATABASE_URL"
    if re.search(r'role "[^"]*" does not exist', text):
        return f"role {db.user!r} does not exist at {where}; check DB_USER or DATABASE_URL"
    if any(s in text for s in ("Connection refused", "could not connect", "timeout expired", "could not translate host name", "No route to host")):
        return f"cannot reach PostgreSQL at {where}; is the server running and are DB_HOST/DB_PORT right?"
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "unknown error"


def pg_identifier(schema, name):
    return sql.Identifier(schema, name).as_string(None)


def drop_statements(relations):
    """DROP statements for relations that exist now but not in the backup."""
    kinds = {"r": "TABLE", "p": "TABLE", "v": "VIEW", "m": "MATERIALIZED VIEW", "S": "SEQUENCE", "f": "FOREIGN TABLE"}
    return "".join(f"DROP {kinds[r['kind']]} IF EXISTS {pg_identifier(r['schema'], r['name'])} CASCADE;\n" for r in relations)


class Engine:
    name = ""
    dump_file = ""

    def __init__(self, project):
        self.project = project
        self.target = project.target
        self.db = project.db

    def facts(self):
        return {}


class Postgres(Engine):
    name = "postgresql"
    dump_file = "db.dump"

    def __init__(self, project):
        super().__init__(project)
        self._pgpass = None
        self.versions = {}

    def env(self):
        if self.db.password and self._pgpass is None:
            self._pgpass = posixpath.join(self.project.workdir, "pgpass")
            self.target.write_private(self._pgpass, pgpass_line(self.db.user, self.db.password))
        return pg_env(self.db, self._pgpass)

    def tool(self, argv, what, dbname=None, **kw):
        return self.target.run(argv, env=self.env(), what=what, **kw)

    def psql(self, statement, dbname=None, what="psql"):
        argv = ["psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", *pg_conn_args(self.db, dbname), "-c", statement]
        result = self.target.run(argv, env=self.env(), what=what, check=False)
        if result.exited != 0:
            raise RemigrateError(explain_pg_error(result.stderr, self.db))
        return result.stdout.strip()

    def tool_version(self, tool):
        result = self.target.run([tool, "--version"], check=False)
        version = parse_tool_version(result.stdout) if result.exited == 0 else None
        if not version:
            raise RemigrateError(f"{tool} not found on {self.target.name}; install the PostgreSQL client programs "
                                 "(Debian/Ubuntu: apt-get install postgresql-client) or put them on PATH")
        return version

    def preflight(self, archive_version=None):
        """Client programs present and new enough, server reachable with these credentials."""
        for tool in PG_TOOLS:
            self.versions[tool] = self.tool_version(tool)
        server = int(self.psql("SHOW server_version_num", what="connecting to PostgreSQL"))
        major = server // 10000
        self.versions["server"] = (major, server % 10000)
        if self.versions["pg_dump"][0] < major:
            raise RemigrateError(f"pg_dump {self.versions['pg_dump'][0]} is older than the server ({major}); "
                                 f"install postgresql-client-{major} or newer")
        if archive_version and self.versions["pg_restore"] < tuple(archive_version):
            raise RemigrateError(f"the backup was made by pg_dump {archive_version[0]}, newer than pg_restore "
                                 f"{self.versions['pg_restore'][0]} here; install a newer postgresql-client")
        return {"server_version_num": server}

    def stats(self):
        return self.project.probe("stats", what="counting rows")

    def size_estimate(self, stats):
        return int(stats["properties"]["size_bytes"])

    def dump(self, path):
        self.tool(["pg_dump", "--format=custom", f"--file={path}", *pg_conn_args(self.db)], what="pg_dump")
        return {"tool": "pg_dump", "tool_version": list(self.versions.get("pg_dump") or self.tool_version("pg_dump"))}

    def verify_dump(self, path):
        """A full read of the archive: `pg_restore -l` alone accepts a truncated one."""
        listing = self.target.run(["pg_restore", "--list", path], what="reading the backup's table of contents").stdout
        self.target.run(["pg_restore", "--file=/dev/null", path], what="reading the whole backup")
        match = re.search(r"Dumped by pg_dump version: (\d+)\.(\d+)", listing)
        return {"dumped_by": [int(match.group(1)), int(match.group(2))] if match else None,
                "entries": sum(1 for ln in listing.splitlines() if ln and not ln.startswith(";"))}

    def restore(self, path, manifest, current):
        """Put the database back as it was: in one transaction, drop what the backup did not have,
        then the backup's own --clean script (drops and recreates every object it holds)."""
        known = {(r["schema"], r["name"]) for r in manifest["database"]["relations"]}
        extra = [r for r in current["relations"] if (r["schema"], r["name"]) not in known]
        pre = posixpath.join(self.project.workdir, "pre-restore.sql")
        self.target.write_private(pre, drop_statements(extra))
        restore_script = ["pg_restore", "--clean", "--if-exists", "--file=-", path]
        apply = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction", *pg_conn_args(self.db), "-f", "-"]
        line = pipeline(group(["cat", pre], restore_script), apply, env=self.env())
        try:
            self.target.shell(line, what="pg_restore into the database")
        except CommandFailed as exc:
            raise RemigrateError(f"restore failed and was rolled back (one transaction): {exc}")
        return {"dropped_extra": [f"{r['schema']}.{r['name']}" for r in extra]}


class Sqlite(Engine):
    name = "sqlite"
    dump_file = "db.sqlite3"

    def preflight(self, archive_version=None):
        if not self.db.name or self.db.name == ":memory:":
            raise RemigrateError("the SQLite database is in memory; there is nothing to back up")
        if not self.target.exists(self.db.name, "-f"):
            raise RemigrateError(f"SQLite database {self.db.name} does not exist on {self.target.name}; check DB_PATH or DATABASE_URL")
        return {}

    def stats(self):
        return self.project.probe("file-stats", self.db.name, what="reading the SQLite database")

    def size_estimate(self, stats):
        props = stats["properties"]
        return int(props.get("page_count", 0)) * int(props.get("page_size", 4096))

    def dump(self, path):
        # The online backup API: a `cp` of a live WAL database can lose committed rows.
        copy = self.project.probe("sqlite-backup", self.db.name, path, what="SQLite online backup")
        return {"tool": "sqlite3 backup API", "tool_version": copy["server_version"], "stats": copy}

    def verify_dump(self, path):
        stats = self.project.probe("sqlite-verify", path, what="checking the SQLite backup")
        return {"integrity_check": "ok", "tables": len(stats["tables"])}

    def restore(self, path, manifest, current):
        self.project.probe("sqlite-restore", path, self.db.name, what="SQLite restore")
        return {}


ENGINES = {"postgresql": Postgres, "sqlite": Sqlite}
DJANGO_ENGINES = {
    "django.db.backends.postgresql": "postgresql",
    "django.db.backends.postgresql_psycopg2": "postgresql",
    "django.contrib.gis.db.backends.postgis": "postgresql",
    "django.db.backends.sqlite3": "sqlite",
}


def engine_name(django_engine):
    name = DJANGO_ENGINES.get(django_engine)
    if not name:
        supported = ", ".join(sorted(DJANGO_ENGINES))
        raise RemigrateError(f"database engine {django_engine!r} is not supported; supported engines: {supported}")
    return name


def engine_for(project):
    return ENGINES[engine_name(project.db.engine)](project)
