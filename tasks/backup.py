"""Backup bundles: take one (verified before it counts), list them, restore one."""
import json
import os
import posixpath
import time
from pathlib import Path

from tasks import bundle as B
from tasks import runlock
from tasks.base import resolve, task
from tasks.console import RemigrateError, Timer, confirm, human_age, human_bytes, ok, say, step, table, warn
from tasks.engines import engine_for
from tasks.faults import inject_fault
from tasks.project import open_project, probe_module

HEADROOM = 64 * 1024 * 1024  # free space kept beyond the estimated dump size


# Free space, in times the database, that `auto` wants before it writes an uncompressed dump: the
# dump (bytea goes out as hex, TOASTed text expands), a second copy for a swap on the same disk,
# and a margin.
ROOM_FOR_UNCOMPRESSED = 4


def choose_compression(asked, free, need):
    """pg_dump's --compress and why. `auto`: none when the folder has room for four times the
    database (deflate is most of a dump's time: uncompressed it is 2-3x faster), else level 1."""
    if asked != "auto":
        return asked, f"--compress {asked}"
    if free >= ROOM_FOR_UNCOMPRESSED * need + HEADROOM:
        return "0", "uncompressed for speed (room enough; --compress 1 makes it about 3x smaller)"
    return "1", (f"compressed (level 1): {human_bytes(free)} free is less than {ROOM_FOR_UNCOMPRESSED} times the "
                 f"database ({human_bytes(need)})")


def _files(project, folder, names):
    """Size and sha256 of the bundle files `names` in `folder`, keyed by file name."""
    sums = project.probe("checksum", *[posixpath.join(folder, n) for n in names], what="computing checksums")
    return {posixpath.basename(k): v for k, v in sums.items()}


FULL_CHECKS = ["full read of the dump", "sha256 and size recorded", "row counts taken"]


def take_backup(project, engine, backup_dir, kind="backup", before=None, run_id=None, with_dump=True, tables=(),
                defer_check=False):
    """Write a verified bundle and return its manifest and path; nothing half-written is left.
    `before`: the database's stats if just taken (its size says how much room the backup needs).
    Without `with_dump` (a fake reset's --no-backup) the bundle holds the migration files, the
    run's journal and, of the database, only the `tables` the fake drops (a SQLite file is
    copied whole): enough to undo the fake, never to restore the database. With `defer_check`
    (a reset that touches the live database only after its last check), an engine that can
    (SQLite) reads its dump in full while the reset goes on: record_deferred_check() waits for it."""
    timer = Timer()
    defer_check = defer_check and with_dump and engine.defers_dump_check
    db = project.db
    if tables and not with_dump and not engine.dumps_tables:
        with_dump = True  # SQLite: a copy of the whole file is the backup (seconds per GiB)
    scoped = not with_dump and bool(tables)
    step(f"Backing up {engine.name} database {db.name} ({project.target.name})" if with_dump else
         f"Backing up the tables the fake drops ({', '.join(tables)}) and the migration files (--no-backup)" if scoped
         else "Archiving the migration files (--no-backup: the database is not dumped)")
    engine.preflight()
    room = project.probe("prepare-dir", backup_dir, what="preparing the backup folder")
    before = before or engine.stats()
    need = engine.size_estimate(before) if with_dump else 0
    if room["free_bytes"] < need + HEADROOM:
        raise RemigrateError(f"not enough free space in {room['path']}: the backup needs about {human_bytes(need + HEADROOM)}, "
                             f"{human_bytes(room['free_bytes'])} is free; free some space or pass --backup-dir")
    taken = {b["name"] for b in project.probe("list-bundles", room["path"])}
    name = B.bundle_name(db.name, B.now(), taken)
    final = posixpath.join(room["path"], name)
    partial = posixpath.join(room["path"], f".{name}{B.PARTIAL_SUFFIX}")
    project.target.run(["mkdir", "-m", "700", partial], what="creating the bundle folder")
    try:
        inject_fault("backup-dump")
        if with_dump:
            compress, why = choose_compression(project.options.compress, room["free_bytes"], need)
            if engine.name == "postgresql":
                say(f"    {why}")
            dump = engine.dump(posixpath.join(partial, engine.dump_file), compress=compress)
            stats = dump.pop("stats")  # the rows of the dump itself (one snapshot), with their digests
        elif scoped:
            dump, stats = engine.dump_tables(posixpath.join(partial, engine.dump_file), tables), before
        else:
            dump, stats = {"file": None, "skipped": "--no-backup"}, before
        dirs = [a["migrations_dir"] for a in project.own_apps()]
        archive = project.probe("archive-migrations", posixpath.join(partial, B.MIGRATIONS_ARCHIVE), *dirs,
                                what="archiving the migration files")
        names = [engine.dump_file, B.MIGRATIONS_ARCHIVE] if with_dump or scoped else [B.MIGRATIONS_ARCHIVE]
        files = {}
        if with_dump or scoped:  # the full read of the dump and the checksums at the same time
            if defer_check:  # started once the bundle has its final name, below
                files, dump["integrity_check"] = _files(project, partial, names), B.PENDING_CHECK
            else:
                dump.update(engine.verify_dump(posixpath.join(partial, engine.dump_file),
                                               meanwhile=lambda: files.update(_files(project, partial, names))))
        else:
            files = _files(project, partial, names)
        settings = project.settings
        manifest = B.build_manifest(
            name=name, kind=kind, engine=engine.name, db=db, stats=stats,
            dump={"file": engine.dump_file, **dump} if with_dump or scoped else dump,
            files=files, archive={"file": B.MIGRATIONS_ARCHIVE, "files": archive["files"]},
            project={"dir": project.dir, "settings_module": settings["settings_module"],
                     "django_version": settings["django_version"], "apps": [a["label"] for a in project.own_apps()]},
            verified={"at": B.now().isoformat(timespec="seconds"),
                      "checks": FULL_CHECKS[1:] + [f"full read of the dump: {B.PENDING_CHECK}"] if defer_check
                      else FULL_CHECKS if with_dump
                      else ["full read of the dump of the dropped tables", "sha256 and size recorded"] if scoped
                      else ["sha256 and size of the migration files recorded"]},
            target=project.target.name, identity=project.identity(), run_id=run_id or B.new_run_id(),
        )
        manifest = B.seal(manifest)  # the manifest's own checksum: a hand-edited one is refused
        project.target.write_private(posixpath.join(partial, B.MANIFEST), json.dumps(manifest, indent=2, sort_keys=True))
        project.probe("finalize-bundle", partial, final, what="finishing the bundle")
    except BaseException:
        project.target.remove_tree(partial)  # never leave something that could pass for a bundle
        raise
    rows = sum(stats["tables"].values())
    size = sum(f["size"] for f in files.values())
    if not with_dump:
        ok(f"bundle {name}: the migration files and the tables {', '.join(tables)} only, not the database ({timer})"
           if scoped else f"bundle {name}: the migration files only, no database dump ({timer})")
        say(f"    {final}")
        return manifest, final
    if defer_check:
        engine.start_deferred_check(posixpath.join(final, engine.dump_file))
    checked = "checksummed; the copy is checked while the new file is built" if defer_check else "verified"
    ok(f"backup {name}: {len(stats['tables'])} tables, {rows} rows, {human_bytes(size)}, {checked} ({timer})")
    say(f"    {final}")
    return manifest, final


def record_deferred_check(project, engine, manifest, path, result=None):
    """Wait for the full read of the dump that take_backup(defer_check=True) left running (a
    resumed run: read it now, unless its `result` is known), then record it in the manifest,
    sealed again: passed, or failed (RemigrateError then; `inv backups` calls the bundle damaged
    and no restore takes it unasked). `manifest` is updated in place."""
    if manifest["dump"].get("integrity_check") != B.PENDING_CHECK:
        return manifest
    try:
        result = result or engine.deferred_check(posixpath.join(path, manifest["dump"]["file"]))
    except RemigrateError as exc:
        _reseal(project, manifest, path, dump={"integrity_check": B.CHECK_FAILED + str(exc)[:300]})
        raise
    say("    the backup copy read back in full (integrity_check ok), recorded in its manifest")
    return _reseal(project, manifest, path, dump=result, checks=FULL_CHECKS)


def settle_deferred_check(project, engine, manifest, path):
    """A run that failed while its dump's full read was still running: wait for it and record it;
    what it found wrong (a damaged dump explains a failure reading it), or None."""
    if not engine.check_running():
        return None
    try:
        record_deferred_check(project, engine, manifest, path)
    except RemigrateError as exc:
        return str(exc)
    return None


def _reseal(project, manifest, path, dump, checks=None):
    body = {k: v for k, v in manifest.items() if k != "checksum"}
    body["dump"] = {**manifest["dump"], **dump}
    body["verified"] = {**manifest["verified"], "dump_read_at": B.now().isoformat(timespec="seconds"),
                        **({"checks": checks} if checks else {})}
    sealed = B.seal(body)
    project.target.write_private(posixpath.join(path, B.MANIFEST), json.dumps(sealed, indent=2, sort_keys=True), replace=True)
    manifest.clear()
    manifest.update(sealed)
    return manifest


def fetch_bundle(project, manifest, path, fetch_dir):
    """Copy a host's bundle to this machine and check every file's size and sha256 after the copy."""
    if not project.target.remote:
        return None
    local = Path(fetch_dir or B.FETCH_DIR).expanduser().resolve() / project.target.name / manifest["name"]
    local.mkdir(parents=True, mode=0o700)
    names = [*manifest["files"], B.MANIFEST]
    for name in names:
        project.target.c.get(posixpath.join(path, name), str(local / name))
        os.chmod(local / name, 0o600)
    sha256_of = probe_module().sha256_of  # the probe's own checksum code, run here on the copies
    actual = {n: {"size": (local / n).stat().st_size, "sha256": sha256_of(local / n)} for n in manifest["files"]}
    problems = B.check_files(manifest, actual)
    if problems:
        raise RemigrateError(f"the copy of {manifest['name']} fetched from {project.target.name} is damaged: {'; '.join(problems)}")
    ok(f"copied to this machine and checked: {local}")
    return local


def push_bundle(project, local, backup_dir):
    """Upload a bundle from this machine to the host's backup folder (checked there afterwards)."""
    manifest = json.loads((local / B.MANIFEST).read_text(encoding="utf-8"))
    remote = posixpath.join(backup_dir, manifest["name"])
    if project.target.exists(remote, "-d"):
        return manifest, remote
    partial = posixpath.join(backup_dir, f".{manifest['name']}{B.PARTIAL_SUFFIX}")
    project.probe("prepare-dir", backup_dir)
    project.target.run(["mkdir", "-m", "700", partial], what="creating the bundle folder on the host")
    try:
        for name in [*manifest["files"], B.MANIFEST]:
            project.target.put_file(local / name, posixpath.join(partial, name))
        project.probe("finalize-bundle", partial, remote, what="finishing the uploaded bundle")
    except BaseException:
        project.target.remove_tree(partial)
        raise
    ok(f"uploaded {manifest['name']} to {project.target.name}:{remote}")
    return manifest, remote


def find_bundle(project, backup_dir, wanted, whole=False):
    """(manifest, path) of the named bundle, or of the newest one (`whole`: which must hold the
    whole database, not be a fake reset's --no-backup bundle; an older one is only named, never
    taken unasked). Under fab, a bundle folder on this machine (a path) is uploaded first."""
    if wanted and project.target.remote and (Path(wanted).expanduser() / B.MANIFEST).is_file():
        return push_bundle(project, Path(wanted).expanduser().resolve(), backup_dir)
    if wanted and "/" in wanted and project.target.exists(posixpath.join(wanted, B.MANIFEST), "-f"):
        path = wanted.rstrip("/")
        return json.loads(project.target.read_text(posixpath.join(path, B.MANIFEST))), path
    bundles = project.probe("list-bundles", backup_dir)
    ours = B.of_database(bundles, project.identity())
    newest = None if wanted else B.pick_bundle(ours)
    usable = lambda m: B.holds_database(m) and not B.failed_check(m)  # noqa: E731
    if whole and newest and not usable(newest["manifest"]):  # never an older one unasked
        full = B.pick_bundle([b for b in ours if usable(b["manifest"])])
        why = ("its dump did not read back in full when its reset checked it" if B.failed_check(newest["manifest"])
               else "it does not hold the whole database (a fake reset run with --no-backup)")
        raise RemigrateError(f"the newest bundle, {newest['name']}, cannot be restored: {why}; "
                             + (f"the newest that can is {full['name']}: name it with --backup"
                                if full else "no bundle here can; take one with `inv backup`"))
    chosen = B.pick_bundle(bundles if wanted else ours, wanted)
    if chosen is None:
        if wanted:
            raise RemigrateError(f"no bundle named {wanted} in {backup_dir}; `inv backups` lists them")
        if B.pick_bundle(bundles):  # a shared folder: another database's bundle is never the default
            raise RemigrateError(f"no bundle of {B.describe_identity(project.identity())} in {backup_dir} (the bundles "
                                 "there are of other databases); name one with --backup if you really mean it")
        raise RemigrateError(f"no backup bundle in {backup_dir}; take one with `inv backup` or pass --backup-dir")
    return chosen["manifest"], chosen["path"]


def verify_bundle(project, engine, manifest, path, dump=True):
    """Refuse a bundle that is for another engine, changed since written, or unreadable; without
    `dump`, its database dump is not read (a rollback that renames the kept database back)."""
    if manifest.get("engine") != engine.name:
        raise RemigrateError(f"bundle {manifest.get('name')} holds a {manifest.get('engine')} database but this project uses "
                             f"{engine.name}; pick a {engine.name} bundle (`inv backups`)")
    names = [n for n in manifest.get("files", {}) if dump or n != manifest["dump"].get("file")]
    problems = B.check_files(manifest, _files(project, path, names), names)
    if problems:
        raise RemigrateError(f"bundle {manifest['name']} failed verification: {'; '.join(problems)}; nothing was changed")
    if not manifest["dump"].get("file") or not dump:
        return  # a fake reset's --no-backup bundle (the migration files only), or the dump is not needed
    try:
        return engine.verify_dump(posixpath.join(path, manifest["dump"]["file"]))
    except RemigrateError as exc:
        raise RemigrateError(f"bundle {manifest['name']} is unreadable ({exc}); nothing was changed")


def restore_bundle(project, engine, manifest, path, yes, safety_backup_dir=None):
    """Put the database back exactly as the bundle holds it, and prove it by row counts."""
    timer = Timer()
    if not manifest["dump"].get("file"):
        raise RemigrateError(f"bundle {manifest['name']} holds no database dump (a fake reset run with --no-backup); "
                             "pick another with --backup (`inv backups` lists them)")
    if manifest["dump"].get("scope"):
        raise RemigrateError(f"bundle {manifest['name']} holds only the tables a fake reset dropped "
                             f"({', '.join(manifest['dump']['scope'])}), not the database (--no-backup): `inv rollback` "
                             "undoes that reset; pick another bundle with --backup (`inv backups` lists them)")
    verify_bundle(project, engine, manifest, path)
    ok(f"bundle {manifest['name']} verified (checksums, full read)")
    engine.preflight(archive_version=manifest["dump"].get("dumped_by"), digest=B.content_digest(manifest))
    db = project.db
    if B.identity_of(manifest)["key"] != project.identity()["key"]:
        warn(f"the bundle was taken from {B.describe_identity(B.identity_of(manifest))}; restoring it into "
             f"{B.describe_identity(project.identity())}")
    confirm(f"Restore {engine.name} database {db.name} on {project.target.name} from {manifest['name']} "
            f"(taken {manifest['created_at']})? Its current content will be replaced.", db.name.rsplit("/", 1)[-1], yes)
    dump = posixpath.join(path, manifest["dump"]["file"])
    if getattr(engine, "missing", False):  # nothing to keep: create it as the backup describes it
        warn(f"database {db.name} does not exist; it is created from the bundle (owner, encoding, locale, settings)")
        engine.create_from_archive(dump)
        current = {"relations": []}
    else:
        if safety_backup_dir:
            take_backup(project, engine, safety_backup_dir, kind="pre-restore")
        current = engine.stats()
    step(f"Restoring {db.name} from {manifest['name']}")
    engine.restore(dump, manifest, current)
    after = engine.stats(content=True, digest=B.content_digest(manifest), against=(path, manifest))
    rows, clean = B.compare_counts(manifest["database"]["tables"], after["tables"])
    if not clean:
        say(table(("table", "in bundle", "now", "status"), [r for r in rows if r[3] != "ok"]))
        raise RemigrateError(f"row counts after the restore differ from bundle {manifest['name']} (table above)")
    changed = B.compare_content(manifest["database"].get("content", {}), after["content"])
    if changed:
        raise RemigrateError(f"after the restore the rows differ from bundle {manifest['name']}: {'; '.join(changed[:3])}")
    if after.get("applied_migrations") != manifest.get("applied_migrations"):
        raise RemigrateError("the applied migrations after the restore differ from the bundle's")
    ok(f"restored {manifest['name']}: {len(rows)} tables, {sum(after['tables'].values())} rows, content matches ({timer})")


@task("project_dir", "python", "settings", "env_file", "backup_dir", "no_fetch", "fetch_dir", "compress")
def backup(c, no_fetch=False, fetch_dir=None, compress=None, project_dir=None, python=None, settings=None, env_file=None,
           backup_dir=None):
    """Back up the project's database into a verified bundle (dump, manifest, migration files).

    Under fab -H, the bundle is also copied to this machine and checked (--no-fetch skips it).
    """
    opts = resolve(c, project_dir=project_dir, python=python, settings=settings, env_file=env_file, backup_dir=backup_dir, compress=compress)
    with open_project(c, opts) as project:
        manifest, path = take_backup(project, engine_for(project), project.default_backup_dir())
        if not no_fetch:
            fetch_bundle(project, manifest, path, fetch_dir)


@task("project_dir", "python", "settings", "env_file", "backup_dir", "backup", "yes",
      help={"no_safety_backup": "do not back up the current database before replacing it"})
def restore(c, backup=None, yes=False, no_safety_backup=False, project_dir=None, python=None, settings=None,
            env_file=None, backup_dir=None):
    """Restore the database from a bundle (newest by default), then check every table's row count.

    The bundle is verified (checksums, full read, same engine) before anything is touched;
    the current database is backed up first unless --no-safety-backup. Refused while a reset
    runs on the database or died half-way: finish it with `inv reset --resume` or undo it with
    `inv rollback` first.
    """
    opts = resolve(c, project_dir=project_dir, python=python, settings=settings, env_file=env_file, backup_dir=backup_dir)
    with open_project(c, opts) as project:
        engine = engine_for(project)
        folder = project.default_backup_dir()
        # a restore now would be undone (or dropped) by the reset's resume or rollback
        runlock.refuse_if_held(project, "; a restore now would be undone by it, so nothing was restored")
        manifest, path = find_bundle(project, folder, backup, whole=True)
        with engine.server_lock():  # no reset starts on it meanwhile, from here or another machine
            restore_bundle(project, engine, manifest, path, yes, safety_backup_dir=None if no_safety_backup else folder)


def deep_check(project, bundle):
    """Every file's size and sha256 against the manifest, then a full read of the dump."""
    from tasks.engines import ENGINES

    manifest = bundle["manifest"]
    problems = B.check_files(manifest, _files(project, bundle["path"], list(manifest.get("files", {}))))
    if problems:
        return "DAMAGED: " + "; ".join(problems)
    engine = ENGINES.get(manifest.get("engine"))
    if engine is None:
        return f"DAMAGED: unknown engine {manifest.get('engine')!r}"
    if not manifest["dump"].get("file"):
        return "verified now (sha256 of every file; no database dump: --no-backup)"
    try:
        engine(project).verify_dump(posixpath.join(bundle["path"], manifest["dump"]["file"]))
    except RemigrateError as exc:
        return f"DAMAGED: the dump does not read back ({exc})"
    return "verified now (sha256 of every file, full read)"


@task("project_dir", "python", "settings", "env_file", "backup_dir",
      help={"check": "also check every file's sha256 and read each dump in full (slower; reads every byte)"})
def backups(c, check=False, project_dir=None, python=None, settings=None, env_file=None, backup_dir=None):
    """List the backup bundles: name, kind, database, size, age, state, and how each reset ended.

    The state comes from the manifest (its checksum and list of files) and the files' sizes;
    --check also reads every byte (sha256 and a full read of the dump).
    """
    opts = resolve(c, project_dir=project_dir, python=python, settings=settings, env_file=env_file, backup_dir=backup_dir)
    with open_project(c, opts) as project:
        folder = project.default_backup_dir()
        bundles = project.probe("list-bundles", folder)
        if not bundles:
            say(f"no bundles in {folder}")
            return
        rows = []
        for b in sorted(bundles, key=lambda b: b["mtime"]):
            m = b["manifest"] or {}
            state = B.bundle_state(b)
            if check and state.startswith("ok"):
                state = deep_check(project, b)
            reset = {"running": "unfinished: --resume or rollback"}.get(b.get("reset"), b.get("reset") or "-")
            if b.get("strategy") and b["strategy"] != "rebuild":
                reset += f" ({b['strategy']})"
            if b.get("kept"):
                reset += f"; old database kept as {posixpath.basename(b['kept'])} (inv cleanup)"
            dump = m.get("dump") or {}
            if dump.get("scope"):
                reset += f"; holds only the tables the fake dropped ({', '.join(dump['scope'])}), --no-backup"
            elif m and not dump.get("file"):
                reset += "; no database dump (--no-backup)"
            if b.get("rejected"):
                reset += f"; the rolled-back new database kept as {posixpath.basename(b['rejected'])} (inv cleanup)"
            rows.append((b["name"], m.get("kind", "?"), m.get("engine", "?"), (m.get("database") or {}).get("name", "?"),
                         human_bytes(b["size"]), human_age(time.time() - b["mtime"]), state, reset))
        say(f"bundles in {folder}:")
        say(table(("name", "kind", "engine", "database", "size", "age", "state", "reset"), rows))
