"""The machine the work happens on: the laptop (invoke.Context) or a host (fabric.Connection).

Every command goes through the task's context, so one code path serves `inv` and `fab -H`.
Commands are argv lists quoted once here; environment values travel as `env K=V` words
(never Fabric's env=, which it pastes unquoted) and never carry secrets: those go in 0600 files.
"""
import contextlib
import errno
import functools
import io
import json
import os
import queue
import re
import shlex
import shutil
import socket
import stat
import time

from invoke.runners import Local

from tasks.console import PROGRESS, RemigrateError, Secrets, check_stop, stops_only_noted


def command_line(argv, env=None, cwd=None):
    """One shell command line from an argv list, optional environment and working folder."""
    words = list(argv)
    if env:
        words = ["env", *[f"{k}={v}" for k, v in sorted(env.items())], *words]
    line = shlex.join(words)
    if cwd:
        line = f"cd {shlex.quote(str(cwd))} && {line}"
    return line


def group(*argvs):
    """Several argv lists run one after the other (stopping at the first failure) as one producer."""
    return "{ " + " && ".join(shlex.join(a) for a in argvs) + "; }"


def pipeline(*parts, env=None, cwd=None):
    """argv lists (or group()s) joined by pipes, run by bash with pipefail so no failure is hidden."""
    script = " | ".join(p if isinstance(p, str) else shlex.join(p) for p in parts)
    return command_line(["bash", "-o", "pipefail", "-c", script], env=env, cwd=cwd)


def parallel(*argvs, env=None):
    """argv lists run at the same time; fails if any of them fails (after all have ended)."""
    starts = "".join(f"{shlex.join(a)} & pids+=($!); " for a in argvs)
    script = f"pids=(); {starts}rc=0; for p in \"${{pids[@]}}\"; do wait \"$p\" || rc=1; done; exit $rc"
    return command_line(["bash", "-c", script], env=env)


def check_host_keys(c):
    """Fabric accepts any host key by default; remigrate checks it against known_hosts
    (ssh_config's UserKnownHostsFile, else ~/.ssh/known_hosts) and refuses an unknown host
    unless remigrate.accept_unknown_hosts is set."""
    from paramiko.client import AutoAddPolicy, RejectPolicy

    files = str(c.ssh_config.get("userknownhostsfile", "~/.ssh/known_hosts")).split()
    for name in files:
        path = os.path.expanduser(name)
        if os.path.exists(path):
            c.client.load_host_keys(path)
    accept = (c.config.get("remigrate") or {}).get("accept_unknown_hosts")
    c.client.set_missing_host_key_policy(AutoAddPolicy() if accept else RejectPolicy())


OWNER = "owner.json"


def owner_mark():
    """Who made a scratch folder: this machine (host name and machine id, since host names
    repeat across laptops and containers) and this process."""
    try:
        machine = open("/etc/machine-id", encoding="ascii").read().strip()
    except OSError:
        machine = ""
    return {"host": socket.gethostname(), "machine": machine, "pid": os.getpid()}


def pid_alive(pid):
    try:
        os.kill(int(pid), 0)
        return True
    except PermissionError:  # another user's process (a run under sudo): alive
        return True
    except (OSError, TypeError, ValueError):
        return False


def write_private_sftp(sftp, path, data):
    """Create `path` (never over an existing file) 0600 from the start: the mode goes with the
    OPEN request, as it does to open(2) (paramiko's own open sends none: the file would be
    created 0644 minus nothing until a chmod), then set again for servers that ignore it; the
    size written is checked before the file is used (paramiko does not report a failed CLOSE)."""
    from paramiko.sftp import CMD_HANDLE, CMD_OPEN, SFTP_FLAG_CREATE, SFTP_FLAG_EXCL, SFTP_FLAG_WRITE
    from paramiko.sftp_attr import SFTPAttributes
    from paramiko.sftp_file import SFTPFile

    attrs = SFTPAttributes()
    attrs.st_mode = 0o600
    kind, msg = sftp._request(CMD_OPEN, path, SFTP_FLAG_WRITE | SFTP_FLAG_CREATE | SFTP_FLAG_EXCL, attrs)
    if kind != CMD_HANDLE:
        raise OSError(f"the server answered the creation of {path} with no file handle")
    with SFTPFile(sftp, msg.get_binary(), "wb", -1) as fh:
        fh.chmod(0o600)
        fh.write(data)
    written = sftp.stat(path).st_size
    if written != len(data):
        raise OSError(f"{path} holds {written} bytes of {len(data)}")


def replaced_over_sftp(sftp, path, final):
    """Rename `path` over `final` atomically with OpenSSH's posix-rename extension; False where
    the server has none."""
    try:
        sftp.posix_rename(path, final)
    except OSError:
        return False
    return True


# Prints "folder<TAB>owner.json" for every scratch folder of ours, "folder<TAB>{}" for ours that
# lost their owner mark over an hour ago (Target.remove_dead_private_dirs judges them).
DEAD_DIRS_SCAN = ('for d in "${TMPDIR:-/tmp}"/remigrate.*; do '
                  'if [ -f "$d/owner.json" ]; then printf "%s\\t%s\\n" "$d" "$(cat "$d/owner.json")"; '
                  'elif [ -O "$d" ] && [ -f "$d/remigrate_probe.py" ] && '
                  '[ -n "$(find "$d" -maxdepth 0 -mmin +60)" ]; then printf "%s\\t{}\\n" "$d"; fi; '
                  'done; true')


# `test` kinds that a stat answers, for a host (Target.exists): a symlink is followed, as by `test`
STAT_KINDS = {"-e": lambda mode: True, "-f": stat.S_ISREG, "-d": stat.S_ISDIR}
NOT_THERE = (errno.ENOENT, errno.EACCES, errno.ENOTDIR)  # what paramiko makes of "no such file", "permission denied"


class CommandFailed(RemigrateError):
    def __init__(self, what, result):
        self.exited = result.exited
        self.stderr = Secrets.scrub(result.stderr or "")
        self.stdout = Secrets.scrub(result.stdout or "")
        lines = [ln.strip() for ln in (self.stderr or self.stdout).strip().splitlines()
                 if ln.strip() and not ln.startswith("REMIGRATE-PROGRESS: ")]  # the probe's progress lines
        # A Python traceback's last line says what went wrong (warnings before it do not);
        # otherwise the first ERROR/FATAL line; the lines after it are context.
        raised = [ln for ln in lines if re.match(r"^[\w.]+(Error|Exception|Exit): ", ln) and "Warning" not in ln]
        errors = [ln for ln in lines if "Warning:" not in ln and any(w in ln for w in ("ERROR", "FATAL", "error:", "Error:"))]
        if raised:
            detail = raised[-1]
        else:
            detail = (errors or lines or [f"exit code {result.exited}"])[0 if errors else -1]
        super().__init__(f"{what} failed: {detail}")


class QuickLocal(Local):
    """invoke's local runner, looking whether a command has ended every 2 ms instead of 10: a
    reset runs some sixty short commands (psql, pg_restore --list), each waiting for that look."""
    input_sleep = 0.002


class Feed:
    """A process's standard input, written by this process while the other runs; it ends (EOF)
    when closed. If this process dies first, the pipe (or the SSH channel) closes with it, so
    the process reading it sees the end too."""

    def __init__(self):
        self._queue = queue.Queue()
        self._closed = False

    def isatty(self):
        return False

    def read(self, _size=None):
        if self._closed:
            return ""  # invoke reads on until the process has ended
        text = self._queue.get()  # invoke asks for a byte at a time; all queued text is given at once
        while not self._queue.empty():
            text += self._queue.get()
        if text.endswith("\0"):
            self._closed = True
            text = text[:-1]
        return text

    def write(self, text):
        self._queue.put(text)

    def close(self):
        self._queue.put("\0")


class Held:
    """A command that runs for as long as a run holds something (a session, a lock, a server),
    reading what this process feeds it. Its output is read either line by line as it is
    consumed (next_line, for a server whose output would otherwise pile up) or by looking at
    what came (new_lines, leaving the output for its result): one or the other per command."""

    def __init__(self, c, line):
        self.stdin = Feed()
        self.promise = c.run(line, hide=True, warn=True, asynchronous=True, in_stream=self.stdin)
        self._pending = ""
        self._read = {}  # stream -> (chunks seen, partial line): new_lines()

    @property
    def finished(self):
        return self.promise.runner.process_is_finished

    def next_line(self, timeout=None):
        """Its next line of output, or None if it ended (or said nothing within `timeout`)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.001
        while deadline is None or time.monotonic() < deadline:
            chunks = self.promise.runner.stdout
            if chunks:  # taken out of invoke's buffer, which only ever appends
                n = len(chunks)
                self._pending += "".join(chunks[:n])
                del chunks[:n]
            if "\n" in self._pending:
                line, self._pending = self._pending.split("\n", 1)
                return line
            if self.finished and not self.promise.runner.stdout:
                return None
            time.sleep(pause)
            pause = min(pause * 2, 0.02)
        return None

    def release(self):
        """Close its input and wait for it to end; returns its result."""
        self.stdin.close()
        return self.promise.join()

    def new_lines(self):
        """Complete lines of output (both streams) that came since the last call, left in place
        for its result."""
        out = []
        for name in ("stdout", "stderr"):
            chunks = getattr(self.promise.runner, name)
            seen, partial = self._read.get(name, (0, ""))
            text = partial + "".join(chunks[seen:])
            *lines, partial = text.split("\n")
            self._read[name] = (len(chunks), partial)
            out += lines
        return out


class Target:
    """Run commands and move files on the laptop or on a host, through the task's context."""

    def __init__(self, c):
        self.c = c
        self.remote = hasattr(c, "sftp") and hasattr(c, "host")
        self.name = getattr(c, "original_host", None) or c.host if self.remote else "local"
        if self.remote and not c.is_connected:
            check_host_keys(c)

    def run(self, argv, *, env=None, cwd=None, what=None, check=True, timeout=None):
        return self.shell(command_line(argv, env=env, cwd=cwd), what=what or argv[0], check=check, timeout=timeout)

    def shell(self, line, *, what, check=True, timeout=None):
        # in_stream=False: never forward our stdin (no hang in CI, no typed input leaking in).
        result = self.c.run(line, hide=True, warn=True, in_stream=False, timeout=timeout)
        return self._checked(result, what, check)

    @staticmethod
    def _checked(result, what, check):
        check_stop()  # a SIGTERM that arrived while the command ran
        if check and result.exited != 0:
            raise CommandFailed(what, result)
        return result

    def hold(self, argv, *, env=None, cwd=None):
        """Start a command that runs until released (or until this process dies)."""
        return Held(self.c, command_line(argv, env=env, cwd=cwd))

    def watched(self, line, *, what, on_line):
        """A shell line whose output lines are shown to `on_line` as they come (for progress)."""
        held = Held(self.c, line)
        pause = 0.001
        try:
            while not held.finished:
                time.sleep(pause)
                pause = min(pause * 2, 0.5)  # a short command is not kept waiting
                for text in held.new_lines():
                    on_line(text)
        finally:
            result = held.release()
            PROGRESS.close()
        return self._checked(result, what, check=True)

    def exists(self, path, kind="-e"):
        """`test kind path`. On a host, the kinds a stat answers (-e, -f, -d) are asked over the
        open SFTP session: a command costs a new SSH session (and the login shell's rc files)."""
        if self.remote and kind in STAT_KINDS:
            _path, mode = self._remote_stat(str(path), f"looking for {path}")
            return mode is not None and STAT_KINDS[kind](mode)
        return self.run(["test", kind, str(path)], check=False).exited == 0

    def first_executable(self, paths):
        """The first of `paths` that `test -x` passes, or None (one command for them all)."""
        found = self.run(["sh", "-c", 'for p; do if [ -x "$p" ]; then printf %s "$p"; exit 0; fi; done; exit 1', "sh",
                          *paths], check=False)
        return found.stdout.strip() if found.exited == 0 and found.stdout.strip() in paths else None

    def real_dir(self, path):
        """The folder's absolute path with its symlinks resolved (`cd path && pwd -P`; relative to
        the login folder), or "" when it is no folder."""
        if self.remote:
            resolved, mode = self._remote_stat(str(path or "."), f"looking for the folder {path}", resolve=True)
            return resolved if mode is not None and stat.S_ISDIR(mode) else ""
        return self.run(["sh", "-c", 'cd "$1" 2>/dev/null && pwd -P', "sh", path or "."], check=False).stdout.strip()

    def _remote_stat(self, path, what, resolve=False):
        """(path, its mode) on the host over SFTP, the path first resolved by the server's realpath
        with `resolve`; the mode is None where `test` would say no (gone, or not ours to see), any
        other failure an error naming the host and `what`."""
        try:
            with self.sftp() as sftp:
                if resolve:
                    path = sftp.normalize(path)
                return path, sftp.stat(path).st_mode
        except OSError as exc:
            if exc.errno in NOT_THERE:
                return path, None
            raise self.sftp_failed(what, exc) from None

    @contextlib.contextmanager
    def sftp(self):
        """The connection's SFTP session, opened again if the connection was (Fabric reconnects a
        dropped connection for the next command, but keeps its dead SFTP client); a Ctrl-C or
        SIGTERM meanwhile is noted, never raised half-way through a request (the session would
        be out of step for the rollback that follows)."""
        c = self.c
        current = getattr(c, "_sftp", None)  # (Fabric's cache of it)
        if current is not None:
            channel = current.get_channel()
            if channel is None or channel.closed or not channel.get_transport().is_active():
                c._sftp = None
        if not c.is_connected:
            c.open()
        with stops_only_noted():
            yield c.sftp()
        check_stop()

    def sftp_failed(self, what, exc):
        return RemigrateError(f"{what} on {self.name} over SFTP failed: {exc.strerror or exc} "
                              "(check the SSH connection and that the host's sshd offers the sftp subsystem)")

    @functools.cached_property
    def home(self):
        """The home folder of the user the commands run as (asked once)."""
        return self.run(["sh", "-c", 'printf %s "$HOME"'], check=False).stdout.strip() or "/tmp"

    def make_private_dir(self):
        """A 0700 scratch folder for one task (it may hold a pgpass file), marked with its owner so
        that a later run removes it if this one is killed before it can. (One command looks for
        the dead runs' folders and makes this one: on a host, each command is an SSH session.)"""
        found = self.run(["sh", "-c", f'{DEAD_DIRS_SCAN}; printf "%s\\n" "$(mktemp -d -t remigrate.XXXXXXXX)"'],
                         what="creating a private temporary folder")
        *lines, path = found.stdout.splitlines() or [""]
        if not path.startswith("/"):
            raise RemigrateError(f"could not create a private temporary folder on {self.name} (mktemp -d): "
                                 f"{found.stderr.strip()[:200] or 'no folder made'}")
        self._remove_dead(lines)
        self.write_private(f"{path}/{OWNER}", json.dumps(owner_mark()))
        return path

    def remove_dead_private_dirs(self):
        """Scratch folders of runs of this machine whose process is gone (killed with kill -9), and
        ours that lost their owner mark (a removal cut short) and were left for an hour."""
        self._remove_dead(self.run(["sh", "-c", DEAD_DIRS_SCAN], check=False).stdout.splitlines())

    def _remove_dead(self, lines):
        me = owner_mark()
        for line in lines:
            folder, _, text = line.partition("\t")
            try:
                owner = json.loads(text)
            except ValueError:
                continue
            if owner == {} or ((owner.get("host"), owner.get("machine")) == (me["host"], me["machine"])
                               and not pid_alive(owner.get("pid"))):
                self.remove_tree(folder)

    def remove_tree(self, path):
        """Remove a folder, its password file first (if the removal is cut short, no secret stays)."""
        self.run(["sh", "-c", 'rm -f -- "$1/pgpass"; rm -rf -- "$1"', "sh", str(path)], check=False)

    def read_text(self, path):
        if self.remote:
            buf = io.BytesIO()
            with self.sftp():  # (the transfer uses the session this makes sure of)
                self.c.get(str(path), buf)
            return buf.getvalue().decode("utf-8")
        with open(path, encoding="utf-8") as fh:
            return fh.read()

    def write_private(self, path, text, replace=False):
        """Write a file readable by its owner only (created 0600, never world-readable for an instant).
        With replace, an existing file is swapped for the new one atomically (journals, reports)."""
        data = text.encode("utf-8")
        final, path = str(path), (f"{path}.tmp" if replace else str(path))
        if self.remote:
            try:
                with self.sftp() as sftp:
                    if replace:  # left by a run killed half-way
                        with contextlib.suppress(OSError):
                            sftp.remove(path)
                    write_private_sftp(sftp, path, data)
                    in_place = not replace or replaced_over_sftp(sftp, path, final)
            except OSError as exc:
                if not replace and exc.errno is None and self.exists(path):  # SFTP v3 says only "Failure"
                    raise RemigrateError(f"writing {final} on {self.name}: it exists already") from None
                raise self.sftp_failed(f"writing {final}", exc) from None
            if not in_place:  # a server without posix-rename (SFTP's own rename never replaces): mv does it atomically
                self.run(["mv", "-f", "--", path, final], what=f"putting {final} in place")
            return
        if replace and os.path.exists(path):
            os.unlink(path)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        if replace:
            os.replace(path, final)

    def put_file(self, local_path, remote_path):
        if self.remote:
            self.c.put(str(local_path), str(remote_path))
        else:
            shutil.copyfile(local_path, remote_path)
