# Every task starts in "Draft": the stage must exist before the first task is written.
from django.db import migrations


def create_draft_stage(apps, schema_editor):
    WorkflowStage = apps.get_model("workflow", "WorkflowStage")
    WorkflowStage.objects.using(schema_editor.connection.alias).get_or_create(label="Draft", defaults={"position": 0})


def delete_draft_stage(apps, schema_editor):
    WorkflowStage = apps.get_model("workflow", "WorkflowStage")
    WorkflowStage.objects.using(schema_editor.connection.alias).filter(label="Draft").delete()


class Migration(migrations.Migration):

    dependencies = [
        ("workflow", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(create_draft_stage, delete_draft_stage),
    ]
