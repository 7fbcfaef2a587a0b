"""The reset: plan, back up, remove models from the old migrations, regenerate the migrations,
rebuild the database, bring the data back, verify; roll back on any failure."""
import collections
import json
import os
import posixpath
import re
import socket
import time
import urllib.parse
from dataclasses import dataclass, field

from tasks import bundle as B
from tasks import fake, runlock
from tasks.backup import (fetch_bundle, find_bundle, record_deferred_check, settle_deferred_check, take_backup,
                          verify_bundle)
from tasks.base import resolve, task
from tasks.console import STOP, RemigrateError, Secrets, Timer, check_stop, confirm, human_bytes, ok, say, step, table, warn
from tasks.engines import LiveDatabaseKept, StrangerDatabase, engine_for
from tasks.faults import inject_fault, injected_problem
from tasks.history import History, install, prove, refusal
from tasks.history import show as show_history
from tasks.history import summary as history_summary
from tasks.project import open_project

import remigrate_schema as S  # noqa: E402  (scripts/, put on the path by tasks.console)
from remigrate_scrub import MASK, masked_url  # noqa: E402  (scripts/, on the path by tasks.console)

JOURNAL = B.JOURNAL
REPORT = "report.json"
MAY_GROW = ("django_content_type", "auth_permission")  # new models get theirs after the load


@dataclass
class Plan:
    apps: list
    removals: dict  # "app.Model" -> {"app", "model", "tables"}
    drop_tables: list
    orphans: dict  # table -> rows: tables with no model after the reset, not named
    empty_orphans: list
    special: list
    stats: dict
    skip: set = field(default_factory=set)  # tables not brought back
    mode: str = "regenerate"  # or "deployed": the new history is already on disk
    history: History = None  # the proof on scratch databases, with the new migration files
    accept: list = field(default_factory=list)  # --accept-difference names
    checks: dict = field(default_factory=dict)  # {"command": ..., "url": ...} run after the data is verified
    sessions: dict = field(default_factory=dict)  # {"end": bool, "wait": seconds}: the application's open sessions
    strategy: str = "rebuild"  # or "swap", "fake"
    fake: dict = None  # the fake strategy's proof: renames, differences, tables dropped
    no_backup: bool = False  # a fake's --no-backup: the dropped tables and the migration files only
    other_databases: list = field(default_factory=list)  # DATABASES aliases of other databases, not reset



INITIAL = re.compile(r"^\d{4}_initial\.py$")


def history_mode(apps, applied):
    """"regenerate" when the files on disk are the history the database was migrated with,
    "deployed" when they are already a fresh history (made on a laptop, committed, deployed)."""
    on_disk = {(a["label"], f[:-3]) for a in apps for f in a["migration_files"]}
    own = {a["label"] for a in apps}
    applied_own = {(app, name) for app, name in (applied or []) if app in own}
    if applied_own <= on_disk:
        return "regenerate"
    if all(a.get("starts_initial", all(INITIAL.match(f) for f in a["migration_files"])) for a in apps):
        return "deployed"
    raise RemigrateError("the migration files on disk are neither the history the database was migrated with nor a "
                         "fresh one (starting from initial migrations); deploy the old files or the complete new "
                         "history first")


def make_plan(project, engine, remove_models_, drop_tables, accept=(), absorb_pending=False):
    facts = project.probe("plan", *remove_models_, what="planning the reset")
    stats = engine.stats(fk_check=False)  # the backup counts broken references, on its copy
    mode = history_mode(facts["apps"], stats.get("applied_migrations"))
    for spec, r in facts["removals"].items():
        if "error" in r:
            hint = ("; the files on disk are already the new history, so name its table with --drop-table instead"
                    if mode == "deployed" else "")
            raise RemigrateError(r["error"] + hint)
    live = stats["tables"]
    removed = {t for r in facts["removals"].values() for t in r["tables"]}
    for name in drop_tables:
        if name not in live:
            raise RemigrateError(f"--drop-table {name}: no such table in {project.db.name}")
        if name in facts["model_tables"]:
            raise RemigrateError(f"--drop-table {name}: a model of the code uses this table, so its rows would be lost; "
                                 "only a table no model describes can be dropped; nothing was changed")
    named = removed | set(drop_tables)
    deleted = [c for c in facts["pending"] if c["model"] and not set(c["tables"]) <= set(drop_tables)]
    if deleted:
        c = deleted[0]
        raise RemigrateError(f"model {c['model']} is gone from the code but the migrations still create it (table "
                             f"{', '.join(f'{t} with {live.get(t, 0)} rows' for t in c['tables'])}); name it with "
                             f"--remove-model {c['model']} (its rows are not brought back) or its table with "
                             "--drop-table NAME, or restore its class; nothing was changed")
    pending = [c["change"] for c in facts["pending"] if not c["model"]]
    if pending:
        say("model changes that no migration holds yet (makemigrations would write them):")
        for change in pending:
            say(f"  - {change}")
        if not absorb_pending:
            raise RemigrateError("the models have changes that no migration holds yet (listed above), so they would go "
                                 "unreviewed into the new 0001_initial and the live database; run makemigrations and "
                                 "migrate first, or pass --absorb-pending; nothing was changed")
    engine.check_rebuild_rights(stats)  # the scratch builds need the same rights (PostgreSQL: CREATEDB)
    history = prove(project, engine, facts["apps"], named, mode, accept)
    # made by the models or carried over from the old history (a virtual table with its shadow tables)
    made = set(history.new_schema["tables"]) | set(history.new_schema["shadows"])
    unmodelled = set(live) - set(facts["model_tables"]) - made - named - {"django_migrations"}
    orphans = {t: live[t] for t in sorted(unmodelled) if live[t]}
    empty = sorted(t for t in unmodelled if not live[t])
    plan = Plan(apps=facts["apps"], removals=facts["removals"], drop_tables=list(drop_tables), orphans=orphans,
                empty_orphans=empty, special=facts["special_operations"], stats=stats,
                skip=named | set(empty), mode=mode, history=history, accept=list(accept),
                other_databases=facts.get("other_databases", []))
    plan.fake = fake.proof(plan)
    return plan


def show_plan(project, engine, plan, backup_dir):
    db = project.db
    props = plan.stats["properties"]
    size = props.get("size_bytes") or int(props.get("page_count", 0)) * int(props.get("page_size", 0))
    step("Plan")
    say(f"database   {engine.name} {db.name}" + (f" at {db.host}:{db.port}" if db.host else "") +
        f" on {project.target.name}, {len(plan.stats['tables'])} tables, {sum(plan.stats['tables'].values())} rows, {human_bytes(size)}")
    if plan.no_backup:
        dropped = plan.fake["drop"] if engine.dumps_tables else []
        say(f"backup     --no-backup: a bundle in {backup_dir} with the migration files"
            + (f" and the tables the fake drops ({', '.join(dropped)}); the rest of the database is not dumped" if dropped
               else " and a copy of the database file (the fake drops a table)" if plan.fake["drop"]
               else "; the database is not dumped"))
    else:
        say(f"backup     a new verified bundle in {backup_dir}")
    if plan.mode == "deployed":
        say("migrations the files on disk are already a fresh history: only the database is rebuilt with them")
    say("apps reset (numbered migration files deleted, then regenerated):" if plan.mode == "regenerate" else "apps:")
    say(table(("app", "files", "kept (not migrations)"),
              [(a["label"], len(a["migration_files"]), ", ".join(a["other_files"]) or "-") for a in plan.apps]))
    if plan.removals or plan.drop_tables:
        rows = [(spec, t, plan.stats["tables"].get(t, "-")) for spec, r in plan.removals.items() for t in r["tables"]]
        rows += [("--drop-table", t, plan.stats["tables"].get(t, "-")) for t in plan.drop_tables]
        say("removed (their tables are not brought back):")
        say(table(("model", "table", "rows"), rows))
    for t in plan.empty_orphans:
        warn(f"table {t} has no model and no rows: it is not rebuilt")
    if plan.other_databases:
        warn(f"the settings name other databases ({', '.join(plan.other_databases)}): only 'default' is reset; one "
             "migrated with these apps keeps the old history in its django_migrations, so reset it too (a run with "
             "its settings) or, once its schema matches, record the new history there with "
             "`manage.py migrate --database ALIAS --fake`")
    show_history(plan.history)
    if plan.orphans:
        say(table(("table with rows but no model", "rows"), sorted(plan.orphans.items())))


BIG = 1 << 30  # above this, reloading takes minutes: the plan recommends what does not


def show_strategies(project, engine, plan):
    """The strategy chosen, what each would do here, and the one recommended, with why."""
    size = engine.size_estimate(plan.stats)
    free, where = engine.room_for_copy()
    room = (f"{human_bytes(free)} free in {where}" if free is not None else f"free disk not checked: {where}")
    swap_fits = free is None or free > size * 1.2
    possible = fake.why_not(plan.fake) is None
    if possible and size > BIG:
        best, why = "fake", f"the data ({human_bytes(size)}) stays where it is: seconds whatever the size"
    elif size > BIG and swap_fits:
        best, why = "swap", "the application keeps running while the new database is built: seconds of downtime"
    else:
        best, why = "rebuild", (f"{human_bytes(size)} reloads quickly, and every row is read back and compared"
                                if size <= BIG else "there is no room for a second copy")
    say(f"strategy   {plan.strategy}" + (" (default)" if plan.strategy == "rebuild" else "")
        + f"; recommended here: {best} ({why})")
    say("rebuild    the database is closed from the end of the backup until the new one is loaded, verified and "
        "renamed in")
    say(f"swap       built beside while the application runs (reading only: a write since the backup is found at "
        f"the swap and stops the reset, nothing lost), then closed for seconds and renamed in; the old one is kept for "
        f"an instant rollback; needs about {human_bytes(size)} more disk ({room})")
    fake.show(plan.fake)
    by_hand = [r for r in plan.fake["renames"] if not r.get("explained", True)]
    if by_hand and plan.strategy != "fake":
        warn(f"{plan.strategy} gives these objects the new history's names; no migration gives their live names "
             f"(made or renamed by hand?): " + ", ".join(f"{r['kind']} {r['from']} -> {r['to']}" for r in by_hand[:6]))
    # a comment made on an index or a key the new history names otherwise (a renamed model's)
    # cannot be found again in a new database: said before anything changes, not after the drop
    renamed = {(r["table"], r["from_name"]): r for r in (plan.fake or {}).get("renames", [])
               if r["kind"] in ("index", "constraint")}
    live_comments = (plan.history.live_schema or {}).get("comments", {}) if plan.history else {}
    lost = [(c, renamed[(c["table"], c["name"])]) for c in live_comments.values() if (c["table"], c.get("name")) in renamed]
    if lost and plan.strategy != "fake":
        c, r = lost[0]
        raise RemigrateError(f"the comment on {r['kind']} {r['from_name']} of {r['table']} would not come back: the new "
                             f"history names it {r['to_name']}" + (f" (and {len(lost) - 1} more like it)" if len(lost) > 1
                                                                  else "")
                             + f"; take it away now ({c['target']} IS NULL) and make it again on {r['to_name']} after "
                             "the reset, or use --strategy fake (which renames it, comment and all); nothing was changed")
    # pg_restore --clean cannot restore a domain's NOT VALID constraint into a new database (its
    # ALTER DOMAIN ... DROP CONSTRAINT IF EXISTS fails when the domain is not there): a rollback would
    not_valid = sorted(name for name, t in (plan.history.live_schema or {}).get("types", {}).items()
                       if " NOT VALID" in t.get("definition", "")) if plan.history else []
    if not_valid and plan.strategy != "fake":
        raise RemigrateError(f"domain {not_valid[0]} has a constraint left NOT VALID, which a rollback could not restore "
                             f"into a new database; validate it first (ALTER DOMAIN {not_valid[0]} VALIDATE CONSTRAINT "
                             "...), or drop it, or use --strategy fake; nothing was changed")
    beyond = plan.stats["properties"].get("beyond_reach")
    if beyond and plan.strategy != "fake":
        role = plan.stats["properties"]["connected_as"]
        reasons = []
        for why, roles in beyond.items():
            way = S.BEYOND_WAYS.get(why)
            named = ", ".join(roles[:8]) + (f" and {len(roles) - 8} more" if len(roles) > 8 else "")
            reasons.append(f"{why} {named}" + (f" ({way.format(roles=named, role=role)})" if way else ""))
        raise RemigrateError(f"the database holds what {role} cannot make again in a new database, nor restore from its "
                             "backup: " + "; ".join(reasons) + "; or run the reset as a superuser, or use --strategy "
                             "fake; nothing was changed")
    if plan.strategy == "swap" and not swap_fits:
        raise RemigrateError(f"--strategy swap needs room for a second copy of the database ({human_bytes(size)}) but "
                             f"there are {human_bytes(free)} free in {where}; free some, or use --strategy rebuild; "
                             "nothing was changed")


class Journal:
    """Each phase reached, written into the bundle, so a killed run can be rolled back."""

    def __init__(self, project, bundle_path, run_id, options):
        self.project, self.path = project, posixpath.join(bundle_path, JOURNAL)
        self.data = {"bundle": posixpath.basename(bundle_path), "run_id": run_id, "identity": project.identity(),
                     "status": "running", "phases": [],
                     "controller": {"host": socket.gethostname(), "pid": os.getpid()}, "options": options}
        self.timer = None  # of the phase under way

    def __call__(self, phase):
        check_stop()
        self._close()
        self.data["phase"] = phase
        self.data["phases"].append({"phase": phase, "at": B.now().isoformat(timespec="seconds"), "t": time.time()})
        self.save()
        self.timer = Timer()
        step(phase.replace("-", " ").capitalize())
        inject_fault(phase)

    def _close(self, succeeded=True):
        if self.data["phases"] and self.data["phases"][-1].get("seconds") is None:
            if self.timer is None:  # a phase of the run that was killed
                self.data["phases"][-1]["seconds"] = "interrupted"
                return
            self.data["phases"][-1]["seconds"] = round(self.timer.seconds, 2)
            if succeeded:
                ok(f"{self.data['phase'].replace('-', ' ')} ({self.timer})")

    def finish(self, status, error=None):
        if status != "rolled-back":
            self._close(succeeded=status == "done")
        self.data["status"] = status
        if error:
            self.data["error"] = Secrets.scrub(error)
        self.save()

    def save(self):
        self.project.target.write_private(self.path, json.dumps(self.data, indent=2), replace=True)


def edit_migrations(project, apps, removals, write=True):
    """Remove the named models from the old migration files (syntax tree, formatting kept).
    Returns [(path, [(operation, model)])]; writes the files only if `write`."""
    from tasks.migration_edit import former_names, remove_models  # libcst: a sixth of every task's start-up otherwise

    by_app = {}
    for r in removals.values():
        if "error" in r:
            raise RemigrateError(r["error"])
        by_app.setdefault(r["app"], set()).add(r["model"])
    edits = []
    for app in apps:
        models = by_app.get(app["label"])
        if not models:
            continue
        paths = [posixpath.join(app["migrations_dir"], f) for f in app["migration_files"]]
        sources = {p: project.target.read_text(p) for p in paths}
        names = former_names(sources.values(), models)
        for path, text in sources.items():
            new, removed = remove_models(text, names)
            if not removed:
                continue
            edits.append((path, removed))
            say(f"    {posixpath.relpath(path, project.dir)}: {'removed' if write else 'would remove'} "
                f"{', '.join(op for op, _ in removed)}")
            if write:
                project.target.write_private(path, new, replace=True)
                project.target.run(["chmod", "644", path])
    return edits


def require_history_matches_models(project, failure):
    """makemigrations --check must find nothing to write."""
    check = project.manage("makemigrations", "--check", "--dry-run", check=False)
    if check["exit"]:
        raise RemigrateError(f"{failure}: {check['output'].strip()}")


def regenerate(project, plan):
    """Replace the numbered migration files by the new history proven on scratch databases
    (made again if this run did not prove it: a resumed run), and check what is on disk."""
    history = plan.history
    if history is None:
        history = prove(project, engine_for(project), plan.apps, plan.skip, plan.mode, plan.accept)
        reason = refusal(history)
        if reason:
            raise RemigrateError(reason)
    install(project, plan.apps, history)
    after = project.probe("plan", what="reading the new migrations")
    missing = [a["label"] for a in after["apps"] if a["models"] and not a["migration_files"]]
    if missing:
        raise RemigrateError(f"makemigrations wrote no migration for {', '.join(missing)}")
    history = set(after["history_models"])
    still = [spec for spec, r in plan.removals.items() if f"{r['app']}.{r['model']}" in history]
    if still:
        raise RemigrateError(f"the new migrations still create {', '.join(still)}")
    # makemigrations --check, from the read of the new files just made (no process of its own)
    if after["pending"]:
        raise RemigrateError("makemigrations --check is not clean after regenerating: "
                             + "; ".join(c["change"] for c in after["pending"][:5]))
    for a in after["apps"]:
        say(f"    {a['label']}: {', '.join(a['migration_files']) or '(no models)'}")
    return after


def verify(project, engine, manifest, plan, db_name=None, bundle_path=None):
    """Every table's rows against the backup at `bundle_path` (content, not only counts), only
    the expected differences, objects kept, sequences ahead, clean history; of the database
    built beside the live one when `db_name` names it."""
    saved = manifest["database"]
    # the database built beside was just loaded with its references checked (SQLite's
    # foreign_key_check, PostgreSQL's foreign keys added back): no second count there
    after = engine.stats(content=True, upto=B.grown_limits(saved.get("content", {}), MAY_GROW), db_name=db_name,
                         fk_check=db_name is None, digest=B.content_digest(manifest),
                         against=(bundle_path, manifest) if bundle_path else None)
    before = {t: n for t, n in saved["tables"].items() if t != "django_migrations"}
    now = {t: n for t, n in after["tables"].items() if t != "django_migrations"}
    rows, clean = B.compare_counts(before, now, expected_missing=plan.skip, expected_new=set(now) - set(before),
                                   may_grow=MAY_GROW)
    problems = [] if clean else [f"{r[0]}: {r[1]} rows before, {r[2]} after" for r in rows if r[3] in ("MISMATCH", "MISSING", "EXTRA")]
    if not saved.get("content"):
        problems.append(f"bundle {manifest['name']} has no content digests (made by an older remigrate); "
                        "only row counts could be compared")
    problems += B.compare_content(saved.get("content", {}), after["content"], skip=plan.skip, may_grow=MAY_GROW)
    problems += B.gone_objects(saved.get("objects", []), after["objects"], plan.skip)
    problems += [f"{obj} is new (the backup did not have it)" for obj in B.new_access(saved, after["objects"], plan.skip)]
    problems += B.sequence_problems(manifest["database"]["sequences"], after["sequences"], plan.skip)
    if injected_problem("verify"):
        problems.append("injected verification problem (REMIGRATE_FAULT)")
    fk_now = after["properties"].get("foreign_key_violations", 0)
    fk_before = saved["properties"].get("foreign_key_violations")
    if fk_now and fk_before is None and bundle_path:  # (SQLite) counted in the backup only when needed
        fk_before = engine.broken_references(bundle_path, manifest)
    if fk_now > (fk_before or 0):
        problems.append("the database has broken foreign keys that the backup did not have")
    problems += history_problems(project, db_name)
    return rows, problems, after


def history_problems(project, db_name=None):
    """`migrate --check` and `makemigrations --check` must be clean: every migration applied, none
    missing (of the database built beside when `db_name` names it)."""
    return [f"manage.py {' '.join(r['args'])} is not clean: {(r['output'] or r['errors']).strip()[:200]}"
            for r in project.manage_many([("migrate", "--check"), ("makemigrations", "--check", "--dry-run")],
                                         db_name=db_name, check=False) if r["exit"]]


def check_application(project, checks):
    """The application still works: Django's system checks (with the deployment checks when the
    settings say DEBUG is off), then the user's command and health URL. A failure raises, and
    the reset rolls back."""
    args = ["check"] if project.settings.get("debug") else ["check", "--deploy", "--fail-level", "ERROR"]
    result = project.manage(*args)
    lines = (result["output"] + result["errors"]).strip().splitlines() or ["no issues"]
    say(f"    manage.py {' '.join(args)}: {lines[0]}")
    for line in lines[1:20]:
        say(f"    | {line}")
    if checks.get("command"):
        out = project.run_command(checks["command"], what="--check-command")
        lines = (out.stdout + out.stderr).strip().splitlines()
        for line in lines[-15:]:
            say(f"    | {line}")
        if out.exited != 0:
            raise RemigrateError(f"--check-command {checks['command']!r} failed (exit {out.exited}): "
                                 f"{lines[-1] if lines else 'no output'}")
        say(f"    --check-command {checks['command']!r}: exit 0")
    if checks.get("url") and urllib.parse.urlsplit(checks["url"]).password == MASK:  # a resumed run: no password saved
        warn(f"--check-url {checks['url']} is not fetched by a resumed run (its password was not saved): fetch it yourself")
    elif checks.get("url"):
        path = posixpath.join(project.workdir, "check-url")  # (not in argv: it may hold a password)
        project.target.write_private(path, checks["url"], replace=True)
        answer = project.probe("check-url", path, what="--check-url")
        say(f"    --check-url {masked_url(checks['url'])}: {answer['status']}")


# Phases from which the live database is no longer what the backup holds (a SQLite reset builds
# its new file beside the live one and swaps it in after the verification; a PostgreSQL swap
# leaves the live database as it is until the swap).
TOUCHING = {("postgresql", "rebuild"): {"drop", "migrate", "load", "content-types", "migrate-again", "verify", "swap",
                                        "check-application"},
            ("postgresql", "swap"): {"swap", "check-application"},
            ("sqlite", "rebuild"): {"check-application"},
            ("sqlite", "swap"): {"check-application"},
            ("postgresql", "fake"): {"fake", "verify", "check-application"},
            ("sqlite", "fake"): {"fake", "verify", "check-application"}}


def database_touched(engine, phases, strategy="rebuild"):
    """Whether the live database is no longer what the backup holds (SQLite: only once the swap
    really replaced the file; a swap that failed or was refused changed nothing)."""
    return bool(TOUCHING[(engine.name, strategy)] & set(phases)) or engine.swapped(phases)


def rollback(project, engine, manifest, bundle_path, database=True, journal=None, save=lambda: None):
    """Database and migration files back as the bundle holds them (`journal`: the run's, which
    says which databases it made or dropped)."""
    fake_run = (journal or {}).get("plan", {}).get("strategy") == "fake"
    if database and not B.holds_database(manifest) and not fake_run:  # none, or a few tables: never the whole database
        raise RemigrateError(f"bundle {manifest['name']} holds no whole database (a fake reset's --no-backup) and no "
                             "journal of that reset; nothing was rolled back from it")
    dirs = [a["migrations_dir"] for a in project.own_apps()]
    project.probe("restore-migrations", posixpath.join(bundle_path, B.MIGRATIONS_ARCHIVE), *dirs,
                  what="restoring the migration files")
    if not database:
        engine.reopen()  # a reset stopped between closing the database and dropping it, or before a swap
        return
    if fake_run:
        undo_fake(project, engine, manifest, bundle_path)
        return
    if engine.recover(bundle_path, manifest, journal, save) == "renamed":
        say(f"    the {engine.name} database kept aside by the swap is back under its name (proven unchanged since "
            "the backup when it was set aside)")
        set_aside = rejected_of(engine, journal or {})
        if set_aside and journal is not None:  # (an earlier rollback killed after setting it aside did not record it)
            journal["rejected"] = set_aside
        if set_aside:
            say(f"    the new one, with whatever the application wrote to it since the swap, is kept as "
                f"{set_aside} (`inv cleanup` removes it)")
        return
    after = engine.stats(content=True, digest=B.content_digest(manifest), against=(bundle_path, manifest))
    rows, clean = B.compare_counts(manifest["database"]["tables"], after["tables"])
    if not clean or B.compare_content(manifest["database"].get("content", {}), after["content"]):
        raise RemigrateError(f"after the rollback the rows differ from bundle {manifest['name']}; "
                             f"restore it by hand with `inv restore --backup {manifest['name']}`")


FAKE_PROOF = "fake-proof.json"


def rejected_of(engine, journal):
    """The new database (or file) a rollback of this swap set aside, if it is there: named in the
    journal, or found under the name the rollback gives it (a rollback killed just after setting
    it aside had no chance to record it)."""
    if journal.get("rejected"):
        return None if journal.get("rejected_removed") else journal["rejected"]
    if not journal.get("kept"):
        return None
    name = engine.rejected_path(journal.get("run_id", "run"))
    return name if engine.kept_exists(name) else None


def undo_fake(project, engine, manifest, bundle_path):
    """A fake reset undone in place: the tables it dropped made again from the backup (nothing
    else is restored, so whatever the application wrote since stays), then its renames and
    history rows undone if it committed."""
    saved = json.loads(project.target.read_text(posixpath.join(bundle_path, FAKE_PROOF)))
    drops = saved["fake"]["drop"]
    gone = sorted(set(drops) - set(project.probe("describe", what="reading the live schema")["tables"])) if drops else []
    if gone:  # (a run with --no-backup drops no table)
        engine.restore_tables(bundle_path, manifest, {t: saved["fake"].get("drop_objects", {}).get(t, {}) for t in gone})
        say(f"    {', '.join(gone)} made again from the backup, with their rows")
    if fake.undo(project, bundle_path):
        say("    the fake reset's renames and history rows are undone in place; no row was moved")
    else:
        say("    the fake reset's transaction never committed: the database was not changed")
    return True


def run_reset(project, engine, remove_model, drop_table, yes, dry_run, fetch=False, fetch_dir=None, accept=(),
              absorb_pending=False, checks=None, sessions=None, no_backup=None):
    total = Timer()
    backup_dir = project.default_backup_dir()
    runlock.refuse_if_held(project)  # a reset that is running, or died half-way, comes first
    plan = make_plan(project, engine, remove_model, drop_table, accept, absorb_pending)
    plan.checks = {k: v for k, v in (checks or {}).items() if v}
    plan.strategy = project.options.strategy
    plan.no_backup = bool(no_backup)
    plan.sessions = dict(sessions or {})
    if plan.strategy == "swap":  # the rename needs the database to itself: the application reconnects to the new one
        plan.sessions["end"] = True
    show_plan(project, engine, plan, backup_dir)
    show_strategies(project, engine, plan)
    if plan.orphans:
        raise RemigrateError(f"tables with rows but no model after the reset: {', '.join(plan.orphans)}; "
                             "name each with --remove-model APP.Model (if its model was deleted) or --drop-table NAME, "
                             "or restore its model; nothing was changed")
    reason = refusal(plan.history) or (fake.why_not(plan.fake) if plan.strategy == "fake" else None)
    if reason:
        raise RemigrateError(reason)
    if dry_run:
        ok("dry run: nothing was changed")
        return None
    doing = {"rebuild": "rebuild", "swap": "build beside and swap in a new", "fake": "rewrite only the history of"}
    confirm(f"Reset the migrations of {len(plan.apps)} apps and {doing[plan.strategy]} {engine.name} database "
            f"{project.db.name} on {project.target.name}?", project.db.name.rsplit("/", 1)[-1], yes)
    project.probe("prepare-dir", backup_dir)
    run_id = B.new_run_id()
    with engine.server_lock():
        lock = runlock.take(project, run_id, backup_dir)
        try:
            manifest, bundle_path = take_backup(project, engine, backup_dir, kind="reset", before=plan.stats, run_id=run_id,
                                                with_dump=not no_backup, tables=plan.fake["drop"] if no_backup else (),
                                                defer_check=plan.strategy != "fake" and not (fetch and project.target.remote))
            if fetch:  # an off-host copy before anything is dropped
                fetch_bundle(project, manifest, bundle_path, fetch_dir)
            journal = Journal(project, bundle_path, run_id, {"remove_model": list(remove_model), "drop_table": list(drop_table)})
            journal.data["plan"] = {"apps": plan.apps, "removals": plan.removals, "drop_tables": plan.drop_tables,
                                    "skip": sorted(plan.skip), "mode": plan.mode, "special": plan.special,
                                    "accept": plan.accept, "sessions": plan.sessions,
                                    "checks": {k: masked_url(v) if k == "url" else v for k, v in plan.checks.items()},
                                    "strategy": plan.strategy}
            if plan.strategy == "swap":  # the name the live database keeps (renamed back by a rollback)
                journal.data["kept"] = engine.kept_path(run_id)
            if plan.strategy == "fake":  # what the transaction does and the schema it must give, for a resume
                project.target.write_private(posixpath.join(bundle_path, FAKE_PROOF), json.dumps(
                    {"fake": plan.fake, "new_schema": plan.history.new_schema}), replace=True)
            journal.save()
            runlock.update(project, lock, bundle=bundle_path)  # from here on, this run's own bundle is known
            return execute(project, engine, plan, manifest, bundle_path, journal, total)
        finally:
            engine.settle()  # a check of the backup still running when the run failed before its phases
            release_unless_unfinished(project, bundle_path=lock.get("bundle"))


def release_unless_unfinished(project, bundle_path):
    """The lock goes when the run finished or was rolled back (or never had a bundle); a failed
    rollback or a verification that found problems keeps it, so no new reset starts on a
    database in between: the next run names `inv rollback`."""
    status = read_journal(project, bundle_path).get("status") if bundle_path else None
    if status in (None, "done", "rolled-back"):
        runlock.release(project)


# Phases after which the migration files on disk are already the new history.
AFTER_MIGRATIONS = {"drop", "migrate", "load", "content-types", "migrate-again", "swap", "verify", "check-application",
                    "fake"}


def swap(engine, manifest, bundle_path, plan, journal, phases):
    """The verified new database takes the live name. A swap closes the live database only now
    (its writes since the backup are looked for first) and keeps it aside. The downtime, the
    time the application could not write, is measured from the close to the rename."""
    t = Timer()
    if plan.strategy == "swap" and engine.name == "postgresql":
        journal("close")
        engine.raise_sequences(engine.close(manifest, plan.sessions).get("sequences"))
    journal("swap")
    done = engine.swap_in(manifest, keep=journal.data.get("kept"), bundle_path=bundle_path) or {}
    if done.get("mode"):  # SQLite: the journal mode the kept file had (the swap leaves it in DELETE mode)
        journal.data["kept_mode"] = done["mode"]
        journal.save()  # at once: a rollback after a kill here must give it back
    phases["swap"] = str(t)
    closed_at = next((p["t"] for p in reversed(journal.data["phases"]) if p["phase"] == "close" and "t" in p), None)
    down = done.get("locked_seconds") if engine.name == "sqlite" else (time.time() - closed_at if closed_at else None)
    if down is not None:
        journal.data["downtime_seconds"] = round(down, 2)
        earlier = engine.name == "postgresql" and closed_at and closed_at < max(journal.data.get("resumed_at") or [0])
        say(f"    the application could not write for {down:.1f} s"
            + (" (since the interrupted run closed the database)" if earlier else "")
            + (f"; the old database is kept as {journal.data['kept']} "
            "(`inv rollback` puts it back at once, `inv cleanup` removes it)" if journal.data.get("kept") else ""))


def fake_in_place(project, plan, bundle_path, journal, phases):
    """The fake strategy's database phases: one transaction on the live database, then the proof
    that its schema is the new history's, names included, and that Django sees the history as
    fully applied. The rows are not moved, so they are not read again."""
    proof_path = posixpath.join(bundle_path, FAKE_PROOF)
    saved = json.loads(project.target.read_text(proof_path))
    apps_after = project.probe("plan", what="reading the new migrations")["apps"]
    t = Timer()
    if "fake" in [p["phase"] for p in journal.data["phases"]]:  # a resumed run: start from the live names again
        fake.undo(project, bundle_path)
    journal("fake")
    done = fake.apply(project, plan, saved["fake"], bundle_path, apps_after)
    journal.data["downtime_seconds"] = done["locked_seconds"]
    phases["fake"] = str(t)
    journal("verify")
    problems = fake.check(project, saved["new_schema"], plan.skip)
    problems += history_problems(project)
    if not problems:
        say("    the live schema is the new history's, names included; Django sees every migration applied")
    return [], problems, {"tables": {}}


def execute(project, engine, plan, manifest, bundle_path, journal, total, files_ready=False):
    """The phases that change things, from the migration files on; any failure rolls back."""
    phases = {}
    try:
        t = Timer()
        if files_ready:
            pass
        elif plan.mode == "regenerate":
            if plan.removals:
                journal("remove-models")
                edit_migrations(project, plan.apps, plan.removals)
            journal("regenerate-migrations")
            regenerate(project, plan)
        else:
            journal("check-migrations")
            require_history_matches_models(project, "the deployed migrations do not match the models")
        phases["migrations"] = str(t)
        t = Timer()
        if plan.strategy == "fake":
            in_place = True
            rows, problems, after = fake_in_place(project, plan, bundle_path, journal, phases)
        else:
            engine.rebuild_and_load(bundle_path, manifest, plan.skip, journal, plan.sessions, plan.strategy)
            phases["rebuild and load"] = str(t)
            in_place = engine.swapped([p["phase"] for p in journal.data["phases"]])  # a run resumed after its swap
            journal("verify")
            record_deferred_check(project, engine, manifest, bundle_path)  # (SQLite) the backup copy's own check
            rows, problems, after = verify(project, engine, manifest, plan, db_name=None if in_place else engine.beside,
                                           bundle_path=bundle_path)
        if not problems:
            if not in_place:
                swap(engine, manifest, bundle_path, plan, journal, phases)
            journal("check-application")
            check_application(project, plan.checks)
    except StrangerDatabase:
        raise  # left as it was, the run interrupted still: moved away, it can be resumed or rolled back
    except BaseException as exc:
        STOP.clear()  # the stop asked for is this rollback: its own commands must run
        reason = Secrets.scrub(str(exc) or type(exc).__name__)
        damaged = settle_deferred_check(project, engine, manifest, bundle_path)  # (SQLite) a damaged copy explains it
        if damaged:
            reason = Secrets.scrub(f"{damaged} (then: {reason})")
        warn(f"the reset failed at phase {journal.data.get('phase')}: {reason}")
        step("Rolling back (the database and the migration files as before)")
        kept = isinstance(exc, LiveDatabaseKept) or not database_touched(engine, [p["phase"] for p in journal.data["phases"]],
                                                                          plan.strategy)
        try:
            rollback(project, engine, manifest, bundle_path, database=not kept, journal=journal.data, save=journal.save)
        except BaseException as again:
            journal.finish("failed", f"{reason}; rollback failed too: {again}")
            raise RemigrateError(f"the reset failed ({reason}) and so did the rollback ({again}); "
                                 f"the backup {manifest['name']} is intact: run `inv rollback --backup {manifest['name']}`")
        journal.finish("rolled-back", reason)
        if kept:
            raise RemigrateError(f"the reset stopped ({reason}); the migration files are put back and the database was "
                                 f"never changed (backup {manifest['name']})")
        raise RemigrateError(f"the reset failed ({reason}); rolled back: the database and the migration files are "
                             f"as before (backup {manifest['name']})")
    if rows:
        say(table(("table", "rows before", "rows after", "status"), rows))
    report = {"bundle": manifest["name"], "status": "ok" if not problems else "failed", "tables": rows,
              "problems": problems, "removed": plan.removals, "dropped_tables": plan.drop_tables,
              "special_operations": plan.special, "history": plan.history and history_summary(plan.history),
              "phases": phases, "strategy": plan.strategy, "downtime_seconds": journal.data.get("downtime_seconds"),
              "kept": journal.data.get("kept"), "finished_at": B.now().isoformat(timespec="seconds")}
    project.target.write_private(posixpath.join(bundle_path, REPORT), json.dumps(report, indent=2, default=str), replace=True)
    if problems:
        journal.finish("verify-failed", "; ".join(problems))
        for p in problems:
            warn(p)
        where = ("" if in_place else f" at the new {'database' if engine.name == 'postgresql' else 'file'} "
                 f"{engine.beside}, which was not put in place")
        raise RemigrateError(f"verification found {len(problems)} problems (above){where}; nothing was rolled back so "
                             f"you can look; `inv rollback --backup {manifest['name']}` puts everything back")
    journal.finish("done")
    if plan.strategy == "fake":
        ok(f"reset done in {total}: the history was rewritten in place (strategy fake), no row was moved; "
           f"report in {posixpath.join(bundle_path, REPORT)}")
        return report
    ok(f"reset done in {total}: {len(rows)} tables verified, "
       f"{sum(n for t, n in after['tables'].items() if t != 'django_migrations')} rows; report in {posixpath.join(bundle_path, REPORT)}")
    return report


def read_journal(project, bundle_path):
    path = posixpath.join(bundle_path, JOURNAL)
    return json.loads(project.target.read_text(path)) if project.target.exists(path, "-f") else {}


def reset_bundle(project, folder, wanted, nothing):
    """(manifest, path) of the named bundle, else of this database's newest reset bundle."""
    if wanted:
        return find_bundle(project, folder, wanted)
    everything = project.probe("list-bundles", folder)
    resets = [b for b in B.of_database(everything, project.identity()) if b["manifest"].get("kind") == "reset"]
    chosen = B.pick_bundle(resets)
    if not chosen:
        this = B.describe_identity(project.identity())
        kinds = collections.Counter(b["manifest"].get("kind", "?") for b in B.of_database(everything, project.identity()))
        others = sorted({B.describe_identity(B.identity_of(b["manifest"])) for b in everything if b.get("manifest")} - {this})
        where = (f" (this database's bundles there: {', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))}; "
                 "none of a reset that can be used" + ("; `inv restore` puts a plain backup back" if kinds.get("backup") else "")
                 + ")" if kinds
                 else f" (the bundles there are of {'; '.join(others)})" if others else "")
        raise RemigrateError(f"no reset bundle of {this} in {folder}; {nothing}{where}")
    return chosen["manifest"], chosen["path"]


def run_bundle(project, folder, wanted, nothing):
    """The bundle a rollback or resume works from: the one of the interrupted run that holds this
    database's lock (whatever folder it is in), else the named one, else this database's newest
    reset bundle. (None, None) when the interrupted run never touched anything."""
    holder = runlock.read(project)
    if holder is not None:
        holder = runlock.judge(project, holder)  # a live run is never rolled back under its feet
        if holder is None and not wanted:
            return None, None
        if holder is not None and not wanted:
            return json.loads(project.target.read_text(posixpath.join(holder["bundle"], B.MANIFEST))), holder["bundle"]
    return reset_bundle(project, folder, wanted, nothing)


def plan_from_journal(data):
    """The plan a reset saved in its journal, enough to resume or verify it."""
    saved = data.get("plan") or {}
    return Plan(apps=saved.get("apps", []), removals=saved.get("removals", {}), drop_tables=saved.get("drop_tables", []),
                orphans={}, empty_orphans=[], special=saved.get("special", []), stats={},
                skip=set(saved.get("skip", [])), mode=saved.get("mode", "regenerate"), accept=saved.get("accept", []),
                checks=saved.get("checks", {}), sessions=saved.get("sessions", {}),
                strategy=saved.get("strategy", "rebuild"))


def resume_reset(project, engine, yes):
    """Finish a reset that was killed: from the new migration files if they were written, else
    from the archived old ones; the database part is redone from the verified backup."""
    total = Timer()
    manifest, bundle_path = run_bundle(project, project.default_backup_dir(), None, "nothing to resume")
    if manifest is None:
        ok("nothing to resume")
        return None
    data = read_journal(project, bundle_path)
    if data.get("status") != "running":
        raise RemigrateError(f"the last reset of {B.describe_identity(project.identity())} ({manifest['name']}) is "
                             f"{data.get('status', 'without a journal')}, not interrupted; nothing to resume")
    reached = [p["phase"] for p in data["phases"]]
    try:
        read = verify_bundle(project, engine, manifest, bundle_path)
    except RemigrateError as exc:
        if database_touched(engine, reached, (data.get("plan") or {}).get("strategy", "rebuild")):
            raise
        raise RemigrateError(f"{exc}; this reset cannot go on from it: `inv rollback` puts the migration files back "
                             "(the database was never touched)") from None
    if read:  # (SQLite) the copy was just read in full: its reset's own check need not read it again
        record_deferred_check(project, engine, manifest, bundle_path, result=read)
    confirm(f"Resume the reset of {project.db.name} from bundle {manifest['name']} (it stopped at phase "
            f"{data.get('phase')})?", project.db.name.rsplit("/", 1)[-1], yes)
    with engine.server_lock():
        return resume_run(project, engine, manifest, bundle_path, data, reached, total)


def resume_run(project, engine, manifest, bundle_path, data, reached, total):
    runlock.release(project)  # the dead run's lock, taken over by this one
    lock = runlock.take(project, data.get("run_id") or manifest.get("run_id"), posixpath.dirname(bundle_path))
    runlock.update(project, lock, bundle=bundle_path)
    try:
        plan = plan_from_journal(data)
        files_ready = bool(AFTER_MIGRATIONS & set(reached))
        if not files_ready:  # start the file phases again from the old files, byte for byte
            project.probe("restore-migrations", posixpath.join(bundle_path, B.MIGRATIONS_ARCHIVE),
                          *[a["migrations_dir"] for a in plan.apps], what="restoring the migration files")
        journal = Journal(project, bundle_path, lock["run_id"], data.get("options", {}))
        journal.data = data
        journal.data["controller"] = {"host": socket.gethostname(), "pid": os.getpid()}
        journal.data.setdefault("resumed_at", []).append(time.time())
        step(f"Resuming {manifest['name']} after phase {data.get('phase')}")
        return execute(project, engine, plan, manifest, bundle_path, journal, total, files_ready=files_ready)
    finally:
        release_unless_unfinished(project, bundle_path)


def confirm_no_backup(project, typed):
    """--no-backup NAME: only for a fake, and NAME typed as the database's name."""
    if project.options.strategy != "fake":
        raise RemigrateError("--no-backup goes only with --strategy fake (the other strategies load the data from the "
                             "backup); nothing was changed")
    name = project.db.name.rsplit("/", 1)[-1]
    if typed != name:
        raise RemigrateError(f"--no-backup {typed}: type the database's name ({name}) to confirm a reset without a "
                             "database backup; nothing was changed")


def reset_help():
    return {
        "remove_model": "APP_LABEL.Model removed from the old migrations and not brought back (repeatable); "
                        "resolved through the migration history, so its class may already be gone",
        "drop_table": "a table with no model that is dropped rather than kept (repeatable)",
        "dry_run": "show the plan and change nothing",
        "resume": "finish a reset that was killed (from its bundle's journal) instead of starting one",
        "accept_difference": "a difference between fresh installs from the old and the new history (or between the "
                             "live database and the new history) that is accepted: the object's name (repeatable)",
        "absorb_pending": "let model changes that have no migration yet go into the new history (shown in the plan)",
        "check_command": "a shell command run in the project folder after the data is verified (for example "
                         "'pytest -x -q'); a non-zero exit rolls the reset back",
        "end_sessions": "PostgreSQL: end the application's open sessions before the database is dropped "
                        "(default: wait for them to end, then refuse)",
        "wait_sessions": "PostgreSQL: seconds to wait for open sessions to end (default 30)",
        "no_backup": "--strategy fake only: take no database dump (the rows are not moved; the bundle keeps the "
                     "migration files and the tables the fake drops, and a rollback undoes the fake in place); give the "
                     "database's name to confirm, for example --no-backup shop",
        "check_url": "a health URL of the running application, fetched after the data is verified; "
                     "an error or an answer of 400 or above rolls the reset back",
    }


@task("project_dir", "python", "settings", "env_file", "backup_dir", "yes", "no_fetch", "fetch_dir", "compress", "jobs",
      "strategy", help=reset_help(),
      iterable=["remove_model", "drop_table", "accept_difference"])
def reset(c, remove_model=None, drop_table=None, yes=False, dry_run=False, resume=False, no_fetch=False, fetch_dir=None,
          accept_difference=None, absorb_pending=False, check_command=None, check_url=None, end_sessions=False,
          wait_sessions=30, compress=None, jobs=None, strategy=None, no_backup=None,
          project_dir=None, python=None, settings=None, env_file=None, backup_dir=None):
    """Reset the project's migrations to a fresh 0001_initial per app, keeping every row.

    Shows the plan (with what the old history made beyond the models, measured on scratch
    databases and carried into the new history, and the proof that a fresh install from the
    new history equals one from the old), asks for the database name (or --yes), takes a
    verified backup, installs the new migrations, builds the new database beside the live one
    (PostgreSQL: under <name>__remigrate_build; SQLite: <file>.remigrate-new), loads the data
    back with its ids, verifies every table's content there, puts it in place, and runs
    Django's checks (and --check-command / --check-url). Any failure after the backup rolls
    the database and the migration files back. --strategy swap builds it while the
    application keeps running (seconds of downtime); --strategy fake moves no data and only
    rewrites the history, when the live schema is proven equal to the new history's.
    """
    opts = resolve(c, project_dir=project_dir, python=python, settings=settings, env_file=env_file, backup_dir=backup_dir,
                   compress=compress, jobs=jobs, strategy=strategy)
    with open_project(c, opts) as project:
        engine = engine_for(project)
        if resume:
            resume_reset(project, engine, yes)
            return
        engine.preflight()
        if no_backup is not None:
            confirm_no_backup(project, no_backup)
        if check_url:
            Secrets.add(urllib.parse.urlsplit(check_url).password)
        run_reset(project, engine, remove_model or [], drop_table or [], yes, dry_run, fetch=not no_fetch,
                  fetch_dir=fetch_dir, accept=accept_difference or [], absorb_pending=absorb_pending,
                  checks={"command": check_command, "url": check_url},
                  sessions={"end": bool(end_sessions), "wait": int(wait_sessions)}, no_backup=no_backup)


@task("project_dir", "python", "settings", "env_file", "backup_dir", "backup", "yes", name="rollback")
def rollback_task(c, backup=None, yes=False, project_dir=None, python=None, settings=None, env_file=None, backup_dir=None):
    """Put back the database and the migration files from the last reset's backup.

    Use it after a reset that was killed or whose verification failed; --backup picks
    another bundle.
    """
    opts = resolve(c, project_dir=project_dir, python=python, settings=settings, env_file=env_file, backup_dir=backup_dir)
    with open_project(c, opts) as project:
        engine = engine_for(project)
        folder = project.default_backup_dir()
        manifest, path = run_bundle(project, folder, backup, "nothing to roll back")
        if manifest is None:
            ok("nothing to roll back: the interrupted reset never touched the database or the migration files")
            return
        if B.identity_of(manifest)["key"] != project.identity()["key"]:
            warn(f"bundle {manifest['name']} was taken from {B.describe_identity(B.identity_of(manifest))}, "
                 f"not from this project's {B.describe_identity(project.identity())}")
        data = read_journal(project, path)
        if data.get("status") == "rolled-back" and not backup:
            ok(f"nothing to roll back: the last reset of {B.describe_identity(project.identity())} ({manifest['name']}) "
               "was rolled back already; name an older bundle with --backup to go further back")
            return
        if not B.holds_database(manifest) and (data.get("plan") or {}).get("strategy") != "fake":
            raise RemigrateError(f"bundle {manifest['name']} holds no database dump (only the tables its fake reset "
                                 "dropped, or none: --no-backup) and no journal of that fake reset; nothing to roll back "
                                 "from it; name another with --backup")
        renaming = bool(data.get("kept")) and not data.get("kept_removed") and engine.kept_exists(data["kept"])
        strategy = (data.get("plan") or {}).get("strategy", "rebuild")
        touched = database_touched(engine, [p["phase"] for p in data.get("phases", [])], strategy) if data else True
        # a rename back, or a reset that never touched the database, needs no dump (only the migration files)
        verify_bundle(project, engine, manifest, path, dump=touched and not renaming)
        what = "the database and the migration files" if touched else "the migration files (the reset never touched the database)"
        later = ""
        if touched and data.get("status") == "done":
            if strategy == "fake":
                later = (" Nothing written since is lost: the data is not restored, only the history (and the tables "
                         "the reset dropped).")
            elif strategy == "swap" and renaming:
                later = " Whatever was written since the swap stays in the new database, which is set aside (not in use)."
            else:
                later = " Whatever was written to the database since that reset finished is lost."
        confirm(f"Roll back {what} of {engine.name} database {project.db.name} to {manifest['name']} "
                f"(taken {manifest['created_at']})?{later}", project.db.name.rsplit("/", 1)[-1], yes)
        timer = Timer()
        if touched and engine.name == "postgresql":  # a SQLite file may be missing here: the rollback recreates it
            engine.preflight(archive_version=manifest["dump"].get("dumped_by"), digest=B.content_digest(manifest))
        step(f"Rolling back to {manifest['name']}")
        with engine.server_lock():
            def save():  # what the rollback made (a database it created) is known to the next try
                if data:
                    project.target.write_private(posixpath.join(path, JOURNAL), json.dumps(data, indent=2), replace=True)
            rollback(project, engine, manifest, path, database=touched, journal=data, save=save)
        if data:
            data["status"] = "rolled-back"
            project.target.write_private(posixpath.join(path, JOURNAL), json.dumps(data, indent=2), replace=True)
        runlock.release(project)
        ok(f"rolled back to {manifest['name']}: {what} as before the reset ({timer})")


@task("project_dir", "python", "settings", "env_file", "backup_dir", "backup", name="verify")
def verify_task(c, backup=None, project_dir=None, python=None, settings=None, env_file=None, backup_dir=None):
    """Check the database against the last reset's backup: every table's content, objects, sequences, migrations.

    The same checks as the reset's last phase, for a later look (after a deploy, say). After a
    fake reset run with --no-backup (its bundle holds no rows), the fake's proof is checked
    again: the live schema is the new history's and every migration is applied.
    """
    opts = resolve(c, project_dir=project_dir, python=python, settings=settings, env_file=env_file, backup_dir=backup_dir)
    with open_project(c, opts) as project:
        engine = engine_for(project)
        folder = project.default_backup_dir()
        manifest, path = reset_bundle(project, folder, backup, "nothing to verify against")
        plan = plan_from_journal(read_journal(project, path))
        if plan.strategy == "fake" and not B.holds_database(manifest):  # no rows to compare with: the fake's proof
            saved = json.loads(project.target.read_text(posixpath.join(path, FAKE_PROOF)))
            problems = fake.check(project, saved["new_schema"], plan.skip) + history_problems(project)
            for p in problems:
                warn(p)
            if problems:
                raise RemigrateError(f"{len(problems)} differences from what the fake reset of {manifest['name']} made "
                                     "(above)")
            ok(f"the live schema is still the new history's, names included, and every migration is applied (bundle "
               f"{manifest['name']} is a fake reset's --no-backup: it holds no rows to compare)")
            return
        rows, problems, after = verify(project, engine, manifest, plan, bundle_path=path)
        say(table(("table", "rows before", "rows now", "status"), rows))
        if problems:
            for p in problems:
                warn(p)
            raise RemigrateError(f"{len(problems)} differences from bundle {manifest['name']} (above)")
        ok(f"{len(rows)} tables match bundle {manifest['name']}")


@task("project_dir", "python", "settings", "env_file", "backup_dir", "yes", name="cleanup")
def cleanup_task(c, yes=False, project_dir=None, python=None, settings=None, env_file=None, backup_dir=None):
    """Remove the databases kept aside: the old ones of swap resets, the new ones of rollbacks.

    A swap keeps the old database for an instant rollback; a rollback of a swap sets the new
    one aside (the application may have written to it). Run it once the database in place has
    proven itself; a rollback of a swap after that restores the bundle's backup instead
    (slower, same result). Bundles are kept: remove them by hand.
    """
    opts = resolve(c, project_dir=project_dir, python=python, settings=settings, env_file=env_file, backup_dir=backup_dir)
    with open_project(c, opts) as project:
        engine = engine_for(project)
        folder = project.default_backup_dir()
        runlock.refuse_if_held(project)
        found = []  # (bundle, journal, which: "kept" or "rejected", name)
        for b in B.of_database(project.probe("list-bundles", folder), project.identity()):
            journal = read_journal(project, b["path"]) if b.get("kept") or b.get("rejected") or b.get("strategy") == "swap" else {}
            for which, name in (("kept", b.get("kept") and journal.get("kept")), ("rejected", rejected_of(engine, journal))):
                if name and engine.kept_exists(name):
                    found.append((b, journal, which, name))
        if not found:
            ok(f"nothing to clean up: no database kept by a swap or set aside by a rollback of "
               f"{B.describe_identity(project.identity())}")
            return
        if not engine.exists():  # a rollback of a swap killed between its two renames: these are all there is
            raise RemigrateError(f"{project.db.name} is not there (a rollback of a swap that was interrupted?); run "
                                 "`inv rollback` first; nothing was removed")
        what = {"kept": "the old one, kept by the swap", "rejected": "the new one, set aside by the rollback"}
        say(table(("bundle", "reset", "database", "which"), [(b["name"], j.get("status"), name, what[which])
                                                             for b, j, which, name in found]))
        noun = "databases" if engine.name == "postgresql" else "files"
        confirm(f"Remove these {len(found)} {noun} of {project.db.name} (a rollback of a swap would then restore "
                "from the backup)?", project.db.name.rsplit("/", 1)[-1], yes)
        with engine.server_lock():
            for b, journal, which, name in found:
                engine.remove_kept(name)
                journal[f"{which}_removed"] = B.now().isoformat(timespec="seconds")
                project.target.write_private(posixpath.join(b["path"], JOURNAL), json.dumps(journal, indent=2), replace=True)
                say(f"    removed {name}")
        ok(f"removed {len(found)} {noun}")
