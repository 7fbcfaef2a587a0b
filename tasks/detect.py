"""Which database the project uses, as Django itself resolves it."""
from tasks.base import resolve, task
from tasks.console import ok, say, table
from tasks.engines import engine_for
from tasks.project import open_project


@task("project_dir", "python", "settings", "env_file")
def detect(c, project_dir=None, python=None, settings=None, env_file=None):
    """Show the project's database (engine, name, host, port, user) and where each came from.

    Reads Django's own resolved DATABASES["default"] through the project's interpreter, with
    the project's .env loaded (the environment wins over it), then checks the connection.
    """
    opts = resolve(c, project_dir=project_dir, python=python, settings=settings, env_file=env_file)
    with open_project(c, opts) as project:
        info = project.settings
        db = project.db
        say(f"project   {project.dir} ({project.target.name})")
        say(f"python    {project.python} (Python {info['python_version']}, Django {info['django_version']})")
        say(f"settings  {info['settings_module']}")
        say(f"apps      {', '.join(a['label'] for a in project.own_apps())}")
        say()
        say(table(("field", "value", "from"), db.describe()))
        say()
        engine = engine_for(project)
        facts = engine.preflight()
        version = facts.get("server_version_num")
        ok(f"{engine.name} database reachable" + (f" (server {version // 10000}.{version % 10000})" if version else ""))
