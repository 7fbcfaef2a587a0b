"""The task decorator all remigrate tasks use: shared flag help, and errors turned into a
one-line message with a non-zero exit (invoke's Exit) at the task boundary."""
import functools

from invoke import Exit
from paramiko.ssh_exception import SSHException
from invoke import task as invoke_task

from tasks import options
from tasks.console import RemigrateError, Secrets


def task(*names, help=None, **kwargs):
    """@task(*shared option names, help={...}): an invoke task with remigrate's error handling."""

    def decorate(body):
        @functools.wraps(body)
        def run(c, *args, **kw):
            try:
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

        # Long flags only: automatic short ones collide (--dry-run came out as "--").
        kwargs.setdefault("auto_shortflags", False)
        return invoke_task(run, help={**options.help_for(*names), **(help or {})}, **kwargs)

    return decorate


def resolve(c, **flags):
    """The task's options: under fab -H, the host's own section of the config counts too."""
    host = getattr(c, "original_host", None) or getattr(c, "host", None)
    return options.resolve(c.config.get("remigrate", {}), host=host, **flags)
