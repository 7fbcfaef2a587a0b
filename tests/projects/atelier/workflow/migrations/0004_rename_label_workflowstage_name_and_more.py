from django.db import migrations, models

# SQLite rebuilds workflow_task for the renamed foreign key and refuses to while a view reads it:
# the board is dropped first and made again on the renamed columns.
BOARD_BEFORE = ("CREATE VIEW workflow_task_board AS "
                "SELECT t.id AS task_id, t.title AS title, s.label AS stage, t.priority AS priority "
                "FROM workflow_task t JOIN workflow_workflowstage s ON s.id = t.stage_id")
BOARD_AFTER = ("CREATE VIEW workflow_task_board AS "
               "SELECT t.id AS task_id, t.title AS title, s.name AS stage, t.priority AS priority "
               "FROM workflow_task t JOIN workflow_workflowstage s ON s.id = t.stage_id")


class Migration(migrations.Migration):

    dependencies = [
        ("catalog", "0004_rename_item_product"),
        ("workflow", "0003_stagetally_task_board_and_more"),
    ]

    operations = [
        migrations.RunSQL(sql="DROP VIEW workflow_task_board", reverse_sql=BOARD_BEFORE),
        migrations.RenameField(model_name="workflowstage", old_name="label", new_name="name"),
        migrations.RenameField(model_name="task", old_name="item", new_name="product"),
        migrations.AddField(
            model_name="workflowstage",
            name="color",
            field=models.CharField(default="#9e9e9e", max_length=7),
        ),
        migrations.AlterField(
            model_name="task",
            name="priority",
            field=models.PositiveSmallIntegerField(default=3),
        ),
        migrations.RunSQL(sql=BOARD_AFTER, reverse_sql="DROP VIEW workflow_task_board"),
    ]
