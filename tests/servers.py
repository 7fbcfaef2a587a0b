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


# ---------------------------------------------------------------- SSH

@dataclass
class SshServer:
    """An OpenSSH server on loopback with generated keys, and a client config that knows it."""

    root: Path
    port: int
    user: str
    ssh_config: Path
    known_hosts: Path
    client_key: Path
    process: object = None

    @property
    def host(self):
        return "remigrate-test-host"  # an alias resolved by ssh_config, like a real `prod`

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()


def sshd_path():
    for candidate in ("/usr/sbin/sshd", shutil.which("sshd")):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


@contextlib.contextmanager
def ssh_server():
    """sshd -D on a free loopback port. As root it logs in as root with a test-only key; as
    another user it runs unprivileged and logs in as that user."""
    sshd = sshd_path()
    if not sshd:
        raise RuntimeError("OpenSSH server is not installed: apt-get install openssh-server")
    import getpass

    root = Path(tempfile.mkdtemp(prefix="remigrate-ssh-"))
    os.chmod(root, 0o700)
    user = getpass.getuser()
    try:
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / "host_key")], check=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / "client_key")], check=True)
        (root / "authorized_keys").write_text((root / "client_key.pub").read_text())
        os.chmod(root / "authorized_keys", 0o600)
        port = free_port()
        os.makedirs("/run/sshd", exist_ok=True) if os.geteuid() == 0 else None
        (root / "sshd_config").write_text(
            f"Port {port}\nListenAddress 127.0.0.1\nHostKey {root / 'host_key'}\nPidFile {root / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {root / 'authorized_keys'}\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
            "PubkeyAuthentication yes\nPermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\n"
            "AcceptEnv none\nSubsystem sftp internal-sftp\nLogLevel ERROR\n")
        host_pub = (root / "host_key.pub").read_text().split()
        known_hosts = root / "known_hosts"
        known_hosts.write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
        ssh_config = root / "ssh_config"
        ssh_config.write_text(
            f"Host remigrate-test-host\n  HostName 127.0.0.1\n  Port {port}\n  User {user}\n"
            f"  IdentityFile {root / 'client_key'}\n  UserKnownHostsFile {known_hosts}\n")
        process = subprocess.Popen([sshd, "-D", "-e", "-f", str(root / "sshd_config")], stdout=subprocess.DEVNULL,
                                   stderr=open(root / "sshd.log", "w"))
        server = SshServer(root=root, port=port, user=user, ssh_config=ssh_config, known_hosts=known_hosts,
                           client_key=root / "client_key", process=process)
        for _ in range(100):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            time.sleep(0.1)
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
