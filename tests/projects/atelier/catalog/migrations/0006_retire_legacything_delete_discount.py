# LegacyThing leaves the code but its table stays (the old importer still reads it);
# Discount is gone for good.
from django.db import migrations


def dash_skus(apps, schema_editor):
    """SKUs imported with spaces ("AT 0012") get dashes; nothing to do on a new database."""
    Product = apps.get_model("catalog", "Product")
    for product in Product.objects.using(schema_editor.connection.alias).filter(sku__contains=" "):
        product.sku = product.sku.replace(" ", "-")
        product.save(update_fields=["sku"])


class Migration(migrations.Migration):

    dependencies = [
        ("catalog", "0005_rename_label_category_name_and_more"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="LegacyThing")],
            database_operations=[],
        ),
        migrations.DeleteModel(name="Discount"),
        migrations.RunPython(dash_skus, migrations.RunPython.noop),
    ]
