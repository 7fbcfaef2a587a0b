"""Engine facts as data: connection flags, password files, error explanations, versions."""
import os
import subprocess
from pathlib import Path

import pytest

from tasks.console import RemigrateError
from tasks.engines import drop_statements, engine_name, explain_pg_error, parse_tool_version, pg_conn_args, pg_env, pgpass_line
from tasks.project import DbConfig

DB = DbConfig(engine="django.db.backends.postgresql", name="shop", user="app", password="s3cret", host="db.internal", port="5433",
              options={"sslmode": "require"})


def test_connection_flags_never_prompt_and_never_carry_the_password():
    args = pg_conn_args(DB)
    assert args[0] == "-w"
    keepalives = "keepalives='1' keepalives_idle='30' keepalives_interval='10' keepalives_count='6'"
    assert args[1:] == ["--host=db.internal", "--port=5433", "--username=app", f"--dbname=dbname='shop' {keepalives}"]
    assert "s3cret" not in " ".join(args)
    assert pg_conn_args(DB, dbname="postgres")[-1] == f"--dbname=dbname='postgres' {keepalives}"
    # a name is never taken for a connection string of its own; the project's OPTIONS win
    odd = DbConfig(engine=DB.engine, name="a b='c' \\", user="app", password="", host="", port="", options={"keepalives_idle": 5})
    assert pg_conn_args(odd)[-1].startswith("--dbname=dbname='a b=\\'c\\' \\\\' keepalives='1' keepalives_idle='5' ")


def test_environment_maps_options_and_points_at_the_password_file_only():
    env = pg_env(DB, "/tmp/x/pgpass")
    assert env["PGSSLMODE"] == "require" and env["PGPASSFILE"] == "/tmp/x/pgpass"
    assert "s3cret" not in repr(env) and "PGPASSWORD" not in env


def test_pgpass_escapes_colon_and_backslash():
    assert pgpass_line("a:b", "p:w\\d") == "*:*:*:a\\:b:p\\:w\\\\d\n"


def test_tool_versions_are_parsed():
    assert parse_tool_version("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)") == (15, 18)
    assert parse_tool_version("psql (PostgreSQL) 17beta1") == (17, 0)
    assert parse_tool_version("bash: pg_dump: command not found") is None


@pytest.mark.parametrize("stderr, expect", [
    ('FATAL:  password authentication failed for user "app"', "password authentication failed for user 'app'"),
    ("fe_sendauth: no password supplied", "wants a password"),
    ('FATAL:  database "shop" does not exist', "database 'shop' does not exist"),
    ("connection to server at \"db.internal\", port 5433 failed: Connection refused", "cannot reach PostgreSQL at db.internal:5433"),
    # a restore naming other roles: the connecting role is not the one missing, and what to run is said
    ('psql:<stdin>:12: ERROR:  role "reporting" does not exist', "role 'reporting', which the backup names"),
    ('psql:<stdin>:3034: ERROR:  must be member of role "deploy"', 'GRANT "deploy" TO'),
    ('psql:<stdin>:40: ERROR:  permission denied to set session authorization "lead"', "granted by lead on objects it does not own"),
    ('pg_dump: error: query failed: ERROR:  query would be affected by row-level security policy for table "task"\n'
     "HINT:  To disable the policy for the table's owner, use ALTER TABLE NO FORCE ROW LEVEL SECURITY.",
     "table 'task' forces row level security on its owner"),
])
def test_connection_errors_are_explained(stderr, expect):
    assert expect in explain_pg_error(stderr, DB)


def test_unknown_engine_lists_the_supported_ones():
    with pytest.raises(RemigrateError, match="supported engines: .*postgresql.*sqlite3"):
        engine_name("django.db.backends.oracle")
    assert engine_name("django.db.backends.postgresql") == "postgresql"


def test_drop_statements_quote_identifiers():
    sql = drop_statements([{"schema": "public", "name": 'we"ird; name', "kind": "r"}, {"schema": "s", "name": "v", "kind": "v"},
                           {"schema": "public", "name": "t_id_seq", "kind": "S", "owned_by_column": True}])
    assert "t_id_seq" not in sql
    assert 'DROP TABLE IF EXISTS "public"."we""ird; name" CASCADE;' in sql
    assert 'DROP VIEW IF EXISTS "s"."v" CASCADE;' in sql


def test_the_archive_database_statements_are_aimed_at_the_name_built_beside():
    from tasks.engines import build_name, retarget

    assert build_name("shop") == "shop__remigrate_build"
    assert len(build_name("x" * 63).encode()) == 63
    assert retarget("CREATE DATABASE shop WITH TEMPLATE = template0 ENCODING = 'UTF8';", "shop", "shop__b") == \
        "CREATE DATABASE \"shop__b\" WITH TEMPLATE = template0 ENCODING = 'UTF8';"
    assert retarget('ALTER DATABASE "My Shop" SET search_path TO \'shop\';', "My Shop", "n") == \
        'ALTER DATABASE "n" SET search_path TO \'shop\';'
    assert retarget("GRANT CONNECT ON DATABASE shop TO app;", "shop", "n") == 'GRANT CONNECT ON DATABASE "n" TO app;'
    assert retarget("COMMENT ON DATABASE shop IS 'shop2';", "shop", "n") == "COMMENT ON DATABASE \"n\" IS 'shop2';"
    assert retarget("ALTER ROLE app IN DATABASE shop SET statement_timeout TO '7s';", "shop", "n") == \
        "ALTER ROLE app IN DATABASE \"n\" SET statement_timeout TO '7s';"
    with pytest.raises(RemigrateError):  # a name that only starts like the database's is not it
        retarget("ALTER DATABASE shop2 OWNER TO a;", "shop", "n")


def test_database_statements_keep_a_comment_that_spans_lines_whole():
    from tasks.engines import database_statements

    script = ("--\n-- PostgreSQL database dump\n--\nSET statement_timeout = 0;\n"
              "CREATE DATABASE shop WITH TEMPLATE = template0 ENCODING = 'UTF8';\n"
              "ALTER DATABASE shop OWNER TO app;\n\\connect shop\n"
              "COMMENT ON DATABASE shop IS 'line one;\nit''s -- line two';\n"
              "GRANT CONNECT ON DATABASE shop TO reader;\nALTER ROLE app IN DATABASE shop SET work_mem TO '8MB';\n"
              "ALTER ROLE app SET search_path TO x;\n")
    assert database_statements(script) == [
        "CREATE DATABASE shop WITH TEMPLATE = template0 ENCODING = 'UTF8';", "ALTER DATABASE shop OWNER TO app;",
        "COMMENT ON DATABASE shop IS 'line one;\nit''s -- line two';", "GRANT CONNECT ON DATABASE shop TO reader;",
        "ALTER ROLE app IN DATABASE shop SET work_mem TO '8MB';"]


def test_long_database_names_get_build_names_of_their_own():
    from tasks.engines import build_name

    alpha, bravo = "x" * 46 + "_alpha", "x" * 46 + "_bravo"
    assert build_name(alpha) != build_name(bravo)
    assert all(len(build_name(n).encode()) <= 63 for n in (alpha, bravo, "é" * 31))


def test_no_commit_since_the_backup_is_proven_only_by_our_own_transactions():
    import remigrate_probe as probe

    aborted = {"20": "aborted", "21": "committed"}.get
    status = lambda xid: aborted(str(xid))  # noqa: E731
    assert probe.no_commit_since("10:30:", "10:31:", [30], status)  # only our ALTER DATABASE since
    assert probe.no_commit_since("10:30:20", "10:31:", [30], status)  # one in progress then, aborted
    assert not probe.no_commit_since("10:30:21", "10:31:", [30], status)  # one in progress then, committed since
    assert not probe.no_commit_since("10:30:", "10:32:", [30], status)  # a transaction of someone else
    assert not probe.no_commit_since("10:30:", "10:31:", [], status)
    assert not probe.no_commit_since("", "10:31:", [30], status)  # an older bundle: the content decides


def test_the_write_counters_prove_nothing_written_only_when_every_part_is_equal_on_postgresql_15_or_newer():
    import remigrate_probe as probe

    before = {"track_counts": "on", "server_version_num": 150004, "postmaster_started": "t0", "stats_reset": None,
              "tables": {"16390": [10, 2, 1, 16390]}}
    assert probe.no_write_since(before, dict(before))
    for key, value in (("tables", {"16390": [11, 2, 1, 16390]}), ("tables", {"16390": [10, 2, 1, 16999]}),
                       ("tables", {}), ("stats_reset", "t1"), ("postmaster_started", "t1"), ("track_counts", "off")):
        assert not probe.no_write_since(before, {**before, key: value}), key
    older = {**before, "server_version_num": 140010}  # statistics over UDP before 15: never a proof
    assert not probe.no_write_since(older, dict(older))
    assert not probe.no_write_since(None, before)  # a bundle without counters: the content decides


def test_a_sqlite_files_mark_changes_with_every_commit_and_is_none_in_wal_mode(tmp_path):
    import sqlite3

    import remigrate_probe as probe

    path = str(tmp_path / "db.sqlite3")
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("CREATE TABLE t (x)")
    reader = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    first = probe.live_mark(path, reader)
    assert first and probe.live_mark(path, reader) == first  # reading changes nothing
    writer.execute("INSERT INTO t VALUES (1)")
    assert probe.live_mark(path, reader) != first  # a commit does
    writer.execute("PRAGMA journal_mode=WAL")
    assert probe.live_mark(path, reader) is None  # WAL commits leave the counter: the content decides


def test_keys_are_shared_out_by_table_biggest_first():
    from tasks.engines import share_out

    keys = [("big", "pk big", ""), ("big", "idx big", ""), ("mid", "pk mid", ""), ("small", "pk small", "")]
    groups = share_out(keys, {"big": 100, "mid": 60, "small": 50}, 2)
    assert groups == [["pk big", "idx big"], ["pk mid", "pk small"]]  # a table's statements stay in one session
    assert share_out(keys, {}, 8) and len(share_out(keys, {}, 8)) == 3  # never an empty session


def test_the_entries_that_make_a_dropped_table_again_are_all_of_its_own_and_no_others():
    from tasks.engines import table_entries

    listing = """;
; Archive created at 2026-11-30
;
215; 1259 16390 TABLE public shop_flag owner
216; 1259 16395 SEQUENCE public shop_flag_id_seq owner
217; 0 0 SEQUENCE OWNED BY public shop_flag_id_seq owner
218; 2604 16399 DEFAULT public shop_flag id owner
219; 1259 16400 TABLE public shop_flag_extra owner
3401; 0 16390 TABLE DATA public shop_flag owner
3402; 0 16400 TABLE DATA public shop_flag_extra owner
3410; 0 0 SEQUENCE SET public shop_flag_id_seq owner
3300; 2606 16401 CONSTRAINT public shop_flag shop_flag_pkey owner
3301; 1259 16402 INDEX public shop_flag_name_1a2b3c4d owner
3302; 1259 16403 INDEX public shop_flag_extra_name_5e6f7a8b owner
3303; 2606 16404 FK CONSTRAINT public shop_flag shop_flag_site_id_fk_site_id owner
3304; 2606 16405 FK CONSTRAINT public shop_flag_extra shop_flag_extra_flag_id_fk owner
3305; 0 0 ACL public TABLE shop_flag owner
3306; 0 0 COMMENT public COLUMN shop_flag.name owner
"""
    lines = table_entries(listing, {"shop_flag": {"indexes": ["shop_flag_name_1a2b3c4d"], "sequences": ["shop_flag_id_seq"]}})
    ids = [line.split(";")[0] for line in lines.splitlines()]
    assert ids == ["215", "216", "217", "218", "3401", "3410", "3300", "3301", "3303", "3305", "3306"]
    more = ("30; 0 0 ACL public COLUMN shop_flag.name owner\n31; 3256 1 POLICY public shop_flag own_rows owner\n"
            "32; 0 1 ROW SECURITY public shop_flag owner\n33; 0 0 COMMENT public INDEX shop_flag_name_1a2b3c4d owner\n"
            "34; 0 0 COMMENT public CONSTRAINT shop_flag_pkey ON shop_flag owner\n"
            "35; 0 0 COMMENT public CONSTRAINT shop_flag_extra_pkey ON shop_flag_extra owner\n"
            "36; 3256 2 POLICY public shop_flag_extra theirs owner\n")
    lines = table_entries(more, {"shop_flag": {"indexes": ["shop_flag_name_1a2b3c4d"]}})
    assert [line.split(";")[0] for line in lines.splitlines()] == ["30", "31", "32", "33", "34"]
    # a name pg_dump must quote is quoted in ACL and COMMENT tags, never in the entry's own name
    odd = ('40; 1259 1 TABLE public Odd Flag owner\n41; 0 0 COMMENT public TABLE "Odd Flag" owner\n'
           '42; 0 0 COMMENT public COLUMN "Odd Flag"."Name" owner\n43; 0 0 ACL public TABLE "Odd Flag" owner\n'
           '44; 0 0 COMMENT public TABLE "Odd Flagged" owner\n')
    assert [ln.split(";")[0] for ln in table_entries(odd, {"Odd Flag": {}}).splitlines()] == ["40", "41", "42", "43"]
    # outside public a table is "schema.name", and its name may hold a dot itself
    dotted = "20; 1259 1 TABLE s x.y owner\n21; 0 1 TABLE DATA s x.y owner\n22; 1259 2 TABLE s y owner\n"
    assert [ln.split(";")[0] for ln in table_entries(dotted, {"s.x.y": {}}).splitlines()] == ["20", "21"]


def test_what_a_rebuild_gives_back_after_its_load_is_that_of_what_it_has():
    """Schemas that exist in the new database, columns of the tables loaded, every default
    privilege, the refresh of its materialized views, the comments on what it has; a table's own
    grant is given by name elsewhere (grant_sql), never twice."""
    from tasks.engines import after_load_toc

    listing = ("3358; 0 0 ACL - SCHEMA public pg_database_owner\n3359; 0 0 ACL - SCHEMA reports app\n"
               "3357; 0 0 ACL - SCHEMA legacy app\n3360; 0 0 ACL public COLUMN t.id app\n"
               "3361; 0 0 ACL public COLUMN gone.name app\n3362; 0 0 ACL public TABLE t app\n"
               "2041; 826 16402 DEFAULT ACL reports DEFAULT PRIVILEGES FOR TABLES app\n"
               "2042; 826 16403 DEFAULT ACL - DEFAULT PRIVILEGES FOR FUNCTIONS app\n"
               "3351; 0 16395 TABLE DATA public t app\n;3363; 0 0 ACL - SCHEMA public2 app\n"
               "3370; 0 16500 MATERIALIZED VIEW DATA public report app\n"
               "3371; 0 16501 MATERIALIZED VIEW DATA public gone_report app\n"
               # names pg_dump quotes in a tag; a default privilege in a schema the new database lacks
               '3380; 0 0 ACL public COLUMN "Odd Table"."Secret" app\n3381; 0 0 ACL - SCHEMA "Reports" app\n'
               "3382; 826 16405 DEFAULT ACL legacy DEFAULT PRIVILEGES FOR TABLES app\n"
               # comments: of what the new database has (a table's name a prefix of another's is not it)
               '3390; 0 0 COMMENT - SCHEMA "Reports" app\n3391; 0 0 COMMENT public TABLE "Odd Table" app\n'
               '3392; 0 0 COMMENT public COLUMN "Odd Table"."Secret" app\n3393; 0 0 COMMENT public TABLE t2 app\n'
               "3394; 0 0 COMMENT reports FUNCTION answer(n integer) app\n3395; 0 0 COMMENT reports FUNCTION answer() app\n"
               "3396; 0 0 COMMENT public INDEX t_idx app\n3397; 0 0 COMMENT public MATERIALIZED VIEW report app\n"
               "3398; 0 0 COMMENT - SCHEMA legacy app\n3399; 0 0 COMMENT public TABLE gone app\n")
    lines = after_load_toc(listing, [("public", "t"), ("reports", "r"), ("public", "Odd Table"), ("public", "report")],
                           ["public", "reports", "Reports"], [("public", "report")], [("reports", "answer", "n integer")])
    assert [ln.split(";")[0] for ln in lines.splitlines()] == ["3358", "3359", "3360", "2041", "2042", "3370", "3380",
                                                               "3381", "3390", "3391", "3392", "3394", "3397"]
    assert after_load_toc("3351; 0 16395 TABLE DATA public t app\n", [("public", "t")], ["public"]) == ""


def test_a_foreign_key_taken_out_comes_back_unchecked_then_validated_with_its_comment(pg_db):
    """The load's two steps for a foreign key, on a real server: added NOT VALID (with its comment)
    by one session, validated by another; a row without its parent makes the validation fail."""
    from tasks.engines import keys_query

    with pg_db.connect() as conn:
        conn.execute("CREATE TABLE parent (id int PRIMARY KEY); CREATE TABLE child (id int PRIMARY KEY, p int"
                     " CONSTRAINT child_p_fk REFERENCES parent DEFERRABLE INITIALLY DEFERRED)")
        conn.execute("COMMENT ON CONSTRAINT child_p_fk ON child IS 'the parent; it''s checked'")
        conn.execute("INSERT INTO parent VALUES (1), (2); INSERT INTO child VALUES (10, 1), (11, 2), (12, NULL)")
        parts = conn.execute(keys_query([("public", "parent"), ("public", "child")])).fetchone()[0]  # json, decoded
        ((table, make, drop, unchecked, validate),) = parts["foreign_keys"]
        assert table == "public.child" and "NOT VALID" in unchecked and "NOT VALID" not in make
        definition = "SELECT pg_get_constraintdef(oid), convalidated, obj_description(oid, 'pg_constraint') FROM pg_constraint WHERE conname = 'child_p_fk'"
        was = conn.execute(definition).fetchone()
        conn.execute(drop)
        conn.execute(unchecked)
        assert conn.execute(definition).fetchone()[1:] == (False, "the parent; it's checked")
        conn.execute(validate)
        assert conn.execute(definition).fetchone() == was
        assert conn.execute(keys_query([("public", "parent"), ("public", "child")])).fetchone()[0] == parts
        conn.execute(drop)
        conn.execute("INSERT INTO child VALUES (13, 99)")
        conn.execute(unchecked)  # not checked yet: the orphan gets in
        with pytest.raises(Exception, match="violates foreign key constraint"):
            conn.execute(validate)


def test_partitioned_tables_are_analyzed_through_their_top_parent_only(pg_db):
    """The load analyzes ordinary tables in parallel sessions; a partitioned table's ANALYZE takes
    its partitions' locks too, so it and its partitions (at every level) are left to one last step."""
    from tasks.engines import table_sizes_query

    with pg_db.connect() as conn:
        conn.execute("CREATE TABLE plain (id int PRIMARY KEY);"
                     " CREATE TABLE events (at date, kind text) PARTITION BY RANGE (at);"
                     " CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')"
                     "   PARTITION BY LIST (kind);"
                     " CREATE TABLE events_2024_a PARTITION OF events_2024 FOR VALUES IN ('a');"
                     " CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')")
        got = conn.execute(table_sizes_query()).fetchone()[0]
    assert set(got["sizes"]) == {"public.plain", "public.events", "public.events_2024", "public.events_2024_a",
                                 "public.events_2025"}
    assert got["parents"] == ["public.events"]
    assert sorted(got["partitions"]) == ["public.events_2024", "public.events_2024_a", "public.events_2025"]


def test_a_foreign_key_left_unchecked_on_purpose_comes_back_unchecked(pg_db):
    from tasks.engines import keys_query

    with pg_db.connect() as conn:
        conn.execute("CREATE TABLE parent (id int PRIMARY KEY); CREATE TABLE child (id int PRIMARY KEY, p int);"
                     " INSERT INTO child VALUES (1, 99);"  # an old orphan the key was never meant to check
                     " ALTER TABLE child ADD CONSTRAINT child_p_fk FOREIGN KEY (p) REFERENCES parent NOT VALID")
        ((_table, make, drop, unchecked, validate),) = conn.execute(keys_query([("public", "child")])).fetchone()[0]["foreign_keys"]
        assert unchecked is None and validate is None and "NOT VALID" in make
        conn.execute(drop)
        conn.execute(make)  # the load's one-step path: added back as it was, the orphan still there
        assert conn.execute("SELECT convalidated FROM pg_constraint WHERE conname = 'child_p_fk'").fetchone() == (False,)


def test_a_bundle_whose_digests_the_server_cannot_make_is_refused_before_the_restore():
    """hash-bytes digests need PostgreSQL 14: on 13 the restore would succeed and its check fail
    after the fact, so it is refused first (a unit check of the versions; no older server here)."""
    from types import SimpleNamespace

    from tasks.engines import Postgres

    engine = Postgres.__new__(Postgres)
    engine.project = SimpleNamespace(options=SimpleNamespace(compress="auto"))
    engine.versions = {"pg_dump": (13, 9), "pg_restore": (13, 9), "psql": (13, 9), "server": (13, 4)}
    with pytest.raises(RemigrateError, match="need PostgreSQL 14 or newer .* nothing was changed"):
        engine.preflight(archive_version=[13, 9], digest="hash-bytes")
    assert engine.preflight(archive_version=[13, 9], digest="md5-text") == {"server_version_num": 130004}
    engine.versions.update(server=(14, 0), pg_dump=(14, 1), pg_restore=(14, 1))
    assert engine.preflight(digest="hash-bytes") == {"server_version_num": 140000}


def lock_holding_engine(pg_db, tmp_path):
    from types import SimpleNamespace

    from invoke import Context

    from tasks.engines import Postgres
    from tasks.target import Target

    db = DbConfig(engine="django.db.backends.postgresql", name=pg_db.name, user=pg_db.role, password=pg_db.password,
                  host="127.0.0.1", port=str(pg_db.cluster.port), options={})
    workdir = tmp_path / "work"
    workdir.mkdir(mode=0o700)
    project = SimpleNamespace(target=Target(Context()), db=db, workdir=str(workdir), options=SimpleNamespace(compress="auto"))
    engine = Postgres(project)
    engine.preflight()
    return engine


def test_maintenance_statements_run_in_the_session_holding_the_lock_and_an_error_leaves_it_held(pg_db, tmp_path):
    """A reset makes some 20 statements on the maintenance database; while the run holds its lock
    they go through that session (no psql, no connection of their own each). A failing one
    says its error and leaves the session and the lock as they were; the output of one whose
    reader was interrupted is not taken for the next one's; once the session has ended the lock
    is taken again in a new session (a rollback must run, under the lock), and if another run
    has taken it meanwhile the run stops."""
    from servers import psycopg_admin

    from tasks.engines import advisory_key

    engine = lock_holding_engine(pg_db, tmp_path)
    holder = "SELECT pg_backend_pid() IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted)"
    assert engine.maintenance(holder, "before the lock") == "f"  # a psql of its own
    with engine.server_lock():
        assert engine.maintenance(holder, "asking who runs it") == "t"
        # the session that idles through a long load keeps its connection alive: its socket, idle
        # now, has a keepalive timer running (/proc/net/tcp's timer column: 2)
        port = int(engine.maintenance("SELECT client_port FROM pg_stat_activity WHERE pid = pg_backend_pid()", "port"))
        sockets = [line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:]]
        assert [s[5].split(":")[0] for s in sockets if int(s[1].split(":")[1], 16) == port and s[3] == "01"] == ["02"]
        assert engine.maintenance("SELECT 'a;b'\n  || E'c\\\\d' UNION ALL SELECT 'two';", "two rows") == "a;bc\\d\ntwo"
        with pytest.raises(RemigrateError, match="division by zero"):
            engine.maintenance("SELECT 1/0", "dividing")
        with pytest.raises(RemigrateError, match='relation "no_such_table" does not exist'):
            engine.maintenance("SELECT * FROM no_such_table", "reading")
        assert engine.maintenance(holder, "asking again") == "t"  # same session, lock still held
        assert engine.maintenance("SELECT 42 -- a comment at the end", "after the errors") == "42"
        engine._lock.stdin.write("SELECT 16384;\n\\echo REMIGRATE-END-0123456789abcdef\n")  # a reader cut short
        assert engine.maintenance("SELECT 1", "after an interrupted one") == "1"
        end_the_lock_session = "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted"
        with psycopg_admin(pg_db.cluster) as admin:
            admin.execute(end_the_lock_session)
        # psql finds out when it is given the next statement: the lock is taken again in a new
        # session, which runs it (a rollback must run, and under the lock)
        assert engine.maintenance(holder, "as the session ends") == "t"
        engine.check_lock()
        assert engine.maintenance(holder, "after the end") == "t"
        with psycopg_admin(pg_db.cluster) as admin:  # another run takes the lock while ours has no session: ours stops
            admin.execute(end_the_lock_session)
            admin.execute(f"SELECT pg_advisory_lock({advisory_key(pg_db.name)})")
            with pytest.raises(RemigrateError, match="could not be taken again .*another remigrate run"):
                engine.maintenance("SELECT 1", "with the lock taken by another")
            with pytest.raises(RemigrateError, match="could not be taken again"):
                engine.check_lock()  # a step that cannot be undone stops too


def test_a_database_whose_name_reads_like_a_connection_string_is_reached_by_its_name(pg):
    """psql, pg_dump and pg_restore take a --dbname with '=' in it for a connection string: the
    name is always given as one, quoted, so a name with '=', quotes, spaces or backslashes is
    the database it names."""
    from tasks.engines import pg_conn_args, pg_env

    name, role = "it's a=b \\c", "odd_name_owner"
    pg.create_app_database(name, role, "pw-odd")
    try:
        db = DbConfig(engine="django.db.backends.postgresql", name=name, user=role, password="pw-odd", host="127.0.0.1",
                      port=str(pg.port), options={})
        out = subprocess.run(["psql", "-X", "-At", *pg_conn_args(db), "-c", "SELECT current_database()"],
                             env={**os.environ, **pg_env(db), "PGPASSWORD": "pw-odd"}, capture_output=True, text=True)
        assert out.returncode == 0 and out.stdout.strip() == name, out.stderr
    finally:
        pg.drop_app_database(name, role)


def test_a_restore_first_drops_every_foreign_key_even_those_of_partitions(pg_db):
    """The statement that clears the way for a restore's --clean script: every foreign key of the
    project's tables goes, a partitioned table's with its partitions' copies, in the caller's
    transaction; nothing else."""
    from tasks.engines import DROP_FOREIGN_KEYS

    with pg_db.connect() as conn:
        conn.execute("CREATE TABLE site (id int PRIMARY KEY); CREATE TABLE other (id int PRIMARY KEY, s int REFERENCES site);"
                     "CREATE TABLE visit (id int, at date, s int REFERENCES site, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);"
                     "CREATE TABLE visit_2026 PARTITION OF visit FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');"
                     'CREATE SCHEMA "Odd ""schema"""; CREATE TABLE "Odd ""schema"""."T x" (s int CONSTRAINT "fk ""q""" REFERENCES site)')
        keys = "SELECT count(*) FROM pg_constraint WHERE contype = '{}' AND connamespace <> 'pg_catalog'::regnamespace"
        assert conn.execute(keys.format("f")).fetchone()[0] == 4  # the partition's copy included
        conn.execute("BEGIN")
        conn.execute(DROP_FOREIGN_KEYS)
        assert conn.execute(keys.format("f")).fetchone()[0] == 0 and conn.execute(keys.format("p")).fetchone()[0] == 4
        conn.execute("ROLLBACK")
        assert conn.execute(keys.format("f")).fetchone()[0] == 4
