"""Fault injection for the tests: REMIGRATE_FAULT=fail:PHASE, or pause:PHASE[:SECONDS]
(default 120), acts when a run reaches PHASE; problem:verify makes verification find a
problem. Unset in normal use, it does nothing. Two moments inside a phase: pause:swap-half (a
PostgreSQL swap between its two renames) and pause:sqlite-linked (the probe's SQLite swap
between keeping the live file under its second name and the replace), pause:sqlite-verify (the
full read of a SQLite backup copy, before it starts), pause:rollback-set-aside (a rollback of a
PostgreSQL swap between setting the new database aside and renaming the kept one back)."""
import os
import time

from tasks.console import RemigrateError


def inject_fault(phase):
    action, _, rest = os.environ.get("REMIGRATE_FAULT", "").partition(":")
    where, _, seconds = rest.partition(":")
    if where != phase:
        return
    if action == "fail":
        raise RemigrateError(f"injected failure at phase {phase} (REMIGRATE_FAULT)")
    if action == "pause":
        time.sleep(float(seconds or 120))


def injected_problem(phase):
    return os.environ.get("REMIGRATE_FAULT", "") == f"problem:{phase}"
