# The database cache's table (settings.CACHES): no model describes it.
from django.core.management import call_command
from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ("accounts", "0003_rename_nickname_member_display_name"),
    ]

    operations = [
        migrations.RunPython(lambda apps, se: call_command("createcachetable"), migrations.RunPython.noop),
    ]
