"""The task decorator all remigrate tasks use: shared flag help, and errors turned into a
one-line message with a non-zero exit (invoke's Exit) at the task boundary."""
import functools

from invoke import Exit
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
            except KeyboardInterrupt:
                raise Exit("remigrate: interrupted", code=130)

        # Long flags only: automatic short ones collide (--dry-run came out as "--").
        kwargs.setdefault("auto_shortflags", False)
        return invoke_task(run, help={**options.help_for(*names), **(help or {})}, **kwargs)

    return decorate


def resolve(c, **flags):
    return options.resolve(c.config.get("remigrate", {}), **flags)
