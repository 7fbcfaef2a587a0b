"""The fake strategy: the data stays where it is and only the history is rewritten, after
proving that the live schema equals what a fresh install from the new history makes (names
included, or renamed where only names differ)."""
import json
import posixpath

from tasks.console import say
from tasks.history import S


def proof(plan):
    """{"renames", "differences", "serial", "drop"} of a fake reset of this plan: it may run only
    when `differences` is empty."""
    history = plan.history
    live, new = history.live_schema, history.new_schema
    skip = set(plan.skip)
    renames = S.name_plan(live, new, skip)
    differences = [list(d) for d in S.strict_differences(live, new, skip)]
    for r in renames:  # a name no migration gives may be used by something: renamed only when accepted by name
        r["explained"] = S.explained(r, history.old_schema)
        key = (f"{r['kind']} {r['from']}", f"a name no migration gives (made or renamed by hand?); the new history "
                                           f"names it {r['to']}: accept the rename with --accept-difference {r['from']}")
        if not r["explained"] and not S.accepted(key, plan.accept):
            differences.append(list(key))
    drop = sorted(t for t in skip if t in live["tables"])
    return {"renames": renames, "differences": differences, "serial": S.serial_columns(live, new, skip), "drop": drop,
            # what makes each dropped table again, from the backup, should a rollback need it
            "drop_objects": {t: {"indexes": sorted(i.get("name", n) for n, i in live["indexes"].items() if i["table"] == t),
                                 "sequences": sorted(q["name"] for q in live["sequences"].values()
                                                     if q.get("name") and q.get("table") == S.pg_key_parts(t)[1])}
                             for t in drop},
            "empty": sorted(t for t in plan.empty_orphans if t in live["tables"])}  # checked again in the transaction


def why_not(fake):
    """The reason a fake reset cannot run, or None."""
    if fake["differences"]:
        return (f"the live schema is not what the new history makes ({len(fake['differences'])} differences listed "
                "above), so rewriting only the history would leave them; use --strategy swap or rebuild")
    return None


def show(fake):
    if fake["differences"]:
        say("fake       not possible: the live schema differs from a fresh install from the new history:")
        for key, text in fake["differences"][:20]:
            say(f"             - {key}: {text}")
        return
    renames = fake["renames"]
    say("fake       possible: the live schema equals the new history's"
        + (f" once {len(renames)} {'object is' if len(renames) == 1 else 'objects are'} renamed (named after a table's or "
           "column's old name)" if renames
           else ", names included"))
    for r in renames[:12]:
        say(f"             rename {r['kind']} {r['from']} -> {r['to']}"
            + ("" if r.get("explained", True) else " (a name no migration gives: accepted)"))
    if len(renames) > 12:
        say(f"             ... and {len(renames) - 12} more")
    if fake["serial"]:
        say(f"             serial columns kept as they are (a fresh install makes identity columns; Django treats "
            f"both alike): {', '.join(fake['serial'][:5])}" + (" ..." if len(fake["serial"]) > 5 else ""))


def apply(project, plan, fake, bundle_path, apps_after):
    """The one transaction: renames, drops, django_migrations of the reset apps rewritten to the
    migrations on disk now (`apps_after`). What undoes it is written into the bundle first."""
    labels = sorted(a["label"] for a in plan.apps)
    record = [[a["label"], f[:-3]] for a in apps_after if a["label"] in labels for f in sorted(a["migration_files"])]
    path = posixpath.join(project.workdir, "fake-plan.json")
    undo_file = posixpath.join(bundle_path, "fake-undo.json")
    project.target.write_private(path, json.dumps({"renames": fake["renames"], "drop": fake["drop"], "apps": labels,
                                                   "empty": fake.get("empty", []), "record": record,
                                                   "undo_file": undo_file}), replace=True)
    done = project.probe("fake-history", path, what="renaming, dropping the removed tables and rewriting the history")
    project.target.run(["chmod", "600", undo_file])
    say(f"    {done['renamed']} objects renamed, {len(done['dropped'])} tables dropped, {done['recorded']} migrations "
        f"recorded as applied, in one transaction of {done['locked_seconds']:.2f} s (the time the application may wait "
        "on its locks)")
    return done


def undo(project, bundle_path):
    """The fake transaction undone (renames back, the old django_migrations rows and id counter)
    if it committed; False when there is nothing to undo (it never started or never committed)."""
    undo_file = posixpath.join(bundle_path, "fake-undo.json")
    if not project.target.exists(undo_file, "-f"):
        return False
    saved = json.loads(project.target.read_text(undo_file))
    path = posixpath.join(project.workdir, "fake-undo.json")
    project.target.write_private(path, json.dumps({**saved, "drop": [], "empty": []}), replace=True)
    done = project.probe("fake-history", path, "undo", what="undoing the fake reset's renames and history")
    return done["undone"]


def check(project, new_schema, skip):
    """After the transaction: the live schema is the new history's, names included."""
    live = project.probe("describe", what="reading the live schema")
    problems = [f"{key}: {text}" for key, text in S.strict_differences(live, new_schema, skip)]
    problems += [f"{r['kind']} {r['from']} is not renamed to {r['to']}" for r in S.name_plan(live, new_schema, skip)]
    return problems
