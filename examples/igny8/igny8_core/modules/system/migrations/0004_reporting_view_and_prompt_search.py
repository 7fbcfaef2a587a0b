from django.db import migrations

VIEW = "CREATE VIEW system_setting_keys AS SELECT id, key FROM system_setting"

# PostgreSQL: prompt names are kept trimmed by a trigger. SQLite: a full-text index of prompts
# (FTS5, like Wagtail's search backend), with shadow tables no model names.
PG_FUNCTION = """
CREATE FUNCTION system_trim_prompt_name() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.name := btrim(NEW.name);
  RETURN NEW;
END $$;
"""
PG_TRIGGER = ("CREATE TRIGGER system_prompt_trim BEFORE INSERT OR UPDATE ON system_aiprompt "
              "FOR EACH ROW EXECUTE FUNCTION system_trim_prompt_name()")
SQLITE_FTS = "CREATE VIRTUAL TABLE system_prompt_fts USING fts5(name, template)"


def engine_objects(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(PG_FUNCTION)
        schema_editor.execute(PG_TRIGGER)
    elif vendor == "sqlite":
        schema_editor.execute(SQLITE_FTS)


def drop_engine_objects(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute("DROP TRIGGER system_prompt_trim ON system_aiprompt")
        schema_editor.execute("DROP FUNCTION system_trim_prompt_name()")
    elif vendor == "sqlite":
        schema_editor.execute("DROP TABLE system_prompt_fts")


class Migration(migrations.Migration):
    dependencies = [("system", "0003_cache_table")]

    operations = [
        migrations.RunSQL(VIEW, "DROP VIEW system_setting_keys"),
        migrations.RunPython(engine_objects, drop_engine_objects),
    ]
