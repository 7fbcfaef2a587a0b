"""One lock per database, wherever its backups go, holding the record of the run that has it.

SQLite: a file beside the database file. PostgreSQL: a file named after the database's identity
in ~/.remigrate/locks on the machine that runs the tools. The record says which run holds it
(run id, host, pid, since) and, once its backup is verified, which bundle is that run's own:
rollback and resume take that bundle and no other.
"""
import json
import os
import posixpath
import socket

from tasks import bundle as B
from tasks.console import RemigrateError, warn
from tasks.target import pid_alive


def lock_path(project):
    ident = project.identity()
    if ident["engine"] == "sqlite":
        return ident["path"] + ".remigrate-lock"
    return posixpath.join(project.target.home, ".remigrate", "locks", f"{ident['key']}.lock")


def read(project):
    """The record of the run holding this database's lock, or None."""
    path = lock_path(project)
    if not project.target.exists(path, "-f"):
        return None
    try:
        return json.loads(project.target.read_text(path) or "{}")
    except ValueError:
        return {}


def alive(holder):
    """Whether the holder's process still runs (a lock from another host counts as alive)."""
    return holder.get("host") != socket.gethostname() or pid_alive(holder.get("pid"))


def judge(project, holder):
    """A live holder: refuse. A dead one that never had a verified backup never touched the
    database: say so and clear its lock (returns None). A dead one with a bundle: return it, for
    the caller to resume or roll back."""
    what = B.describe_identity(project.identity())
    if alive(holder):
        raise RemigrateError(f"another reset of {what} is running (run {holder.get('run_id')}, pid {holder.get('pid')} "
                             f"on {holder.get('host')}, since {holder.get('since')}); wait for it to finish")
    if not holder.get("bundle"):
        warn(f"a reset of {what} (run {holder.get('run_id')}, pid {holder.get('pid')}) was interrupted before its "
             "backup was complete: it never touched the database or the migration files; its lock is cleared")
        release(project)
        return None
    return holder


def take(project, run_id, backup_dir):
    """Take the lock for a new run, or explain who has it."""
    path = lock_path(project)
    info = {"run_id": run_id, "host": socket.gethostname(), "pid": os.getpid(),
            "since": B.now().isoformat(timespec="seconds"), "identity": project.identity(),
            "project": project.dir, "backup_dir": backup_dir, "bundle": None}
    for _attempt in range(2):
        got = project.probe("lock", path, json.dumps(info))
        if got["taken"]:
            return info
        if judge(project, got["holder"] or {}) is not None:
            raise interrupted(project, got["holder"])
    raise RemigrateError(f"could not take the lock {path}; another run keeps taking it")


def refuse_if_held(project, consequence=""):
    """Nothing new starts on a database a reset holds: a live run is refused by judge(), a dead
    one with a bundle by the command that finishes it (after `consequence`, if given)."""
    holder = read(project)
    if holder is None or judge(project, holder) is None:
        return
    journal = posixpath.join(holder["bundle"], B.JOURNAL)
    status = (json.loads(project.target.read_text(journal)).get("status", "running")
              if project.target.exists(journal, "-f") else "running")
    raise RemigrateError(f"{interrupted(project, holder, status)}{consequence}")


def interrupted(project, holder, status="running"):
    """The refusal while a dead run's lock stands, naming the command that recovers."""
    what = B.describe_identity(project.identity())
    if status in ("failed", "verify-failed"):
        return RemigrateError(f"the last reset of {what} (run {holder.get('run_id')}) ended {status} and left things "
                              f"as they were then (see the journal and report in {holder.get('bundle')}); put everything "
                              "back with `inv rollback` before a new reset")
    return RemigrateError(f"a reset of {what} was interrupted (run {holder.get('run_id')}, pid {holder.get('pid')} is "
                          f"gone; its backup is {holder.get('bundle')}); finish it with `inv reset --resume`, or put "
                          "everything back with `inv rollback`")


def update(project, info, **fields):
    info.update(fields)
    project.target.write_private(lock_path(project), json.dumps(info), replace=True)


def release(project):
    project.target.run(["rm", "-f", "--", lock_path(project)])
