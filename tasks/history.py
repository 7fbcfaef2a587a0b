"""The proof, on scratch databases, that a fresh install from the new history equals one from the
old history, with what the old history made beyond the models carried over.

Nothing of the project is touched: the old history is migrated into scratch database A, the
new history is generated into copies of the apps' migrations folders and migrated into scratch
database B (with the carried-over migration), and A, B and the live schema are compared.
"""
import json
import posixpath
import secrets
import sys
from dataclasses import dataclass, field

from tasks.console import say, table
from tasks.project import SCRIPTS
from tasks.target import group

if str(SCRIPTS) not in sys.path:
    sys.path.insert(0, str(SCRIPTS))
import remigrate_schema as S  # noqa: E402  (shared with the probe: one comparison for both sides)


CARRIED = "remigrate_carried"  # the generated migration's name, after its number


@dataclass
class History:
    folder: str  # holds rmg_<label>/: the new migration files, proven
    files: dict  # app label -> new file names
    written: list  # (app, file) of the carried-over migration and its data
    carried: list  # schema objects carried
    rows: dict  # table -> rows the old history put in (carried)
    inventory: list = field(default_factory=list)
    differences: list = field(default_factory=list)  # old vs new history, not accepted
    accepted: list = field(default_factory=list)
    live: list = field(default_factory=list)  # live database vs new history
    new_schema: dict = field(default_factory=dict)
    live_schema: dict = field(default_factory=dict)
    old_schema: dict = field(default_factory=dict)  # scratch database A (none for a deployed new history)
    post_migrate_error: str = None
    seconds: dict = field(default_factory=dict)
    sqlite_skipped: str = None  # why the old history was not measured on SQLite as well


def scratch_name(project, engine, kind):
    if engine.name == "sqlite":
        return posixpath.join(project.workdir, f"scratch-{kind}.sqlite3")
    return f"{project.db.name[:36]}__remigrate_{kind}_{secrets.token_hex(3)}"


def prove(project, engine, apps, removed, mode, accept=()):
    """Build A (old history) and B (new history plus carry-over) and compare them, and B with
    the live schema. Returns a History; raises only when a build fails."""
    work = project.workdir
    folder = posixpath.join(work, "history")
    project.target.run(["mkdir", "-p", "-m", "700", folder])
    project.target.shell(group(*[["cp", "-a", app["migrations_dir"], posixpath.join(folder, f"rmg_{app['label']}")]
                                 for app in apps]), what="copying the migrations to a scratch folder")
    spec = {"removed": sorted(removed), "old": None, "sqlite": None}
    if mode == "regenerate":
        spec["old"] = {"db": scratch_name(project, engine, "a"), "out": posixpath.join(work, "history-old.json")}
        if engine.name != "sqlite":  # measured on SQLite too, so that the new history installs there as well
            spec["sqlite"] = {"old": posixpath.join(work, "a.sqlite3"), "new": posixpath.join(work, "b.sqlite3"),
                              "out": posixpath.join(work, "history-sqlite.json")}
    spec_path = posixpath.join(work, "history-spec.json")
    project.target.write_private(spec_path, json.dumps(spec), replace=True)
    built = project.probe("history", spec_path, db_name=scratch_name(project, engine, "b"), migrations_from=folder,
                          what="building scratch databases from the old and the new history")
    old, new = built["old"], built["new"]
    live = project.probe("describe", what="reading the live schema")
    history = History(folder=folder, files=new["files"], written=new["written"], carried=new["carried"],
                      rows=(old or {}).get("rows", {}), inventory=(old or {}).get("inventory", []),
                      new_schema=new["installed"], live_schema=live, old_schema=(old or {}).get("schema") or {},
                      post_migrate_error=new["post_migrate_error"],
                      seconds=built["seconds"])
    if old:
        diffs = S.differences(old["schema"], new["schema"], skip=removed, names=("old history", "new history"))
        other = built.get("sqlite") or {}
        if "schema" in other:
            diffs += [(f"{key} (on SQLite)", text) for key, text in
                      S.differences(other["old"], other["schema"], skip=removed, names=("old history", "new history"))]
        history.sqlite_skipped = other.get("skipped")
        history.accepted = [d for d in diffs if S.accepted(d, accept)]
        history.differences = [d for d in diffs if not S.accepted(d, accept)]
    unmodelled = set(live["tables"]) - set(new["installed"]["tables"])  # orphans: judged by the plan
    drift = S.differences(live, new["installed"], skip=set(removed) | unmodelled, content=False,
                          names=("live database", "new history"), comments=False)  # every strategy keeps the live ones
    history.live = [d for d in drift if not S.accepted(d, accept)]
    return history


def verdict(entry, history):
    """What the plan says of one operation of the old history."""
    effect = entry.get("effect")
    if effect is None:
        return "its database operations are listed on their own"
    tag = " (elidable)" if entry.get("elidable") else ""
    if not (effect["created"] or effect["rows"] or effect["dropped"]):
        return "no effect on an empty database: a data fix; the backup carries existing rows" + tag
    parts = []
    if effect["created"]:
        parts.append("made " + ", ".join(effect["created"][:3]) + (" ..." if len(effect["created"]) > 3 else ""))
    if effect["rows"]:
        parts.append("rows: " + ", ".join(f"{t} {d}" for t, d in sorted(effect["rows"].items())[:3]))
    if effect["dropped"] and not parts:
        parts.append("dropped " + ", ".join(effect["dropped"][:3]))
    return "carried: " + "; ".join(parts) + tag


def show(history):
    """The inventory, the carry-over and the proof, for the plan."""
    if history.inventory:
        say("operations of the old history that makemigrations does not write, measured on a scratch database:")
        say(table(("app", "migration", "operation", "what it did on an empty database"),
                  [(e["app"], e["migration"], e["operation"], verdict(e, history)) for e in history.inventory]))
    if history.written:
        app = history.written[0][0]
        tables = ", ".join(f"{t} ({n})" for t, n in sorted(history.rows.items())) or "none"
        objects = (", ".join(history.carried[:8]) + (" ..." if len(history.carried) > 8 else "")) or "none"
        say(f"carried into the new history as {app}/{history.written[0][1]}:")
        say(f"    schema objects: {objects}")
        say(f"    rows the old history put in: {tables}")
    proven = "a fresh install from the new history equals one from the old history"
    for key, text in history.accepted:
        say(f"  accepted difference: {key}: {text}")
    if history.differences:
        say("a fresh install from the new history would differ from one from the old history:")
        for key, text in history.differences:
            say(f"  - {key}: {text}")
    elif history.inventory or history.written:
        say(f"proof      {proven} (schema, sequences and every row; {format_seconds(history.seconds)})")
    if history.post_migrate_error:
        say(f"a fresh install from the new history fails in a post_migrate handler: {history.post_migrate_error}")
    if history.sqlite_skipped:
        say(f"note       the old history was not measured on SQLite ({history.sqlite_skipped}); the new history "
            "will refuse to install on SQLite rather than lack what the old one made there")
    if history.live:
        say("the live database differs from what the new history makes (beyond the removed models):")
        for key, text in history.live:
            say(f"  - {key}: {text}")


def format_seconds(seconds):
    return ", ".join(f"{k} built in {v} s" for k, v in seconds.items())


def refusal(history):
    """The reason to refuse the reset, or None."""
    if history.live:
        return ("the live database differs from what the new history makes (listed above): pending model changes "
                "or objects made by hand would be lost; run makemigrations and migrate first, or name an accepted "
                "difference with --accept-difference NAME; nothing was changed")
    if history.differences:
        return ("a fresh install from the new history would differ from one from the old history (listed above); "
                "nothing was changed; accept a difference by name with --accept-difference NAME")
    if history.post_migrate_error:
        return ("a fresh install from the new history fails when the project's post_migrate handlers run "
                f"({history.post_migrate_error}); nothing was changed")
    return None


def install(project, apps, history):
    """Replace each app's numbered migration files by the proven new ones."""
    commands = []  # one command line for every app (each command is a round trip over SSH)
    for app in apps:
        target = app["migrations_dir"]
        old = [posixpath.join(target, f) for f in app["migration_files"]]
        old += [p[:-3] + ".json" for p in old if p.endswith(f"_{CARRIED}.py")]  # a carried migration's data
        commands.append(["rm", "-rf", "--", *old, posixpath.join(target, "__pycache__")])
        new = history.files.get(app["label"], [])
        source = posixpath.join(history.folder, f"rmg_{app['label']}")
        if new:
            commands.append(["cp", "--", *[posixpath.join(source, f) for f in new], target])
            commands.append(["chmod", "644", "--", *[posixpath.join(target, f) for f in new]])
    project.target.shell(group(*commands), what="installing the new migration files")


def summary(history):
    """What the report and the journal keep of the proof."""
    return {"inventory": history.inventory, "carried": history.carried, "rows": history.rows,
            "written": history.written, "accepted": history.accepted, "seconds": history.seconds,
            "files": history.files}
