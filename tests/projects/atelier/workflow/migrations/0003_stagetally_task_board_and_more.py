import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("workflow", "0002_default_stage"),
    ]

    operations = [
        migrations.AddField(
            model_name="workflowstage",
            name="is_terminal",
            field=models.BooleanField(default=False),
        ),
        migrations.AddField(
            model_name="task",
            name="due_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="task",
            name="payload",
            field=models.JSONField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="task",
            name="created_at",
            field=models.DateTimeField(default=django.utils.timezone.now),
        ),
        migrations.CreateModel(
            name="StageTally",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("task_count", models.IntegerField(default=0)),
                ("stage", models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, related_name="tally",
                                               to="workflow.workflowstage")),
            ],
        ),
        # The board the dashboard reads (plain SQL that SQLite and PostgreSQL both accept).
        migrations.RunSQL(
            sql="CREATE VIEW workflow_task_board AS "
                "SELECT t.id AS task_id, t.title AS title, s.label AS stage, t.priority AS priority "
                "FROM workflow_task t JOIN workflow_workflowstage s ON s.id = t.stage_id",
            reverse_sql="DROP VIEW workflow_task_board",
        ),
    ]
