from django.db import migrations


class Migration(migrations.Migration):
    """LegacyFlag leaves the code, but its table and rows stay (read by an old report job):
    the model is deleted from the state only."""

    dependencies = [("system", "0005_legacyflag")]

    operations = [
        migrations.SeparateDatabaseAndState(state_operations=[migrations.DeleteModel(name="LegacyFlag")]),
    ]
