"""Fixtures: a clean environment, a real PostgreSQL cluster, scratch copies of the sample project,
and a runner for the real `inv` command line."""
import itertools
import os
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from servers import SUPERUSER, pg_cluster, psycopg_admin  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "examples" / "igny8"
PYTHON = sys.executable
# A password that breaks naive quoting: URL, shell, pgpass and printf specials, and spaces.
NASTY_PASSWORD = "p@ss:w/o#r%d $HOME `x` \\ 'q' \"dq\" end"
HIDDEN_PREFIXES = ("DATABASE_URL", "DB_", "PG", "INVOKE_", "FABRIC_", "DJANGO_SETTINGS_MODULE")


# Modules whose tests run for 10-60 s each (whole resets, over SSH or killed midway) go first: the
# workers then finish together on the many short tests instead of one waiting for a long test
# picked up last. Everything else keeps its collection order.
SLOW_FIRST = ("test_remote", "test_strategies", "test_atelier_strategies", "test_faults", "test_reset")


def pytest_collection_modifyitems(items):
    def rank(item):
        module = item.module.__name__ if item.module else ""
        return SLOW_FIRST.index(module) if module in SLOW_FIRST else len(SLOW_FIRST)

    items.sort(key=rank)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch, tmp_path):
    """Tests see only what they set: no developer DATABASE_URL, DB_*, PG*, INVOKE_*, FABRIC_*."""
    for key in list(os.environ):
        if key.startswith(HIDDEN_PREFIXES):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.invoke.yaml, ~/.pgpass of the developer
    (tmp_path / "home").mkdir()


@pytest.fixture(scope="session")
def pg():
    with pg_cluster() as cluster:
        yield cluster


_ids = itertools.count(1)


@dataclass
class PgDb:
    cluster: object
    name: str
    role: str
    password: str

    @property
    def url(self):
        return f"postgres://{quote(self.role, safe='')}:{quote(self.password, safe='')}@127.0.0.1:{self.cluster.port}/{self.name}"

    def env(self):
        return {"DATABASE_URL": self.url}

    def connect(self):
        import psycopg

        return psycopg.connect(host="127.0.0.1", port=self.cluster.port, user=self.role, password=self.password,
                               dbname=self.name, autocommit=True)


@pytest.fixture
def pg_db(pg):
    n = next(_ids)
    db = PgDb(pg, f"sample_{n}", f"app_{n}", NASTY_PASSWORD)
    # Not a superuser; CREATEDB because the rebuild drops and creates its database.
    pg.create_app_database(db.name, db.role, db.password, createdb=True)
    yield db
    pg.drop_app_database(db.name, db.role)


@pytest.fixture
def project(tmp_path):
    """A scratch copy of the sample project."""
    dest = tmp_path / "igny8"
    shutil.copytree(SAMPLE, dest, ignore=shutil.ignore_patterns("__pycache__", "*.sqlite3", ".remigrate", ".env"))
    return dest


def manage(project_dir, env, *args):
    full = {**os.environ, **env}
    out = subprocess.run([PYTHON, "manage.py", *args], cwd=project_dir, env=full, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout


def seed(project_dir, env, scale=1):
    manage(project_dir, env, "migrate", "-v0")
    manage(project_dir, env, "seed_sample", f"--scale={scale}")


@pytest.fixture(scope="session")
def seeded_sqlite_file(tmp_path_factory):
    """The sample project migrated and seeded once; tests get copies (seeding takes seconds)."""
    folder = tmp_path_factory.mktemp("seeded-sqlite")
    path = folder / "db.sqlite3"
    seed(SAMPLE, {"DB_PATH": str(path)})
    return path


@pytest.fixture(scope="session")
def seeded_pg_template(pg):
    """A seeded PostgreSQL database to copy from: made once by its own role, owned by the superuser
    so that a copy can hand every object to the copy's role (REASSIGN OWNED)."""
    db = PgDb(pg, "seeded_template", "template_owner", NASTY_PASSWORD)
    pg.create_app_database(db.name, db.role, db.password)
    seed(SAMPLE, db.env())
    with psycopg_admin(pg) as conn:
        conn.execute(f"ALTER DATABASE {db.name} OWNER TO {SUPERUSER}")
    return db


def sqlite_copy(project, template):
    path = project / "db.sqlite3"
    shutil.copyfile(template, path)
    return {"DB_PATH": str(path)}


def pg_copy(db, template):
    """Fill db (empty, owned by its role) with a copy of the seeded template."""
    from psycopg import sql

    with psycopg_admin(db.cluster) as conn:
        conn.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(db.name)))
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {} OWNER {}").format(
            sql.Identifier(db.name), sql.Identifier(template.name), sql.Identifier(db.role)))
    with psycopg_admin(db.cluster, db.name) as conn:
        conn.execute(sql.SQL("REASSIGN OWNED BY {} TO {}").format(sql.Identifier(template.role), sql.Identifier(db.role)))


@pytest.fixture
def sqlite_project(project, seeded_sqlite_file):
    return project, sqlite_copy(project, seeded_sqlite_file)


@pytest.fixture
def pg_project(project, pg_db, seeded_pg_template):
    pg_copy(pg_db, seeded_pg_template)
    return project, pg_db.env(), pg_db


def run_inv(*args, env=None, cwd=REPO, timeout=300, stdin=subprocess.DEVNULL):
    """The real command line: `python -m invoke ARGS` in the repository, no terminal."""
    full = {**os.environ, **(env or {})}
    return subprocess.run([PYTHON, "-m", "invoke", *args], cwd=cwd, env=full, capture_output=True, text=True,
                          timeout=timeout, stdin=stdin)


# ---------------------------------------------------------------- row snapshots

def _by_column(cursor):
    """Rows as sorted (column, value) tuples: a rebuilt table may order its columns differently."""
    names = [d[0] for d in cursor.description]
    return sorted((tuple(sorted(zip(names, row), key=lambda p: p[0])) for row in cursor.fetchall()), key=repr)


def sqlite_rows(path):
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")]
        # An FTS5 table's shadow tables are its index, rebuilt by a reload: its rows are compared instead.
        virtual = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE sql LIKE 'CREATE VIRTUAL TABLE%'")]
        tables = [t for t in tables if not any(t.startswith(v + "_") for v in virtual)]
        out = {t: _by_column(conn.execute(f'SELECT {"rowid, " if t in virtual else ""}* FROM "{t}"')) for t in tables}
        out["sqlite_sequence"] = sorted(conn.execute("SELECT * FROM sqlite_sequence").fetchall())
        return out
    finally:
        conn.close()


def pg_rows(db):
    from psycopg import sql

    with psycopg_admin(db.cluster, db.name) as conn:
        tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname='public'")]
        out = {t: _by_column(conn.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(t)))) for t in tables}
        seqs = conn.execute("SELECT sequencename, last_value FROM pg_sequences WHERE schemaname='public'").fetchall()
        out["<sequences>"] = sorted(seqs)
        return out


@dataclass
class EngineCase:
    """A seeded sample project on one engine, with how to read and damage its rows."""

    engine: str
    project: Path
    env: dict
    rows: object
    execute: object
    pg_db: object = None

    def damage(self, statements):
        self.execute(statements)


def _sqlite_execute(path):
    def run(statements):
        conn = sqlite3.connect(path)
        with conn:
            for statement in statements:
                conn.execute(statement)
        conn.close()

    return run


def _pg_execute(db):
    def run(statements):
        with db.connect() as conn, conn.transaction():  # one transaction: deferred foreign keys checked at the end
            for statement in statements:
                conn.execute(statement)

    return run


@pytest.fixture(params=["sqlite", "postgresql"])
def seeded(request, project):
    """The same test on every engine: the sample project seeded on SQLite, then on PostgreSQL."""
    return engine_case(request, project, request.param)


@pytest.fixture
def sqlite_case(request, project):
    """The seeded sample project on SQLite only (for what only a SQLite file can show)."""
    return engine_case(request, project, "sqlite")


@pytest.fixture
def pg_case(request, project):
    """The seeded sample project on PostgreSQL only (for what only a server can show)."""
    return engine_case(request, project, "postgresql")


def engine_case(request, project, engine):
    if engine == "sqlite":
        env = sqlite_copy(project, request.getfixturevalue("seeded_sqlite_file"))
        path = Path(env["DB_PATH"])
        return EngineCase("sqlite", project, env, lambda: sqlite_rows(path), _sqlite_execute(path))
    db = request.getfixturevalue("pg_db")
    pg_copy(db, request.getfixturevalue("seeded_pg_template"))
    return EngineCase("postgresql", project, db.env(), lambda: pg_rows(db), _pg_execute(db), db)
