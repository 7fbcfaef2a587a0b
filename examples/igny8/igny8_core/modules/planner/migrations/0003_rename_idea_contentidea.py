from django.db import migrations


class Migration(migrations.Migration):
    # RenameModel renames the table but keeps the old sequence name (planner_idea_id_seq).
    dependencies = [("planner", "0002_idea")]

    operations = [migrations.RenameModel(old_name="Idea", new_name="ContentIdea")]
