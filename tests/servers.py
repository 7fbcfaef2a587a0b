"""Real servers for the tests, started from installed programs on loopback and free ports.

PostgreSQL: a throwaway cluster made with initdb/pg_ctl. When the tests run as root the
cluster runs as the unprivileged user "nobody" (initdb refuses root), like a real server
that does not share the tests' identity.
"""
import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

SUPERUSER = "pgadmin"
SUPERUSER_PASSWORD = "admin-secret"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pg_bindir():
    """The folder of initdb/pg_ctl: on PATH, else Debian's newest /usr/lib/postgresql/N/bin."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return str(Path(os.path.realpath(found)).parent)
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not candidates:
        return None
    return str(Path(candidates[-1]).parent)


def _as_server_user(argv):
    if os.geteuid() != 0:
        return argv
    return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--reset-env", "--", *argv]


@dataclass
class PgCluster:
    bindir: str
    root: Path
    port: int
    host: str = "127.0.0.1"

    @property
    def datadir(self):
        return self.root / "data"

    def admin_env(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(PGHOST=self.host, PGPORT=str(self.port), PGUSER=SUPERUSER, PGPASSWORD=SUPERUSER_PASSWORD, PGDATABASE="postgres")
        return env

    def sql(self, statement, dbname="postgres"):
        """Run SQL as the superuser; returns stdout (tuples only, unaligned)."""
        out = subprocess.run(
            ["psql", "-X", "-w", "-At", "-v", "ON_ERROR_STOP=1", "-d", dbname, "-c", statement],
            env=self.admin_env(), capture_output=True, text=True,
        )
        if out.returncode:
            raise RuntimeError(f"psql failed: {out.stderr.strip()}")
        return out.stdout

    def create_app_database(self, dbname, role, password, createdb=False):
        """A login role that owns its database and is not a superuser (the usual production shape)."""
        with psycopg_admin(self) as conn:
            from psycopg import sql

            conn.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER {} PASSWORD {}").format(
                sql.Identifier(role), sql.SQL("CREATEDB" if createdb else "NOCREATEDB"), sql.Literal(password)))
            conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(dbname), sql.Identifier(role)))

    def drop_app_database(self, dbname, role):
        with psycopg_admin(self) as conn:
            from psycopg import sql

            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))

    def stop(self):
        subprocess.run(_as_server_user([f"{self.bindir}/pg_ctl", "-D", str(self.datadir), "-m", "immediate", "-w", "stop"]),
                       capture_output=True)


@contextlib.contextmanager
def psycopg_admin(cluster, dbname="postgres"):
    import psycopg

    conn = psycopg.connect(host=cluster.host, port=cluster.port, user=SUPERUSER, password=SUPERUSER_PASSWORD,
                           dbname=dbname, autocommit=True)
    try:
        yield conn
    finally:
        conn.close()


@contextlib.contextmanager
def pg_cluster():
    bindir = pg_bindir()
    if not bindir:
        raise RuntimeError("PostgreSQL server programs (initdb, pg_ctl) are not installed: apt-get install postgresql")
    root = Path(tempfile.mkdtemp(prefix="remigrate-pg-"))
    try:
        os.chmod(root, 0o755)
        (root / "data").mkdir()
        (root / "sock").mkdir()
        pwfile = root / "pw"
        pwfile.write_text(SUPERUSER_PASSWORD + "\n")
        if os.geteuid() == 0:
            shutil.chown(root / "data", "nobody", "nogroup")
            shutil.chown(root / "sock", "nobody", "nogroup")
            shutil.chown(pwfile, "nobody", "nogroup")
        subprocess.run(_as_server_user([f"{bindir}/initdb", "-D", str(root / "data"), "-U", SUPERUSER, f"--pwfile={pwfile}",
                                        "--auth=scram-sha-256", "-E", "UTF8", "--locale=C.UTF-8"]),
                       check=True, capture_output=True)
        pwfile.unlink()
        port = free_port()
        opts = f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={root / 'sock'} -c fsync=off -c full_page_writes=off"
        subprocess.run(_as_server_user([f"{bindir}/pg_ctl", "-D", str(root / "data"), "-l", str(root / "sock" / "log"),
                                        "-o", opts, "-w", "-t", "60", "start"]), check=True, capture_output=True)
        cluster = PgCluster(bindir=bindir, root=root, port=port)
        for _ in range(100):
            try:
                cluster.sql("SELECT 1")
                break
            except RuntimeError:
                time.sleep(0.1)
        try:
            yield cluster
        finally:
            cluster.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
