import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("accounts", "0001_initial"),
        ("catalog", "0004_rename_item_product"),
    ]

    operations = [
        migrations.RenameField(model_name="category", old_name="label", new_name="name"),
        migrations.AlterField(
            model_name="product",
            name="price",
            field=models.DecimalField(decimal_places=2, max_digits=10),
        ),
        migrations.AlterField(
            model_name="product",
            name="category",
            field=models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name="products",
                                    to="catalog.category"),
        ),
        migrations.AddField(
            model_name="product",
            name="owner_team",
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL,
                                    related_name="products", to="accounts.team"),
        ),
        migrations.AddField(
            model_name="product",
            name="status",
            field=models.CharField(choices=[("active", "Active"), ("draft", "Draft"), ("retired", "Retired")],
                                   default="active", max_length=12),
        ),
        migrations.AddField(
            model_name="product",
            name="released_on",
            field=models.DateField(blank=True, null=True),
        ),
    ]
