from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("search", "0002_fts_index"),
    ]

    operations = [
        migrations.AddField(
            model_name="searchentry",
            name="language",
            field=models.CharField(default="en", max_length=8),
        ),
        migrations.AddField(
            model_name="searchentry",
            name="weight",
            field=models.FloatField(default=1.0),
        ),
        migrations.AddField(
            model_name="searchentry",
            name="indexed_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
    ]
