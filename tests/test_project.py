"""Where the database settings came from, and detection through the real command line."""
from conftest import run_inv

from tasks.project import attribute_sources, db_config_from_probe


def test_sources_name_database_url_and_the_env_file():
    database = {"ENGINE": "django.db.backends.postgresql", "NAME": "shop", "USER": "app", "PASSWORD": "pw", "HOST": "h", "PORT": 5432}
    sources = attribute_sources(database, {"DATABASE_URL": "postgres://app:pw@h:5432/shop"}, ["DATABASE_URL"], "proj.settings")
    assert set(sources.values()) == {"DATABASE_URL (.env)"}


def test_sources_name_db_variables_and_fall_back_to_settings():
    database = {"ENGINE": "django.db.backends.postgresql", "NAME": "shop", "USER": "app", "PASSWORD": "", "HOST": "", "PORT": ""}
    sources = attribute_sources(database, {"DB_ENGINE": "postgres", "DB_NAME": "shop"}, [], "proj.settings")
    assert sources["ENGINE"] == "DB_ENGINE (environment)" and sources["NAME"] == "DB_NAME (environment)"
    assert sources["USER"] == "settings (proj.settings)"


def test_relative_sqlite_path_is_relative_to_the_project():
    probe = {"database": {"ENGINE": "django.db.backends.sqlite3", "NAME": "data/db.sqlite3"}}
    assert db_config_from_probe(probe, "/srv/app").name == "/srv/app/data/db.sqlite3"


def test_detect_shows_sqlite_default_of_the_sample_project(sqlite_project):
    project, env = sqlite_project
    out = run_inv("detect", "--project-dir", str(project))
    assert out.returncode == 0, out.stderr
    assert "django.db.backends.sqlite3" in out.stdout and "settings (igny8_core.settings)" in out.stdout
    assert "igny8_core_auth, planner, writer" in out.stdout


def test_detect_postgres_through_database_url(pg_project):
    project, env, db = pg_project
    out = run_inv("detect", "--project-dir", str(project), env=env)
    assert out.returncode == 0, out.stderr
    port_row = next(line for line in out.stdout.splitlines() if line.startswith("port "))
    assert str(db.cluster.port) in port_row and "DATABASE_URL (environment)" in port_row
    assert "DATABASE_URL (environment)" in out.stdout and "server 15" in out.stdout


def test_list_and_help_explain_every_task():
    out = run_inv("--list")
    for name in ("backup", "backups", "detect", "restore", "demo"):
        assert name in out.stdout
    help_out = run_inv("--help", "restore")
    assert "--no-safety-backup" in help_out.stdout and "--backup-dir" in help_out.stdout
