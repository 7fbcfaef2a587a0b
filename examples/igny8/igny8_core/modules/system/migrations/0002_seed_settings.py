import csv
from pathlib import Path

from django.db import migrations

# Real projects keep data files next to their migrations; the reset must not delete them.
DEFAULTS = Path(__file__).with_name("default_settings.csv")


def seed(apps, schema_editor):
    Setting = apps.get_model("system", "Setting")
    with DEFAULTS.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            Setting.objects.get_or_create(key=row["key"], defaults={"value": {"default": row["value"]}})


class Migration(migrations.Migration):
    dependencies = [("system", "0001_initial")]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]
