from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ("accounts", "0002_member_preferences_team_created_at"),
    ]

    operations = [
        migrations.RenameField(
            model_name="member",
            old_name="nickname",
            new_name="display_name",
        ),
    ]
