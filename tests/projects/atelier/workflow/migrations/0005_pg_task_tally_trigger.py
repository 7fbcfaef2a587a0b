# PostgreSQL only: a trigger keeps StageTally current when tasks are written.
from django.db import migrations

CREATE = """
CREATE FUNCTION workflow_tally_task() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO workflow_stagetally (stage_id, task_count) VALUES (NEW.stage_id, 1)
    ON CONFLICT (stage_id) DO UPDATE SET task_count = workflow_stagetally.task_count + 1;
    RETURN NEW;
END;
$$;
CREATE TRIGGER workflow_task_tally AFTER INSERT ON workflow_task
    FOR EACH ROW EXECUTE FUNCTION workflow_tally_task();
"""

DROP = """
DROP TRIGGER IF EXISTS workflow_task_tally ON workflow_task;
DROP FUNCTION IF EXISTS workflow_tally_task();
"""


def create_trigger(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def drop_trigger(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP)


class Migration(migrations.Migration):

    dependencies = [
        ("workflow", "0004_rename_label_workflowstage_name_and_more"),
    ]

    operations = [
        migrations.RunPython(create_trigger, drop_trigger),
    ]
