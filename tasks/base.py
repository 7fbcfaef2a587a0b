"""The task decorator all remigrate tasks use: shared flag help, and errors turned into a
one-line message with a non-zero exit (invoke's Exit) at the task boundary."""
import atexit
import contextlib
import functools
import signal
import sys
import threading

from invoke import Exit
from invoke import task as invoke_task
from paramiko.ssh_exception import SSHException

from tasks import console, options
from tasks.console import RemigrateError, Secrets, table

RESULTS = []  # (host, task, status): the per-host summary of a `fab -H a,b` run


def hosts_from_argv(argv):
    """The hosts named with -H/--hosts, in order."""
    hosts = []
    for i, word in enumerate(argv):
        value = None
        if word in ("-H", "--hosts") and i + 1 < len(argv):
            value = argv[i + 1]
        elif word.startswith("--hosts="):
            value = word.split("=", 1)[1]
        if value:
            hosts += [h for h in value.split(",") if h]
    return hosts


def summary_rows(results, hosts):
    """One row per host and task; hosts never reached (an earlier one failed) say so."""
    rows = [(host, name, status) for host, name, status in results]
    reached = {host for host, _, _ in results}
    rows += [(host, "-", "not run (an earlier host failed)") for host in hosts if host not in reached]
    return rows


def _print_summary():
    hosts = hosts_from_argv(sys.argv)
    if len(hosts) > 1 and RESULTS:
        print("\nper-host summary:\n" + table(("host", "task", "result"), summary_rows(RESULTS, hosts)), flush=True)


atexit.register(_print_summary)


def _interrupt(signum, _frame):
    # Invoke may swallow the exception while it waits for a child, so the stop is also
    # remembered and raised again at the next phase or command (console.check_stop).
    console.STOP.append(signal.Signals(signum).name)
    raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")


@contextlib.contextmanager
def stop_signals_interrupt():
    """SIGTERM (systemd, docker stop, CI) and SIGHUP (a closed terminal) stop a task the way
    Ctrl-C does, so a reset under way rolls back instead of dying half-way. Ctrl-C (SIGINT) is
    remembered the same way: Invoke takes the KeyboardInterrupt for itself while a command runs
    (it passes it on to the command), and a command that ends well anyway must not let the stop
    be lost."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def task(*names, help=None, **kwargs):
    """@task(*shared option names, help={...}): an invoke task with remigrate's error handling."""

    def decorate(body):
        def translated(c, *args, **kw):
            try:
                with stop_signals_interrupt():
                    return body(c, *args, **kw)
            except RemigrateError as exc:
                raise Exit(f"remigrate: error: {Secrets.scrub(exc)}", code=1)
            except (SSHException, OSError) as exc:
                if not hasattr(c, "host"):
                    raise
                hint = ("add its key to known_hosts (ssh-keyscan) or set remigrate.accept_unknown_hosts"
                        if "known_hosts" in str(exc) else "check the host, your SSH key and ~/.ssh/config")
                raise Exit(f"remigrate: error: cannot connect to {c.host}: {Secrets.scrub(exc)}; {hint}", code=1)
            except KeyboardInterrupt:
                raise Exit("remigrate: interrupted", code=130)

        @functools.wraps(body)
        def run(c, *args, **kw):
            host = getattr(c, "original_host", None) or getattr(c, "host", None)
            name = kwargs.get("name") or body.__name__.replace("_", "-")
            try:
                result = translated(c, *args, **kw)
            except Exit as exc:
                if host:
                    RESULTS.append((host, name, f"FAILED: {exc.message}"[:140]))
                raise
            if host:
                RESULTS.append((host, name, "ok"))
            return result

        # Long flags only: automatic short ones collide (--dry-run came out as "--").
        kwargs.setdefault("auto_shortflags", False)
        return invoke_task(run, help={**options.help_for(*names), **(help or {})}, **kwargs)

    return decorate


def resolve(c, **flags):
    """The task's options: under fab -H, the host's own section of the config counts too."""
    host = getattr(c, "original_host", None) or getattr(c, "host", None)
    try:
        return options.resolve(c.config.get("remigrate", {}), host=host, **flags)
    except ValueError as exc:
        raise RemigrateError(f"{exc}; nothing was changed") from None
