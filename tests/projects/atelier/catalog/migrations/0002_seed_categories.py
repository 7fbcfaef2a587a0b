# Reference data: the shop's category tree, kept as a CSV beside this migration.
import csv
from pathlib import Path

from django.db import migrations


def load_categories(apps, schema_editor):
    Category = apps.get_model("catalog", "Category")
    db = schema_editor.connection.alias
    with Path(__file__).with_name("categories.csv").open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            parent = Category.objects.using(db).get(code=row["parent_code"]) if row["parent_code"] else None
            Category.objects.using(db).create(code=row["code"], label=row["label"], parent=parent,
                                              position=int(row["position"]))


def unload_categories(apps, schema_editor):
    Category = apps.get_model("catalog", "Category")
    with Path(__file__).with_name("categories.csv").open(newline="", encoding="utf-8") as handle:
        codes = [row["code"] for row in csv.DictReader(handle)]
    Category.objects.using(schema_editor.connection.alias).filter(code__in=codes).order_by("-parent_id").delete()


class Migration(migrations.Migration):

    dependencies = [
        ("catalog", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(load_categories, unload_categories),
    ]
