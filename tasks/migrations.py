"""Migration-file phases on their own, for users who want only this step."""
from tasks.base import resolve, task
from tasks.console import RemigrateError, confirm, ok
from tasks.project import open_project
from tasks.reset import edit_migrations


@task("project_dir", "python", "settings", "env_file", "yes", iterable=["model"], name="remove-model",
      help={"model": "APP_LABEL.Model to remove (repeatable); its class may already be gone from the code",
            "dry_run": "show what would be removed and change nothing"})
def remove_model(c, model=None, yes=False, dry_run=False, project_dir=None, python=None, settings=None, env_file=None):
    """Remove deleted models from the existing migration files (syntax-tree edit, formatting kept).

    Removes their CreateModel, AddIndex, AddField, AlterUniqueTogether, AddConstraint,
    DeleteModel... operations (also under names they had before a RenameModel), and nothing
    else. The database is not touched; `inv reset --remove-model` does the whole job.
    """
    if not model:
        raise RemigrateError("name at least one model: --model APP_LABEL.Model")
    opts = resolve(c, project_dir=project_dir, python=python, settings=settings, env_file=env_file)
    with open_project(c, opts) as project:
        facts = project.probe("plan", *model, what="reading the migration history")
        edits = edit_migrations(project, facts["apps"], facts["removals"], write=False)
        if not edits:
            ok("no migration operation names these models; nothing to change")
            return
        if dry_run:
            ok("dry run: nothing was changed")
            return
        confirm(f"Edit {len(edits)} migration files?", "yes", yes)
        edit_migrations(project, facts["apps"], facts["removals"], write=True)
        ok(f"edited {len(edits)} migration files")
