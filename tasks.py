"""remigrate: reset a Django project's migrations without losing a row.

Layout: this file is the root collection, and it makes itself the package "tasks" whose
modules live in tasks/ (that folder has no __init__.py, so `import tasks` always finds this
file first). inv, fab (through fabfile.py) and pytest therefore load the very same modules.
"""
import os

__path__ = [os.path.join(os.path.dirname(os.path.abspath(__file__)), "tasks")]

from invoke import Collection  # noqa: E402

from tasks import backup, demo, detect, migrations, reset  # noqa: E402
from tasks.options import DEFAULTS  # noqa: E402
from tasks.target import QuickLocal  # noqa: E402

ns = Collection()
ns.add_task(detect.detect)
ns.add_task(backup.backup)
ns.add_task(backup.restore)
ns.add_task(backup.backups)
ns.add_task(reset.reset)
ns.add_task(reset.rollback_task)
ns.add_task(reset.verify_task)
ns.add_task(reset.cleanup_task)
ns.add_task(demo.demo)
ns.add_collection(Collection("migrations", migrations.remove_model))
# Defaults set in code reach both inv and fab (invoke.yaml and fabric.yaml are read by one each).
ns.configure({"remigrate": DEFAULTS, "runners": {"local": QuickLocal}})
