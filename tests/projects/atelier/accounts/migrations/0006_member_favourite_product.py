import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("accounts", "0005_sitesetting_defaults"),
        ("catalog", "0004_rename_item_product"),
    ]

    operations = [
        migrations.AddField(
            model_name="member",
            name="favourite_product",
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL,
                                    related_name="fans", to="catalog.product"),
        ),
    ]
