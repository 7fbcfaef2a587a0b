from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("catalog", "0004_rename_item_product"),
        ("search", "0003_searchentry_language_weight_indexed_at"),
    ]

    operations = [
        migrations.RenameModel(old_name="Query", new_name="SavedQuery"),
        migrations.AlterModelOptions(name="savedquery", options={"verbose_name_plural": "saved queries"}),
        migrations.RenameField(model_name="savedquery", old_name="q", new_name="text"),
        migrations.AddField(
            model_name="savedquery",
            name="filters",
            field=models.JSONField(blank=True, default=dict),
        ),
        migrations.RenameField(model_name="searchentry", old_name="item", new_name="product"),
    ]
