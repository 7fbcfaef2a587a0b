"""The database password never reaches a child's argv, the output, or a bundle's manifest."""
import os
import shutil
import threading
from pathlib import Path

from conftest import NASTY_PASSWORD, PYTHON, run_inv
from test_backup import damage_pg

LOGGED = ("pg_dump", "pg_restore", "psql", "env", "bash", "cat", "sh")


def make_shims(folder, log):
    """Wrappers that record every argv they get, then exec the real program."""
    folder.mkdir()
    for name in LOGGED:
        real = shutil.which(name)
        (folder / name).write_text(f'#!/bin/sh\nprintf "%s\\n" "{name} $*" >> {log}\nexec {real} "$@"\n')
        (folder / name).chmod(0o755)
    (folder / "python").write_text(f'#!/bin/sh\nprintf "%s\\n" "python $*" >> {log}\nexec {PYTHON} "$@"\n')
    (folder / "python").chmod(0o755)
    return folder


def parents():
    """{pid: parent pid} of every process now."""
    out = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
                out[int(pid)] = int(stat.rsplit(")", 1)[1].split()[1])  # the name may hold spaces and parentheses
            except (OSError, ValueError, IndexError):
                pass
    return out


class ArgvWatcher(threading.Thread):
    """Reads the command line of every process this test started (its descendants, the SSH
    server's sessions included) while the run goes on; other processes on the machine are
    none of its business."""

    def __init__(self):
        super().__init__(daemon=True)
        self.seen = set()
        self.stop = threading.Event()
        self.root = os.getpid()

    def mine(self, pid, tree):
        while pid and pid in tree:
            if pid == self.root:
                return True
            pid = tree[pid]
        return False

    def run(self):
        while not self.stop.is_set():
            tree = parents()
            for pid in tree:
                if pid != self.root and self.mine(pid, tree):
                    try:
                        self.seen.add(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace"))
                    except OSError:
                        pass
            self.stop.wait(0.005)


def test_password_never_in_argv_output_or_manifest(pg_project, tmp_path):
    project, env, db = pg_project
    log = tmp_path / "argv.log"
    shims = make_shims(tmp_path / "shims", log)
    env = {**env, "PATH": f"{shims}:{os.environ['PATH']}"}
    common = ["--project-dir", str(project), "--python", str(shims / "python")]
    watcher = ArgvWatcher()
    watcher.start()
    try:
        outputs = [run_inv("detect", *common, env=env), run_inv("backup", *common, "--backup-dir", str(tmp_path / "b"), env=env)]
        damage_pg(db)
        outputs.append(run_inv("restore", *common, "--backup-dir", str(tmp_path / "b"), "--yes", env=env))
        outputs.append(run_inv("backup", "--project-dir", str(project), "--backup-dir", str(tmp_path / "b"),
                               env={**env, "DATABASE_URL": env["DATABASE_URL"].replace("%40", "%41")}))
    finally:
        watcher.stop.set()
        watcher.join()
    assert [o.returncode for o in outputs] == [0, 0, 0, 1], [o.stderr for o in outputs]
    calls = log.read_text()
    assert "pg_dump " in calls and "pg_restore " in calls and "psql " in calls and "python " in calls
    secrets = [NASTY_PASSWORD, "p@ss:w", "$HOME `x`"]
    for secret in secrets:
        assert secret not in calls
        for o in outputs:
            assert secret not in o.stdout and secret not in o.stderr
        for cmdline in watcher.seen:
            assert secret not in cmdline
    assert any("pg_dump" in c for c in watcher.seen) or "pg_dump" in calls
    manifest = (only_bundle_of(tmp_path / "b") / "manifest.json").read_text()
    assert NASTY_PASSWORD not in manifest and "p%40ss" not in manifest
    assert "***" in outputs[0].stdout  # detect shows the password masked


def only_bundle_of(folder):
    return sorted(p for p in Path(folder).iterdir() if p.is_dir() and not p.name.startswith("."))[0]


def test_the_scrubber_masks_whole_secrets_and_their_url_forms_and_never_mangles_words():
    from remigrate_scrub import scrub

    assert scrub("project p at postgres://app:p@db/x", ["p"]) == "project *** at postgres://app:***@db/x"
    assert scrub("sizes 12 and 123", ["12"]) == "sizes *** and 123"
    url = "postgres://app:p%40ss%3Aw%2Fo%23r%25d%20%24HOME@db/x and p@ss:w/o#r%d $HOME"
    assert scrub(url, ["p@ss:w/o#r%d $HOME"]) == "postgres://app:***@db/x and ***"
    assert scrub("nothing here", ["", None]) == "nothing here"
    from remigrate_scrub import masked_url

    assert masked_url("https://ops:p%40ss@shop.example:8443/health?x=1") == "https://ops:***@shop.example:8443/health?x=1"
    assert masked_url("https://shop.example/health") == "https://shop.example/health"


def test_the_check_url_password_is_sent_as_basic_auth_and_never_shown_saved_or_in_argv(sqlite_project, tmp_path):
    """--check-url http://user:password@host/...: the password reaches the application as HTTP basic
    authentication and nowhere else (not the output, the journal, or any process's argv)."""
    import base64
    import http.server
    import json

    password = "hunter2-pw"
    heard = []

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802  (the standard library's name)
            heard.append(self.headers.get("Authorization"))
            good = self.headers.get("Authorization") == "Basic " + base64.b64encode(f"ops:{password}".encode()).decode()
            self.send_response(200 if good else 401)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    project, env = sqlite_project
    url = f"http://ops:{password}@127.0.0.1:{server.server_address[1]}/health"
    watcher = ArgvWatcher()
    watcher.start()
    try:
        out = run_inv("reset", "--project-dir", str(project), "--backup-dir", str(tmp_path / "b"), "--remove-model",
                      "site_building.WorkflowState", "--yes", "--check-url", url, env=env)
    finally:
        watcher.stop.set()
        watcher.join()
        server.shutdown()
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr
    assert heard and heard[-1].startswith("Basic ")
    assert f"--check-url http://ops:***@127.0.0.1:{server.server_address[1]}/health: 200" in out.stdout, out.stdout[-2000:]
    journal = (only_bundle_of(tmp_path / "b") / "journal.json").read_text()
    assert "ops:***@" in json.loads(journal)["plan"]["checks"]["url"]
    children = [c for c in watcher.seen if "-m invoke reset" not in c]  # (the command line typed holds it, as given)
    assert any("remigrate_probe.py" in c for c in children), children
    for text in (out.stdout, out.stderr, journal, *children):
        assert password not in text
