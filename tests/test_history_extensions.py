"""Which extensions the new history must make before every app's first migration: read from the
old history's operations (pure: a stand-in loader over real Django operation objects)."""
import sys
from pathlib import Path

from django.contrib.postgres.operations import HStoreExtension, TrigramExtension
from django.db import migrations

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import remigrate_history as H  # noqa: E402


class Graph:
    def __init__(self, order):
        self.order = order

    def leaf_nodes(self):
        return [self.order[-1]]

    def forwards_plan(self, leaf):
        return self.order


class Loader:
    def __init__(self, migrations_by_node):
        self.graph = Graph(list(migrations_by_node))
        self.migrations_by_node = migrations_by_node

    def get_migration(self, app, name):
        return self.migrations_by_node[(app, name)]


def migration(*operations):
    m = migrations.Migration("x", "y")
    m.operations = list(operations)
    return m


def test_extensions_created_and_not_dropped_later_in_the_order_made_by_the_apps_that_made_them():
    loader = Loader({
        ("auth", "0001_initial"): migration(HStoreExtension()),  # not a project app: not its to carry
        ("shop", "0001_initial"): migration(TrigramExtension()),
        ("shop", "0002_sql"): migration(migrations.RunSQL(
            ['CREATE EXTENSION IF NOT EXISTS "uuid-ossp"', ("create extension citext", None)], "")),
        ("blog", "0001_initial"): migration(migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunSQL("CREATE EXTENSION unaccent; CREATE EXTENSION btree_gin")])),
        ("blog", "0001_more"): migration(migrations.RunSQL(  # not run: commented out, or text
            "-- CREATE EXTENSION postgis;\n/* CREATE EXTENSION\n ltree */ SELECT 'create extension cube', "
            "$$ CREATE EXTENSION isn $$, $q$ create extension seg $q$")),
        ("blog", "0002_drop"): migration(migrations.RunSQL("DROP EXTENSION IF EXISTS btree_gin; "
                                                           "CREATE EXTENSION hstore WITH SCHEMA ext; "
                                                           "create extension if not exists intarray schema public")),
    })
    found = H.extensions_made(loader, {"shop", "blog"})
    # (one made in a schema of its own is the carried migration's, after that schema)
    assert list(found.items()) == [("pg_trgm", "shop"), ("uuid-ossp", "shop"), ("citext", "shop"), ("unaccent", "blog"),
                                   ("intarray", "blog")]


def test_collations_and_types_are_read_from_the_old_history_when_it_makes_any():
    from django.contrib.postgres.operations import CreateCollation, RemoveCollation
    plain = {("shop", "0001_initial"): migration(migrations.RunSQL("SELECT 1 -- CREATE TYPE mood AS ENUM ('a')"))}
    assert not H.makes_first_objects(Loader(plain), {"shop"})
    for op in (CreateCollation("ci", locale="und-u-ks-level2", provider="icu", deterministic=False),
               RemoveCollation("ci", locale="und", provider="icu"), migrations.RunSQL("create domain pct as int"),
               migrations.RunSQL(["DROP COLLATION ci"]), migrations.SeparateDatabaseAndState(
                   database_operations=[migrations.RunSQL("CREATE TYPE mood AS ENUM ('a')")])):
        assert H.makes_first_objects(Loader({**plain, ("shop", "0002_more"): migration(op)}), {"shop"}), op
    assert not H.makes_first_objects(Loader({("auth", "0001_initial"): migration(RemoveCollation("x", locale="und"))}),
                                     {"shop"})  # not a project app's
    # made as the old history's database had them: schemas first, then collations, then types
    schema = {"collations": {"rpt.ci": {"sql": "CREATE COLLATION IF NOT EXISTS rpt.ci (...)"}},
              "types": {"mood": {"sql": "CREATE TYPE public.mood AS ENUM ('a')"}}}
    assert H.first_objects(schema) == ['CREATE SCHEMA IF NOT EXISTS "rpt"', "CREATE COLLATION IF NOT EXISTS rpt.ci (...)",
                                       "CREATE TYPE public.mood AS ENUM ('a')"]
