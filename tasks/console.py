"""What the user sees: colored lines, tables, confirmation, and secret scrubbing.
Plain module (no invoke import)."""
import contextlib
import signal
import sys
import threading
import time
from pathlib import Path

import colorama

_SCRIPTS = str(Path(__file__).resolve().parent.parent / "scripts")
if _SCRIPTS not in sys.path:
    sys.path.insert(0, _SCRIPTS)  # the scrubber is shared with the probe that runs beside the project
from remigrate_scrub import scrub  # noqa: E402

colorama.just_fix_windows_console()
_C = colorama.Fore
_S = colorama.Style


class RemigrateError(Exception):
    """A failure explained in one line: what went wrong and what to do."""


class Secrets:
    """Every secret seen in this process; scrub() hides them in any text shown or saved."""

    _values: set = set()

    @classmethod
    def add(cls, *values):
        for value in values:
            if value:
                cls._values.add(str(value))

    @classmethod
    def scrub(cls, text):
        return scrub(text, cls._values)


def _color(text, color):
    if not sys.stdout.isatty():
        return text
    return f"{color}{text}{_S.RESET_ALL}"


STOP = []  # signals received (SIGTERM, SIGHUP): the task stops at the next phase or command


def check_stop():
    if STOP:
        raise KeyboardInterrupt(f"stopped by {STOP[0]}")


@contextlib.contextmanager
def stops_only_noted():
    """While a step must be waited for (its answer read whole): Ctrl-C, SIGTERM and SIGHUP are
    noted for check_stop(), never raised in the middle of reading."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    stops = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, lambda signum, _frame: STOP.append(signal.Signals(signum).name)) for sig in stops}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def say(text=""):
    try:
        print(Secrets.scrub(text), flush=True)
    except OSError:  # the terminal went away (SIGHUP): the work, and a rollback, go on without it
        pass


def step(text):
    say(_color("==> ", _C.CYAN + _S.BRIGHT) + text)


def ok(text):
    say(_color("ok  ", _C.GREEN + _S.BRIGHT) + text)


def warn(text):
    say(_color("!!  ", _C.YELLOW + _S.BRIGHT) + text)


def human_bytes(n):
    n = float(n or 0)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def human_age(seconds):
    seconds = max(0, int(seconds))
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def table(headers, rows):
    """Render rows as an aligned text table."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def confirm(question, expected, yes, stdin=None):
    """Ask the user to type `expected`; --yes skips; with no terminal, refuse instead of waiting."""
    if yes:
        return
    stdin = stdin or sys.stdin
    if not stdin.isatty():
        raise RemigrateError(f"no terminal to ask on ({question}); nothing was changed; pass --yes to go ahead without asking")
    print(f"{question}\nType {expected!r} to continue: ", end="", flush=True)
    answer = stdin.readline().strip()
    if answer != expected:
        raise RemigrateError("not confirmed; nothing was changed")


class Timer:
    def __init__(self):
        self.start = time.monotonic()

    @property
    def seconds(self):
        return time.monotonic() - self.start

    def __str__(self):
        return f"{self.seconds:.1f} s"


class Progress:
    """How far a long step is: on a terminal one line redrawn in place (done, share, rate, time
    left); without one a plain line every PLAIN_EVERY seconds. A step that ends within QUIET
    seconds shows nothing."""

    QUIET = 2.0
    PLAIN_EVERY = 5.0

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.started = {}  # label -> when its first report came
        self.last = 0.0
        self.drawn = False

    def __call__(self, label, done, total, unit="bytes"):
        now = time.monotonic()
        first = self.started.setdefault(label, now)
        if now - first < self.QUIET or now - self.last < (0.5 if self.tty else self.PLAIN_EVERY):
            return
        self.last = now
        line = f"    {label}: {progress_text(done, total, unit, now - first)}"
        try:
            if self.tty:
                self.stream.write("\r\x1b[K" + line)
                self.stream.flush()
                self.drawn = True
            else:
                say(line)
        except OSError:
            pass

    def close(self):
        if self.drawn:
            try:
                self.stream.write("\r\x1b[K")
                self.stream.flush()
            except OSError:
                pass
        self.drawn = False
        self.started.clear()


def progress_text(done, total, unit, seconds):
    """'420.0 MiB of 1.0 GiB (41%), 85.0 MiB/s, about 7 s left'."""
    show = human_bytes if unit == "bytes" else (lambda n: f"{int(n):,} {unit}")
    if total:
        text = f"{show(done)} of {show(total)}" if unit == "bytes" else f"{int(done):,} of {show(total)}"
    else:
        text = show(done)
    rate = done / seconds if seconds > 0 else 0
    if total:
        text += f" ({min(done / total, 1):.0%})"
    if rate:
        text += f", {show(rate)}/s"
        if total and done < total:
            text += f", about {human_age((total - done) / rate)} left"
    return text


PROGRESS = Progress()
