"""Bundle names, file checks, count comparison and choice, as data."""
import datetime as dt

from tasks.bundle import (bundle_name, check_files, compare_counts, database_identity, manifest_problems, of_database,
                          pick_bundle, seal)

WHEN = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)


def test_names_are_timestamped_and_never_reuse_a_taken_one():
    assert bundle_name("shop", WHEN) == "shop-20260102T030405Z"
    assert bundle_name("/srv/app/db.sqlite3", WHEN) == "db-20260102T030405Z"
    taken = {"shop-20260102T030405Z", ".shop-20260102T030405Z-2.partial"}
    assert bundle_name("shop", WHEN, taken) == "shop-20260102T030405Z-3"
    assert bundle_name("we/ird name;", WHEN).startswith("ird_name-")


def test_file_checks_catch_missing_truncated_and_changed_files():
    files = {"a": {"size": 3, "sha256": "x"}, "b": {"size": 3, "sha256": "y"}, "migrations.tar.gz": {"size": 1, "sha256": "z"}}
    manifest = seal({"files": files, "dump": {"file": "a"}})
    problems = check_files(manifest, {"a": {"size": 2, "sha256": "x"}, "b": {"size": 3, "sha256": "other"}})
    assert len(problems) == 3
    assert any("truncated" in p for p in problems) and any("corrupted" in p for p in problems) and any("missing" in p for p in problems)
    assert check_files(manifest, dict(manifest["files"])) == []


def test_a_manifest_is_trusted_only_whole_sealed_and_listing_its_files():
    good = seal({"files": {"db.dump": {"size": 9, "sha256": "x"}, "migrations.tar.gz": {"size": 1, "sha256": "y"}},
                 "dump": {"file": "db.dump"}, "database": {"tables": {"t": 1}}})
    assert manifest_problems(good) == []
    edited = {**good, "database": {"tables": {"t": 2}}}
    assert manifest_problems(edited) == ["the manifest was changed after it was written (checksum mismatch)"]
    assert "the manifest lists no files" in manifest_problems(seal({**good, "files": {}}))
    assert "the manifest does not list db.dump" in manifest_problems(seal({**good, "files": {"migrations.tar.gz": {"size": 1, "sha256": "y"}}}))
    assert manifest_problems(None) == ["the manifest is missing or unreadable"]
    unsealed = {k: v for k, v in good.items() if k != "checksum"}
    assert manifest_problems(unsealed) == ["the manifest has no checksum (made by an older remigrate)"]


def test_bundles_are_told_apart_by_the_database_they_were_taken_from():
    a = database_identity("sqlite", "/srv/a/db.sqlite3", real_path="/srv/a/db.sqlite3")
    b = database_identity("sqlite", "/srv/b/db.sqlite3", real_path="/srv/b/db.sqlite3")
    pg = database_identity("postgresql", "shop", "db.internal", "5432")
    assert len({a["key"], b["key"], pg["key"]}) == 3
    bundles = [{"name": "x", "manifest": {"identity": a}}, {"name": "y", "manifest": {"identity": b}},
               {"name": "z", "manifest": {"engine": "postgresql", "database": {"name": "shop", "host": "db.internal", "port": "5432"}}}]
    assert [x["name"] for x in of_database(bundles, a)] == ["x"]
    assert [x["name"] for x in of_database(bundles, pg)] == ["z"]  # an older manifest: read from its database section


def test_count_comparison_accepts_only_expected_differences():
    rows, clean = compare_counts({"a": 1, "gone": 5}, {"a": 1, "new": 0}, expected_missing={"gone"}, expected_new={"new"})
    assert clean and [r[3] for r in rows] == ["ok", "removed (expected)", "new (expected)"]
    rows, clean = compare_counts({"a": 1, "b": 2}, {"a": 2})
    assert not clean and [r[3] for r in rows] == ["MISMATCH", "MISSING"]


def test_newest_verified_bundle_is_picked_and_partials_never():
    bundles = [
        {"name": "db-1", "manifest": {"created_at": "2026-01-01T00:00:00+00:00"}},
        {"name": "db-2", "manifest": {"created_at": "2026-01-02T00:00:00+00:00"}},
        {"name": ".db-3.partial", "manifest": {"created_at": "2026-01-03T00:00:00+00:00"}},
        {"name": "db-4", "manifest": None},
    ]
    assert pick_bundle(bundles)["name"] == "db-2"
    assert pick_bundle(bundles, "/some/where/db-1/")["name"] == "db-1"
    assert pick_bundle(bundles, "db-4") is None


def test_owners_are_access_rules_of_their_object_and_skipped_with_a_removed_table():
    from tasks.bundle import missing_objects, new_access, owned_object
    assert owned_object("materialized view Reports.Odd view owned by rep") == "Reports.Odd view"
    assert owned_object("function public.f(n integer) owned by rep") == "public.f(n integer)"
    assert owned_object("schema Reports owned by rep") is None and owned_object("view reports") is None
    before = ["table shop_old owned by rep", "table shop_order owned by rep", "view report owned by rep"]
    assert missing_objects(before, ["view report owned by rep"], skip={"shop_old"}) == ["table shop_order owned by rep"]
    saved = {"properties": {"beyond_reach": {}}, "objects": []}
    assert new_access(saved, ["table shop_order owned by rep"]) == []  # a bundle made before owners were recorded
    saved["properties"]["owners_recorded"] = True
    assert new_access(saved, ["table shop_order owned by rep"]) == ["table shop_order owned by rep"]
