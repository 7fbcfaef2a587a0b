"""The content digests that prove a reload kept every value, on a real PostgreSQL server: each
change of one value changes its table's digest, nothing else does (row order, column order,
session settings, a widened key), and bundles of earlier versions are still checked their way."""
import json

import pytest

from conftest import run_inv
from tasks import bundle as B
from tasks.bundle import MANIFEST
from tasks.engines import S  # scripts/remigrate_schema, as the tool loads it

COLUMNS = {  # column: (type, a value, another value)
    "i": ("integer", "1", "2"),
    "b": ("bigint", "9000000000", "9000000001"),
    "t": ("text", "'café'", "'cafe'"),
    "v": ("varchar(20)", "'Ab'", "'ab'"),
    "c": ("char(5)", "'x'", "'y'"),
    "flag": ("boolean", "true", "false"),
    "price": ("numeric(10,2)", "1.50", "1.51"),
    "f": ("double precision", "0.1", "0.1000001"),
    "d": ("date", "'2024-02-29'", "'2024-03-01'"),
    "ts": ("timestamptz", "'2024-01-01 10:00+00'", "'2024-01-01 10:00:00.000001+00'"),
    "doc": ("jsonb", "'{\"a\": 1}'", "'{\"a\": 2}'"),
    "raw": ("json", "'{\"a\": 1}'", "'{\"a\":1}'"),  # no hash of its own: hashed as its text, spaces count
    "u": ("uuid", "'00000000-0000-0000-0000-000000000001'", "'00000000-0000-0000-0000-000000000002'"),
    "blob": ("bytea", "'\\x00ff'", "'\\x00fe'"),
    "span": ("interval", "'1 day'", "'24 hours'"),  # equal as intervals, not the same value
    "tags": ("integer[]", "'{1,2}'", "'{2,1}'"),
    "ip": ("inet", "'10.0.0.1'", "'10.0.0.2'"),
    "mood": ("mood", "'ok'", "'sad'"),
    "at": ("timestamptz[]", "'{\"2024-01-01 10:00+00\"}'", "'{\"2024-01-01 11:00+00\"}'"),
    # values the types' own hash functions take for equal (they serve joins): none may pass
    "amount": ("numeric(12,2)", "5", "-5"),
    "odd": ("numeric", "'NaN'", "'Infinity'"),
    "wide_id": ("bigint", "0", "4294967297"),
    "stamp": ("timestamp", "'2024-01-01 00:00'", "'2024-01-01 01:11:34.967299'"),
    "nest": ("jsonb", "'[[1], 2]'", "'[[1, 2]]'"),
    "signed": ("jsonb", "'{\"x\": 5}'", "'{\"x\": -5}'"),
    "zero": ("double precision", "'0'", "'-0'"),
    "scale": ("numeric", "1.50", "1.5"),
    "padded": ("bpchar", "'a'", "'a '"),
}


@pytest.fixture
def cur(pg_db):
    conn = pg_db.connect()
    cursor = conn.cursor()
    cursor.execute("CREATE TYPE mood AS ENUM ('ok', 'sad')")
    cols = ", ".join(f"{name} {kind}" for name, (kind, _a, _b) in COLUMNS.items())
    cursor.execute(f"CREATE TABLE wide (id bigint PRIMARY KEY, {cols})")
    for row_id in (1, 2, 3):
        values = ", ".join(a for _kind, a, _b in COLUMNS.values())
        cursor.execute(f"INSERT INTO wide VALUES ({row_id}, {values})")
    cursor.execute("UPDATE wide SET i = id * 10, t = t || id")  # rows that differ from each other
    cursor.execute("CREATE TEMP TABLE orig AS SELECT * FROM wide")
    yield cursor
    conn.close()


def inv_ok(*args, env=None):
    out = run_inv(*args, env=env)
    assert out.returncode == 0, f"stdout:\n{out.stdout}\nstderr:\n{out.stderr}"
    return out


def digest(cursor, table="wide", algorithm=S.HASH_RECORD):
    return S.pg_content(cursor, tables={table}, algorithm=algorithm)[table]


def test_the_server_chooses_the_record_hash_and_a_change_of_any_one_value_changes_the_digest(cur):
    assert S.pg_digest_algorithm(cur) == S.HASH_RECORD == "hash-bytes"  # PostgreSQL 15 here
    first = digest(cur)
    assert first["rows"] == 3 and first["max_pk"] == 3
    for name, (_kind, _a, b) in COLUMNS.items():
        put_back = f"UPDATE wide w SET {name} = o.{name} FROM orig o WHERE o.id = w.id"
        cur.execute(f"UPDATE wide SET {name} = {b} WHERE id = 2")
        assert digest(cur)["digest"] != first["digest"], name
        cur.execute(put_back)
        assert digest(cur) == first, name
        cur.execute(f"UPDATE wide SET {name} = NULL WHERE id = 3")
        assert digest(cur)["digest"] != first["digest"], f"{name} set to NULL"
        cur.execute(put_back)
    # two rows that trade values of one column: every value is still there, the rows are not the same
    for column, traded in (("t", "CASE id WHEN 1 THEN 'café2' ELSE 'café1' END"), ("i", "CASE id WHEN 1 THEN 20 ELSE 10 END")):
        cur.execute(f"UPDATE wide SET {column} = {traded} WHERE id IN (1, 2)")
        assert digest(cur)["digest"] != first["digest"], column
        cur.execute(f"UPDATE wide w SET {column} = o.{column} FROM orig o WHERE o.id = w.id")
    assert digest(cur) == first


def test_the_digest_is_the_same_whatever_the_row_order_column_order_and_session_settings(cur):
    first = digest(cur)
    cols = list(COLUMNS)
    cur.execute(f"CREATE TABLE other AS SELECT {', '.join(reversed(cols))}, id FROM wide ORDER BY id DESC")
    cur.execute("ALTER TABLE other ADD PRIMARY KEY (id)")
    assert digest(cur, "other") == first
    legacy = digest(cur, algorithm=S.MD5_TEXT)
    cur.execute("SET TimeZone = 'Asia/Kathmandu'; SET DateStyle = 'SQL, DMY'; SET IntervalStyle = 'sql_standard';"
                " SET extra_float_digits = 0; SET bytea_output = 'escape'")
    assert digest(cur) == first
    cur.execute("SELECT current_setting('TimeZone'), current_setting('bytea_output')")
    assert cur.fetchone() == ("Asia/Kathmandu", "escape")  # the session's own settings given back
    assert digest(cur, algorithm=S.MD5_TEXT) != legacy  # the old digest did depend on them


def test_a_nan_is_a_nan_whatever_bits_the_server_gave_it(cur):
    """A NaN the server computed ('inf' - 'inf') comes back from a dump as the plain one: the
    same digest, or a good reload would be refused."""
    cur.execute("CREATE TABLE computed (id int PRIMARY KEY, x float8, y float4)")
    cur.execute("CREATE TABLE reloaded (id int PRIMARY KEY, x float8, y float4)")
    cur.execute("INSERT INTO computed VALUES (1, 'inf'::float8 - 'inf'::float8, 'inf'::float4 - 'inf'::float4)")
    cur.execute("INSERT INTO reloaded VALUES (1, 'NaN', 'NaN')")
    assert digest(cur, "computed") == digest(cur, "reloaded")


def test_a_table_without_a_primary_key_is_digested_too(cur):
    cur.execute("CREATE TABLE log (at timestamptz, line text)")
    cur.execute("INSERT INTO log SELECT now(), 'line ' || g FROM generate_series(1, 50) g")
    for algorithm in (S.HASH_RECORD, S.MD5_TEXT):
        got = digest(cur, "log", algorithm)
        assert got["rows"] == 50 and got["pk"] == [] and got["max_pk"] is None
        cur.execute("UPDATE log SET line = 'changed' WHERE line = 'line 7'")
        assert digest(cur, "log", algorithm)["digest"] != got["digest"], algorithm
        cur.execute("UPDATE log SET line = 'line 7' WHERE line = 'changed'")
        assert digest(cur, "log", algorithm) == got, algorithm


def test_a_key_widened_by_the_new_history_keeps_its_digest(cur):
    """5 in an integer column equals 5 in a bigint one (a new history may say BigAutoField)."""
    cur.execute("CREATE TABLE narrow (id integer PRIMARY KEY, parent smallint, note varchar(10))")
    cur.execute("CREATE TABLE widened (id bigint PRIMARY KEY, parent integer, note text)")
    for table in ("narrow", "widened"):
        cur.execute(f"INSERT INTO {table} SELECT g, g % 7, 'n' || g FROM generate_series(1, 500) g")
    assert digest(cur, "narrow") == digest(cur, "widened")


def test_the_old_digest_is_the_md5_of_each_rows_text_as_earlier_versions_made_it(cur):
    cur.execute("SELECT count(*), sum(('x' || substr(h, 1, 16))::bit(64)::bigint::numeric)::text,"
                " sum(('x' || substr(h, 17, 16))::bit(64)::bigint::numeric)::text"
                f" FROM (SELECT md5(ROW({', '.join(sorted(['id', *COLUMNS]))})::text) AS h FROM wide) r")
    count, high, low = cur.fetchone()
    want = ((int(high) % (1 << 64)) << 64 | (int(low) % (1 << 64)))
    assert digest(cur, algorithm=S.MD5_TEXT) == {"rows": count, "digest": f"{want:032x}", "pk": ["id"], "max_pk": 3}
    assert B.content_digest({"engine": "postgresql", "database": {}}) == S.MD5_TEXT
    assert B.content_digest({"engine": "sqlite", "database": {}}) == S.MD5_REPR
    with pytest.raises(ValueError):
        digest(cur, algorithm="sha1-of-nothing")


def test_a_bundle_of_an_earlier_version_is_restored_and_checked_with_its_own_digests(pg_project, tmp_path):
    """Its manifest has md5-of-text digests and no content_digest: the restore checks the rows
    that way, and a row changed behind the bundle's back is still found."""
    project, env, db = pg_project
    inv_ok("backup", "--project-dir", str(project), "--backup-dir", str(tmp_path / "b"), env=env)
    (bundle,) = [p for p in (tmp_path / "b").iterdir() if p.is_dir()]
    manifest = json.loads((bundle / MANIFEST).read_text())
    assert manifest["database"]["content_digest"] == S.HASH_RECORD
    with db.connect() as conn:
        old = S.pg_content(conn.cursor(), algorithm=S.MD5_TEXT)
    assert {t: c["rows"] for t, c in old.items()} == {t: c["rows"] for t, c in manifest["database"]["content"].items()}
    manifest["database"]["content"] = old
    del manifest["database"]["content_digest"]
    (bundle / MANIFEST).write_text(json.dumps(B.seal(manifest), indent=2, sort_keys=True))
    with db.connect() as conn:
        conn.execute("UPDATE writer_content SET title = title || '!' WHERE id = (SELECT min(id) FROM writer_content)")
    out = inv_ok("restore", "--project-dir", str(project), "--backup-dir", str(tmp_path / "b"), "--yes", env=env)
    assert "content matches" in out.stdout
    with db.connect() as conn:
        assert S.pg_content(conn.cursor(), algorithm=S.MD5_TEXT) == old


def test_sqlite_digests_read_by_several_processes_equal_those_read_by_one(tmp_path, monkeypatch):
    """A big table cut into rowid ranges, a WITHOUT ROWID table, a virtual (FTS5) table, a
    column named rowid and a table digested only up to a key: the same digests either way."""
    import sqlite3

    path = tmp_path / "db.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE big (id INTEGER PRIMARY KEY, body TEXT, n REAL, raw BLOB);
        CREATE TABLE keyed (code TEXT PRIMARY KEY, v INTEGER) WITHOUT/**/ROWID;
        CREATE TABLE odd (rowid TEXT, v INTEGER);
        CREATE TABLE hidden (id INTEGER PRIMARY KEY, v INTEGER, rowid INTEGER GENERATED ALWAYS AS (v * 2) VIRTUAL);
        CREATE VIRTUAL TABLE search USING fts5(body);
    """)
    conn.executemany("INSERT INTO big VALUES (?, ?, ?, ?)",
                     ((i * 3, f"row {i} é", i / 7, bytes([i % 256])) for i in range(1, 4000)))
    conn.executemany("INSERT INTO keyed VALUES (?, ?)", ((f"k{i}", i) for i in range(300)))
    conn.executemany("INSERT INTO odd VALUES (?, ?)", ((None if i % 5 == 0 else f"r{i}", i) for i in range(300)))
    conn.executemany("INSERT INTO search VALUES (?)", ((f"word{i} other",) for i in range(500)))
    conn.executemany("INSERT INTO hidden (id, v) VALUES (?, ?)", ((i * 1000, i) for i in range(300)))
    conn.commit()
    monkeypatch.setattr(S, "CHUNK_ROWIDS", 97)  # many pieces, none aligned with the gaps in the ids
    upto = {"big": 6000}
    one = S.sqlite_content(conn, upto=upto)
    many = S.sqlite_content_parallel(conn, str(path), 3, upto=upto)
    assert many == one
    assert one["big"]["rows"] == 2000 and one["big"]["max_pk"] == 11997 and one["odd"]["rows"] == 300
    assert len(S.sqlite_pieces(conn, "big", "SELECT * FROM main.big WHERE 1")) > 100
    assert S.sqlite_pieces(conn, "keyed", "SELECT * FROM main.keyed WHERE 1") == [("SELECT * FROM main.keyed WHERE 1", ())]
    assert S.sqlite_pieces(conn, "odd", "SELECT * FROM main.odd WHERE 1") == [("SELECT * FROM main.odd WHERE 1", ())]
    # a generated (hidden) column named rowid takes the name from the real one too
    assert S.sqlite_pieces(conn, "hidden", "SELECT * FROM main.hidden WHERE 1") == [("SELECT * FROM main.hidden WHERE 1", ())]
    conn.execute("INSERT INTO big (id, body) VALUES (9223372036854775807, 'the last id there is')")
    conn.commit()
    far = S.sqlite_pieces(conn, "big", "SELECT * FROM main.big WHERE 1")  # rowids 3 .. 2**63-1: still few pieces
    assert len(far) <= S.MAX_PIECES and far[0][1][0] == 3 and far[-1][1][1] == 9223372036854775807
    assert S.sqlite_content_parallel(conn, str(path), 2) == S.sqlite_content(conn)
    conn.execute("DELETE FROM big WHERE id = 9223372036854775807")
    conn.commit()
    conn.execute("UPDATE big SET body = body || '!' WHERE id = 3000")
    conn.commit()
    assert S.sqlite_content_parallel(conn, str(path), 2, upto=upto)["big"]["digest"] != one["big"]["digest"]


@pytest.mark.parametrize("backup", ["every table digested", "keyed tables left to the copy"])
def test_a_sqlite_file_built_beside_is_compared_with_the_backup_copy_value_by_value(tmp_path, backup):
    """The verification of a SQLite file built from a backup copy pairs each table's rows with the
    copy's by key and compares every value as stored: a table proven equal gets the copy's
    digest; one change of any kind (a letter's case under NOCASE, 1 made 1.0 or '1', a NULL, a
    row gone) gives its table a digest of its own; tables with nothing to pair rows by are
    digested; a copy changed since its digests were made is refused. The same whether the
    backup digested every table (earlier versions) or only those no key pairs (this one's)."""
    import shutil
    import sqlite3

    from tasks.project import probe_module

    probe = probe_module()
    tmp_path = tmp_path / "odd ?name#50%"  # characters a SQLite URI must have quoted
    tmp_path.mkdir()
    ref = tmp_path / "copy.sqlite3"
    with sqlite3.connect(ref) as conn:
        conn.executescript("""
            CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT COLLATE NOCASE, qty, price REAL, data BLOB);
            CREATE TABLE tags (code TEXT PRIMARY KEY COLLATE NOCASE, label TEXT);
            CREATE TABLE pairs (a INT, b INT, note TEXT, PRIMARY KEY (a, b)) WITHOUT ROWID;
            CREATE TABLE loose (x, y);
            CREATE TABLE nullkey (k TEXT PRIMARY KEY, v);
            CREATE TABLE wider (id INTEGER PRIMARY KEY, a, legacy);
            CREATE TABLE twice (k, v);
            CREATE VIRTUAL TABLE docs USING fts5(body);
            CREATE TABLE untyped (id INTEGER PRIMARY KEY, v);
            CREATE TABLE descending (id INTEGER PRIMARY KEY DESC, v);
            CREATE TABLE renamed (id INTEGER PRIMARY KEY, v);
            INSERT INTO items VALUES (1, 'Apple', 1, 0.5, x'00ff'), (2, 'pear', '7', NULL, NULL), (5, 'fig', 2.5, -1e300, x'');
            INSERT INTO tags VALUES ('a', 'first'), ('B', 'second');
            INSERT INTO pairs VALUES (1, 2, 'x'), (2, 1, 'y');
            INSERT INTO loose VALUES (1, 'one'), (1, 'one'), (NULL, 2);
            INSERT INTO nullkey VALUES (NULL, 'no key'), ('k', 'keyed');
            INSERT INTO wider VALUES (1, 'x', 'kept only here'), (2, 'y', NULL);
            INSERT INTO twice VALUES ('a', 1), ('a', 1);
            INSERT INTO docs (rowid, body) VALUES (3, 'hello world'), (9, 'good bye');
            INSERT INTO untyped VALUES (1, 0.0), (2, 'x');
            INSERT INTO descending VALUES (NULL, 'not the rowid: a NULL key'), (1, 'b');
            INSERT INTO renamed VALUES (1, 'a');
        """)
    by_copy = backup != "every table digested"
    expected = probe.file_stats(str(ref), content=True, by_copy=by_copy)["content"]
    keyed = {"items", "tags", "pairs", "docs", "wider", "untyped", "renamed"}
    if by_copy:  # what a key pairs is not digested at backup; the rest is
        assert {t for t, e in expected.items() if e["digest"] == S.BY_COPY} == keyed
        assert expected["items"] == {"rows": 3, "digest": S.BY_COPY, "pk": ["id"], "max_pk": 5}
    reference = {"path": str(ref), "sha256": probe.sha256_of(str(ref)), "content": expected}

    def compared(*changes, upto=None):
        new = tmp_path / "new.sqlite3"
        shutil.copy(ref, new)
        with sqlite3.connect(new) as conn:
            for change in changes:
                conn.executescript(change)
        got = probe.file_stats(str(new), check=True, content=True, upto=upto, alone=True, reference=reference)["content"]
        return {t: e["digest"] == expected[t]["digest"] for t, e in got.items()}, got

    same, got = compared()
    assert all(same.values()) and set(got) == set(expected)
    assert {t for t, e in got.items() if e.get("proof")} == keyed  # the rest digested
    # Rows up to the copy's highest key (content types of new models come after): new rows beyond
    # it are not compared, a changed old one is.
    same, got = compared("INSERT INTO items VALUES (6, 'new', 1, 1.0, NULL)", upto={"items": 5})
    assert all(same.values()) and got["items"]["proof"], got["items"]
    same, _ = compared("INSERT INTO items VALUES (6, 'new', 1, 1.0, NULL)", "UPDATE items SET qty = 3 WHERE id = 2",
                       upto={"items": 5})
    assert [t for t, ok in same.items() if not ok] == ["items"]
    for change, table in [("UPDATE items SET name = 'apple' WHERE id = 1", "items"),
                          ("UPDATE items SET qty = 1.0 WHERE id = 1", "items"),
                          ("UPDATE items SET qty = '1' WHERE id = 1", "items"),
                          ("UPDATE items SET price = NULL WHERE id = 1", "items"),
                          ("UPDATE items SET data = x'00fe' WHERE id = 1", "items"),
                          ("DELETE FROM items WHERE id = 5", "items"),
                          ("UPDATE tags SET code = 'b' WHERE code = 'B'", "tags"),
                          ("UPDATE pairs SET note = 'z' WHERE a = 2", "pairs"),
                          ("UPDATE loose SET y = 'uno' WHERE rowid = 2", "loose"),
                          ("UPDATE nullkey SET v = 'none' WHERE k IS NULL", "nullkey"),
                          ("UPDATE docs SET body = 'hello there' WHERE rowid = 3", "docs"),
                          ("ALTER TABLE wider DROP COLUMN legacy", "wider"),  # a column the load could not carry
                          ("UPDATE untyped SET v = -0.0 WHERE id = 1", "untyped"),  # equal in SQL, not the same value
                          ("UPDATE descending SET v = 'c' WHERE id IS NULL", "descending"),
                          ("ALTER TABLE renamed RENAME COLUMN id TO pk", "renamed"),  # same values, another column
                          # the same key twice in the copy, a key of the new file: pairing would count one row twice
                          ("CREATE TABLE twice_new (k PRIMARY KEY, v); INSERT INTO twice_new VALUES ('a', 1), ('b', 2); "
                           "DROP TABLE twice; ALTER TABLE twice_new RENAME TO twice", "twice")]:
        same, _ = compared(change)
        assert [t for t, ok in same.items() if not ok] == [table], change
    with sqlite3.connect(ref) as conn:  # the copy itself changed after its digests were made
        conn.execute("UPDATE tags SET label = 'changed' WHERE code = 'a'")
    with pytest.raises(probe.ProbeError, match="backup copy .* changed since the backup was made"):
        compared()
    with pytest.raises(probe.ProbeError, match="backup copy .* is gone; the database cannot be checked against it"):
        probe.file_stats(str(ref), content=True, reference={**reference, "path": str(tmp_path / "gone.sqlite3")})


def test_a_write_to_a_wal_mode_sqlite_file_is_found_by_the_swap_by_comparing_with_the_backup_copy(tmp_path):
    """In WAL mode no file counter tells a commit: under the swap's exclusive lock the live file is
    compared with the backup copy (tables a key pairs) and digested against the manifest (the
    others). A write that keeps every count, in either kind of table, is found: nothing is
    replaced and the live file keeps its rows and its WAL mode; unchanged, the new file goes in."""
    import shutil
    import sqlite3
    from contextlib import closing
    from types import SimpleNamespace

    from tasks.project import probe_module

    probe = probe_module()
    live = tmp_path / "live.sqlite3"
    with closing(sqlite3.connect(live, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript("""
            CREATE TABLE keyed (id INTEGER PRIMARY KEY, name TEXT);
            CREATE TABLE loose (x, y);
            INSERT INTO keyed VALUES (1, 'one'), (2, 'two');
            INSERT INTO loose VALUES (1, 'a'), (1, 'a');
        """)
    copy = tmp_path / "bundle" / "db.sqlite3"
    copy.parent.mkdir()
    taken = probe.cmd_sqlite_backup(SimpleNamespace(args=[str(live), str(copy)]))
    assert taken["live_mark"] is None  # WAL: the content decides
    assert taken["content"]["keyed"]["digest"] == S.BY_COPY and taken["content"]["loose"]["digest"] != S.BY_COPY
    reference = tmp_path / "reference.json"
    reference.write_text(json.dumps({"path": str(copy), "sha256": probe.sha256_of(str(copy)), "content": taken["content"]}))
    moved = copy.with_name("moved.sqlite3")

    def swap():
        new = tmp_path / "new.sqlite3"
        shutil.copy(copy if copy.exists() else moved, new)
        return probe.cmd_sqlite_swap(SimpleNamespace(args=[str(new), str(live), str(reference), "null", ""]))

    for write, table in [("UPDATE keyed SET name = 'TWO' WHERE id = 2", "keyed"), ("UPDATE loose SET y = 'b' WHERE rowid = 1", "loose")]:
        with closing(sqlite3.connect(live, isolation_level=None)) as conn:
            conn.execute(write)
            rows = conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
        with pytest.raises(probe.ProbeError, match=f"changed {table} in"):
            swap()
        with closing(sqlite3.connect(live, isolation_level=None)) as conn:
            assert conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall() == rows  # kept, not replaced
            assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            conn.execute({"keyed": "UPDATE keyed SET name = 'two' WHERE id = 2", "loose": "UPDATE loose SET y = 'a'"}[table])
    copy.chmod(0o600)
    with closing(sqlite3.connect(copy, isolation_level=None)) as conn:  # a copy changed since the backup proves nothing
        conn.execute("UPDATE keyed SET name = 'uno' WHERE id = 1")
    with pytest.raises(probe.ProbeError, match="changed since the backup was made"):
        swap()
    with closing(sqlite3.connect(copy, isolation_level=None)) as conn:
        conn.execute("UPDATE keyed SET name = 'one' WHERE id = 1")
    reference.write_text(json.dumps({"path": str(copy), "sha256": probe.sha256_of(str(copy)), "content": taken["content"]}))
    copy.rename(moved)  # no copy to compare with: refused, and the live file is left as the application had it
    with pytest.raises(probe.ProbeError, match="backup copy .* is gone"):
        swap()
    with closing(sqlite3.connect(live)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    moved.rename(copy)
    done = swap()
    assert done["checked"] == "every table's content" and not (tmp_path / "new.sqlite3").exists()
    with closing(sqlite3.connect(live)) as conn:
        assert conn.execute("SELECT * FROM keyed").fetchall() == [(1, "one"), (2, "two")]


def test_a_rollback_journal_sqlite_file_unchanged_since_the_backup_is_swapped_on_its_counter_alone(tmp_path):
    """Where the file change counter proves no commit, the copy is not even opened (a copy moved
    away does not matter); after a commit, the content decides."""
    import shutil
    import sqlite3
    from contextlib import closing
    from types import SimpleNamespace

    from tasks.project import probe_module

    probe = probe_module()
    live = tmp_path / "live.sqlite3"
    with closing(sqlite3.connect(live, isolation_level=None)) as conn:
        conn.executescript("CREATE TABLE keyed (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO keyed VALUES (1, 'one');")
    copy = tmp_path / "db.sqlite3"
    taken = probe.cmd_sqlite_backup(SimpleNamespace(args=[str(live), str(copy)]))
    reference = tmp_path / "reference.json"
    reference.write_text(json.dumps({"path": str(tmp_path / "elsewhere.sqlite3"), "sha256": probe.sha256_of(str(copy)),
                                     "content": taken["content"]}))

    def swap():
        shutil.copy(copy, tmp_path / "new.sqlite3")
        return probe.cmd_sqlite_swap(SimpleNamespace(args=[str(tmp_path / "new.sqlite3"), str(live), str(reference),
                                                           json.dumps(taken["live_mark"]), ""]))

    with closing(sqlite3.connect(live, isolation_level=None)) as conn:
        conn.execute("UPDATE keyed SET name = 'ONE'")
    with pytest.raises(probe.ProbeError, match="backup copy .* is gone"):  # a commit: the content must decide
        swap()
    taken = probe.cmd_sqlite_backup(SimpleNamespace(args=[str(live), str(tmp_path / "second.sqlite3")]))
    assert swap()["checked"] == "no commit since the backup (file change counter)"
