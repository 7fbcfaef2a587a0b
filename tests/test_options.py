"""Override order of the shared options: flag, then config, then code default."""
import pytest

from tasks.options import DEFAULTS, resolve


def test_code_default_when_nothing_is_set():
    assert resolve({}).project_dir == DEFAULTS["project_dir"] == "."


def test_config_wins_over_code_default():
    assert resolve({"project_dir": "/srv/app"}).project_dir == "/srv/app"


def test_flag_wins_over_config():
    assert resolve({"project_dir": "/srv/app"}, project_dir="/tmp/x").project_dir == "/tmp/x"


def test_flag_left_unset_does_not_hide_config():
    assert resolve({"backup_dir": "/b"}, backup_dir=None).backup_dir == "/b"


def test_unknown_config_keys_are_ignored_and_values_become_strings():
    opts = resolve({"nonsense": 1, "python": None}, project_dir=3)
    assert opts.project_dir == "3" and opts.python == ""


def test_host_section_wins_over_the_shared_config_and_a_flag_over_both():
    config = {"project_dir": "/srv/a", "hosts": {"prod": {"project_dir": "/srv/prod"}}}
    assert resolve(config, host="prod").project_dir == "/srv/prod"
    assert resolve(config, host="staging").project_dir == "/srv/a"
    assert resolve(config, host="prod", project_dir="/x").project_dir == "/x"


def test_hosts_of_a_fab_run_are_read_in_order_and_the_unreached_ones_named():
    from tasks.base import hosts_from_argv, summary_rows

    assert hosts_from_argv(["fab", "-H", "a,b", "--hosts=c", "reset"]) == ["a", "b", "c"]
    rows = summary_rows([("a", "reset", "ok"), ("b", "reset", "FAILED: x")], ["a", "b", "c"])
    assert rows[-1] == ("c", "-", "not run (an earlier host failed)")


def test_compression_and_jobs_are_checked_before_anything_runs():
    assert resolve({}).compress == "auto" and resolve({}).jobs == ""
    assert resolve({"compress": "zstd:3"}, jobs="4").compress == "zstd:3"
    for bad in ({"compress": "fast"}, {"compress": "12"}, {"jobs": "0"}, {"jobs": "two"}):
        with pytest.raises(ValueError):
            resolve(bad)
