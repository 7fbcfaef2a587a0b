# The tally also follows deleted and moved tasks (PostgreSQL), the board shows due dates,
# and tasks imported with priority 0 get the default priority.
from django.db import migrations

TALLY_V2 = """
CREATE OR REPLACE FUNCTION workflow_tally_task() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        UPDATE workflow_stagetally SET task_count = task_count - 1 WHERE stage_id = OLD.stage_id;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO workflow_stagetally (stage_id, task_count) VALUES (NEW.stage_id, 1)
        ON CONFLICT (stage_id) DO UPDATE SET task_count = workflow_stagetally.task_count + 1;
        RETURN NEW;
    END IF;
    RETURN OLD;
END;
$$;
DROP TRIGGER workflow_task_tally ON workflow_task;
CREATE TRIGGER workflow_task_tally AFTER INSERT OR DELETE OR UPDATE OF stage_id ON workflow_task
    FOR EACH ROW EXECUTE FUNCTION workflow_tally_task();
"""


def tally_v2(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(TALLY_V2)


def default_priority(apps, schema_editor):
    Task = apps.get_model("workflow", "Task")
    Task.objects.using(schema_editor.connection.alias).filter(priority=0).update(priority=3)


class Migration(migrations.Migration):

    dependencies = [
        ("workflow", "0005_pg_task_tally_trigger"),
    ]

    operations = [
        migrations.RunPython(tally_v2, migrations.RunPython.noop),
        migrations.RunSQL(
            sql=[
                "DROP VIEW workflow_task_board",
                "CREATE VIEW workflow_task_board AS "
                "SELECT t.id AS task_id, t.title AS title, s.name AS stage, s.color AS color, "
                "t.priority AS priority, t.due_at AS due_at, t.product_id AS product_id "
                "FROM workflow_task t JOIN workflow_workflowstage s ON s.id = t.stage_id",
            ],
            reverse_sql=[
                "DROP VIEW workflow_task_board",
                "CREATE VIEW workflow_task_board AS "
                "SELECT t.id AS task_id, t.title AS title, s.name AS stage, t.priority AS priority "
                "FROM workflow_task t JOIN workflow_workflowstage s ON s.id = t.stage_id",
            ],
        ),
        migrations.RunPython(default_priority, migrations.RunPython.noop, elidable=True),
    ]
