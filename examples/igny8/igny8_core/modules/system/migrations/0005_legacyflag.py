from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("system", "0004_reporting_view_and_prompt_search")]

    operations = [
        migrations.CreateModel(
            name="LegacyFlag",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.CharField(max_length=100)),
                ("enabled", models.BooleanField(default=False)),
            ],
        ),
    ]
