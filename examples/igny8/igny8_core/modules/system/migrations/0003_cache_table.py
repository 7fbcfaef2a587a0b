from django.core.management import call_command
from django.db import migrations


def create_cache_table(apps, schema_editor):
    # What many projects do: the DatabaseCache table comes from a data migration, not a model.
    call_command("createcachetable", database=schema_editor.connection.alias, verbosity=0)


class Migration(migrations.Migration):
    dependencies = [("system", "0002_seed_settings")]

    operations = [migrations.RunPython(create_cache_table, migrations.RunPython.noop)]
