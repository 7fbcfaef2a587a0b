# Entries written before the index existed are indexed once; languages typed as "" become "en".
from django.db import migrations


def reindex(apps, schema_editor):
    if schema_editor.connection.vendor != "sqlite":
        return
    schema_editor.execute(
        "INSERT INTO search_entry_fts (rowid, title, body) "
        "SELECT e.id, e.title, e.body FROM search_searchentry e "
        "WHERE e.id NOT IN (SELECT rowid FROM search_entry_fts)"
    )


def fix_languages(apps, schema_editor):
    SearchEntry = apps.get_model("search", "SearchEntry")
    SearchEntry.objects.using(schema_editor.connection.alias).filter(language="").update(language="en")


class Migration(migrations.Migration):

    dependencies = [
        ("search", "0004_rename_query_savedquery_and_more"),
    ]

    operations = [
        migrations.RunPython(fix_languages, migrations.RunPython.noop),
        migrations.RunPython(reindex, migrations.RunPython.noop),
    ]
