"""What the user sees of a long step: progress lines, quiet for short steps."""
import io

from tasks.console import Progress, progress_text


def test_progress_text_says_share_rate_and_time_left():
    assert progress_text(420 * 2**20, 2**30, "bytes", 5) == "420.0 MiB of 1.0 GiB (41%), 84.0 MiB/s, about 7 s left"
    assert progress_text(12, 32, "tables", 4) == "12 of 32 tables (38%), 3 tables/s, about 6 s left"
    assert progress_text(32, 32, "tables", 4).startswith("32 of 32 tables (100%)")  # no time left when done


def test_without_a_terminal_a_plain_line_every_few_seconds_and_nothing_for_a_short_step(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr("tasks.console.time.monotonic", lambda: clock[0])
    lines = []
    monkeypatch.setattr("tasks.console.say", lines.append)
    progress = Progress(stream=io.StringIO())
    progress("loading", 1, 10, "tables")
    clock[0] += 1
    progress("loading", 2, 10, "tables")
    assert lines == []  # a step that ends within two seconds says nothing
    for _ in range(12):
        clock[0] += 1
        progress("loading", 3, 10, "tables")
    assert len(lines) == 3 and lines[0].startswith("    loading: 3 of 10 tables")
