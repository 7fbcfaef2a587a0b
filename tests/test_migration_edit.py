"""Removing a model from migration files edits the syntax tree and nothing else."""
from pathlib import Path

import pytest

from tasks.migration_edit import former_names, remove_models

SAMPLE_0003 = (Path(__file__).resolve().parent.parent / "examples/igny8/igny8_core/business/site_building/migrations"
               / "0003_workflow_and_taxonomies.py").read_text()


def test_workflow_state_and_its_indexes_leave_0003_and_the_rest_stays_byte_for_byte():
    new, removed = remove_models(SAMPLE_0003, {"WorkflowState"})
    assert removed == [("CreateModel", "workflowstate")] + [("AddIndex", "workflowstate")] * 3
    assert "WorkflowState" not in new and "igny8_site_blueprint_workflow_states" not in new
    assert "workflowstate" not in new
    # everything before the removed operations is untouched, character for character
    head = SAMPLE_0003[: SAMPLE_0003.index("        migrations.CreateModel(\n            name='WorkflowState'")]
    assert new.startswith(head)
    assert new.rstrip().endswith("]")
    compile(new, "0003.py", "exec")


EVERY_KIND = '''
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("shop", "0001_initial")]

    operations = [
        migrations.CreateModel("Gone", fields=[("id", models.AutoField(primary_key=True))]),
        migrations.CreateModel(name="Kept", fields=[]),
        migrations.AddField(model_name="gone", name="x", field=models.IntegerField(default=0)),
        migrations.AlterField("Gone", "x", models.IntegerField(default=1)),
        migrations.AddField(model_name="kept", name="y", field=models.IntegerField(default=0)),
        migrations.AddConstraint(model_name="gone", constraint=models.UniqueConstraint(fields=["x"], name="u")),
        migrations.AlterUniqueTogether(name="gone", unique_together={("x",)}),
        migrations.AlterIndexTogether(name="gone", index_together=set()),
        migrations.RemoveIndex(model_name="gone", name="i"),
        migrations.AlterModelOptions(name="gone", options={}),
        migrations.SeparateDatabaseAndState(state_operations=[migrations.DeleteModel(name="Gone")], database_operations=[]),
        migrations.RunSQL("SELECT 1"),  # about no model: kept
    ]
'''


def test_every_operation_kind_naming_the_model_is_removed_and_others_kept():
    new, removed = remove_models(EVERY_KIND, {"gone"})
    assert [op for op, _ in removed] == ["CreateModel", "AddField", "AlterField", "AddConstraint", "AlterUniqueTogether",
                                         "AlterIndexTogether", "RemoveIndex", "AlterModelOptions", "DeleteModel"]
    assert 'name="Kept"' in new and 'model_name="kept"' in new and "RunSQL" in new
    assert "# about no model: kept" in new
    compile(new, "m.py", "exec")


def test_a_renamed_model_is_removed_under_its_old_name_too():
    old = 'operations = [migrations.CreateModel(name="Idea", fields=[])]\n'
    rename = 'operations = [migrations.RenameModel(old_name="Idea", new_name="ContentIdea")]\n'
    names = former_names([old, rename], {"ContentIdea"})
    assert names == {"contentidea", "idea"}
    assert remove_models(old, names)[1] == [("CreateModel", "idea")]
    assert remove_models(rename, names)[1] == [("RenameModel", "contentidea")]


def test_remove_model_task_leaves_a_history_that_matches_the_models(project, tmp_path):
    from conftest import manage, run_inv

    out = run_inv("migrations.remove-model", "--project-dir", str(project), "--model", "site_building.WorkflowState", "--yes")
    assert out.returncode == 0, out.stderr
    assert "removed CreateModel, AddIndex, AddIndex, AddIndex" in out.stdout
    env = {"DB_PATH": str(tmp_path / "scratch.sqlite3")}
    assert "No changes detected" in manage(project, env, "makemigrations", "--check", "--dry-run")


def test_remove_model_refuses_a_model_that_is_still_in_the_code(project):
    from conftest import run_inv

    out = run_inv("migrations.remove-model", "--project-dir", str(project), "--model", "site_building.SiteBlueprint", "--yes")
    assert out.returncode == 1 and "still exists in the code" in out.stderr


@pytest.mark.parametrize("name, expect", [
    ("nosuchapp.Thing", "no app labelled 'nosuchapp'"),
    ("site_building.WorkflowStat", "did you mean site_building.WorkflowState?"),
    ("planner.Idea", "the model still exists in the code (as ContentIdea)"),
])
def test_remove_model_names_what_is_unknown_in_one_line(project, name, expect):
    from conftest import run_inv

    out = run_inv("migrations.remove-model", "--project-dir", str(project), "--model", name, "--yes")
    lines = [ln for ln in out.stderr.strip().splitlines() if ln.strip()]
    assert out.returncode == 1 and len(lines) == 1 and expect in lines[0], out.stderr
