from django.db import migrations, models


def default_settings(apps, schema_editor):
    SiteSetting = apps.get_model("accounts", "SiteSetting")
    db = schema_editor.connection.alias
    for key, value in [("site_name", "Atelier"), ("maintenance", "off"), ("support_email", "help@atelier.example")]:
        SiteSetting.objects.using(db).get_or_create(key=key, defaults={"value": value})


def strip_keys(apps, schema_editor):
    """Keys typed in the admin with stray spaces (fixed once in production)."""
    SiteSetting = apps.get_model("accounts", "SiteSetting")
    for setting in SiteSetting.objects.using(schema_editor.connection.alias).filter(key__contains=" "):
        setting.key = setting.key.strip().replace(" ", "_")
        setting.save(update_fields=["key"])


class Migration(migrations.Migration):

    dependencies = [
        ("accounts", "0004_cache_table"),
    ]

    operations = [
        migrations.AlterField(
            model_name="sitesetting",
            name="value",
            field=models.CharField(blank=True, max_length=500),
        ),
        migrations.AddField(
            model_name="sitesetting",
            name="updated_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.RunPython(strip_keys, migrations.RunPython.noop, elidable=True),
        migrations.RunPython(default_settings, migrations.RunPython.noop),
    ]
