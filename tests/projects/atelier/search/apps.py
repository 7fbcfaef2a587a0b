from django.apps import AppConfig
from django.db import connections
from django.db.models.signals import post_delete, post_save

FTS_TABLE = "search_entry_fts"


def index_entry(sender, instance, using="default", **kwargs):
    """SQLite keeps a full-text index of the entries (an FTS5 table made by migration 0002)."""
    connection = connections[using]
    if connection.vendor != "sqlite":
        return
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {FTS_TABLE} WHERE rowid = %s", [instance.pk])
        cursor.execute(f"INSERT INTO {FTS_TABLE} (rowid, title, body) VALUES (%s, %s, %s)",
                       [instance.pk, instance.title, instance.body])


def unindex_entry(sender, instance, using="default", **kwargs):
    connection = connections[using]
    if connection.vendor != "sqlite":
        return
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {FTS_TABLE} WHERE rowid = %s", [instance.pk])


class SearchConfig(AppConfig):
    name = "search"
    verbose_name = "Site search"

    def ready(self):
        entry = self.get_model("SearchEntry")
        post_save.connect(index_entry, sender=entry, dispatch_uid="search.index_entry")
        post_delete.connect(unindex_entry, sender=entry, dispatch_uid="search.unindex_entry")
