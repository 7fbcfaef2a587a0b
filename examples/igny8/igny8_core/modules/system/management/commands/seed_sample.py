"""Fill the sample project with deterministic data shaped like a real one.

Unicode, NULLs, JSON, deleted rows (id gaps and sequences above max(id)), users with
permissions, admin log entries, and rows in the table of the removed WorkflowState model.
"""
import datetime as dt
import json
import random

from django.contrib.admin.models import ADDITION, CHANGE, LogEntry
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction

from igny8_core.auth.models import Account, User
from igny8_core.business.automation.models import AutomationRun
from igny8_core.business.integration.models import SiteIntegration
from igny8_core.business.optimization.models import OptimizationTask
from igny8_core.business.publishing.models import PublishingRecord
from igny8_core.business.site_building.models import (
    PageBlueprint,
    SiteBlueprint,
    SiteBlueprintCluster,
    SiteBlueprintTaxonomy,
)
from igny8_core.modules.automation.models import AutomationRule
from igny8_core.modules.billing.models import CreditTransaction, Plan
from igny8_core.modules.planner.models import Cluster, ContentIdea, Keyword
from igny8_core.modules.system.models import AIPrompt, Setting
from igny8_core.modules.writer.models import Content, Task

WORDS = ["café", "naïve", "Zürich", "東京", "данные", "🚀 launch", "O'Reilly", 'say "hi"', "tab\there", "line\nbreak", "plain", "über"]
EPOCH = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)


class Command(BaseCommand):
    help = "Fill the database with deterministic sample data (--scale multiplies the row counts)."

    def add_arguments(self, parser):
        parser.add_argument("--scale", type=int, default=1, help="row-count multiplier (default 1, about 1,500 rows)")
        parser.add_argument("--seed", type=int, default=8, help="random seed (default 8)")

    def handle(self, *args, scale, seed, **options):
        if scale < 1:
            raise CommandError("--scale must be 1 or more")
        if User.objects.exists():
            raise CommandError("the database already holds sample data; seed an empty, migrated database")
        rnd = random.Random(seed)
        with transaction.atomic():
            counts = self._fill(rnd, scale)
        total = sum(counts.values())
        self.stdout.write(f"seeded {total} rows in {len(counts)} models (scale {scale})")

    def _text(self, rnd, n=3):
        return " ".join(rnd.choice(WORDS) for _ in range(n))

    def _when(self, rnd):
        return EPOCH + dt.timedelta(minutes=rnd.randrange(0, 60 * 24 * 365))

    def _fill(self, rnd, scale):
        accounts = [Account.objects.create(name=f"Account {i} {self._text(rnd, 1)}", slug=f"account-{i}") for i in range(3 * scale)]
        group = Group.objects.create(name="Editors")
        perms = list(Permission.objects.filter(content_type__app_label__in=["writer", "planner"]).order_by("id"))
        group.permissions.set(perms[::2])
        users = []
        for i in range(8 * scale):
            user = User.objects.create(
                username=f"user{i}",
                first_name=self._text(rnd, 1),
                last_name="Ñúñez" if i % 3 == 0 else "",
                email=f"user{i}@example.com",
                account=accounts[i % len(accounts)] if i % 4 else None,
                password="pbkdf2_sha256$1$salt$notarealhash",
                is_staff=i % 2 == 0,
            )
            user.user_permissions.set(rnd.sample(perms, 3))
            if i % 2:
                user.groups.add(group)
            users.append(user)
        clusters = [Cluster.objects.create(account=rnd.choice(accounts), name=self._text(rnd), description=self._text(rnd, 8)) for _ in range(10 * scale)]
        keywords = [
            Keyword.objects.create(
                cluster=rnd.choice(clusters) if rnd.random() > 0.1 else None,
                phrase=self._text(rnd, 2),
                volume=rnd.randrange(0, 10000) if rnd.random() > 0.2 else None,
                difficulty=round(rnd.random() * 100, 2) if rnd.random() > 0.3 else None,
                owner=rnd.choice(users) if rnd.random() > 0.5 else None,
            )
            for _ in range(60 * scale)
        ]
        ideas = [ContentIdea.objects.create(cluster=rnd.choice(clusters), title=self._text(rnd), outline={"h2": [self._text(rnd, 2)], "n": i} if i % 3 else None) for i in range(20 * scale)]
        tasks = [Task.objects.create(cluster=rnd.choice(clusters), title=self._text(rnd), status=rnd.choice(["queued", "done", "failed"]), assignee=rnd.choice(users + [None])) for _ in range(30 * scale)]
        contents = [
            Content.objects.create(
                task=task if i % 5 else None,
                title=self._text(rnd),
                body=self._text(rnd, 40),
                meta={"tags": [self._text(rnd, 1)], "score": rnd.random(), "nested": {"ok": i % 2 == 0, "none": None}},
                published_at=self._when(rnd) if i % 4 else None,
                word_count=rnd.randrange(100, 3000),
            )
            for i, task in enumerate(tasks)
        ]
        blueprints = [SiteBlueprint.objects.create(account=rnd.choice(accounts), name=self._text(rnd, 2), structure={"pages": i, "theme": self._text(rnd, 1)}) for i in range(6 * scale)]
        pages = [PageBlueprint.objects.create(site=rnd.choice(blueprints), slug=f"page-{i}", title=self._text(rnd), order=i, content=rnd.choice(contents + [None])) for i in range(25 * scale)]
        links = [SiteBlueprintCluster.objects.create(site=rnd.choice(blueprints), cluster=rnd.choice(clusters)) for _ in range(12 * scale)]
        taxonomies = [SiteBlueprintTaxonomy.objects.create(site=rnd.choice(blueprints), name=self._text(rnd, 1), kind=rnd.choice(["category", "tag"])) for _ in range(12 * scale)]
        optimizations = [OptimizationTask.objects.create(content=rnd.choice(contents), score_before=rnd.random() if i % 3 else None, score_after=rnd.random(), notes=self._text(rnd, 5)) for i in range(15 * scale)]
        publications = [PublishingRecord.objects.create(content=rnd.choice(contents), site=rnd.choice(blueprints + [None]), channel=rnd.choice(["wordpress", "shopify"]), external_id=str(rnd.randrange(10**9)) if i % 2 else None) for i in range(15 * scale)]
        integrations = [SiteIntegration.objects.create(site=rnd.choice(blueprints), platform="wordpress", config={"url": f"https://site{i}.example", "secret_ref": None}) for i in range(5 * scale)]
        plans = [Plan.objects.create(name=name, monthly_credits=c, price=p) for name, c, p in [("Free", 100, "0.00"), ("Pro", 5000, "49.90"), ("Ünlimited", 999999, "499.00")]]
        credits = [CreditTransaction.objects.create(account=rnd.choice(accounts), user=rnd.choice(users + [None]), amount=rnd.randrange(-500, 500), reason=self._text(rnd, 2), created_at=self._when(rnd)) for _ in range(40 * scale)]
        rules = [AutomationRule.objects.create(account=rnd.choice(accounts), name=self._text(rnd, 2), trigger=rnd.choice(["cron", "webhook"]), config={"every": rnd.randrange(1, 60)}) for _ in range(5 * scale)]
        runs = [AutomationRun.objects.create(rule=rnd.choice(rules), started_at=self._when(rnd), finished_at=self._when(rnd) if i % 3 else None, log=self._text(rnd, 6)) for i in range(20 * scale)]
        prompts = [AIPrompt.objects.create(name=f"prompt {i}", template="Write about {{topic}} in " + self._text(rnd, 1), account=rnd.choice(accounts + [None])) for i in range(4 * scale)]
        Setting.objects.create(key="feature.flags", value={"beta": True, "langs": ["en", "de"]})
        Setting.objects.create(key="nullable", value=None)

        # Deleted rows: id gaps, and sequences left above max(id).
        for i, kw in enumerate(keywords):
            if i % 7 == 0 or i >= len(keywords) - 3:
                kw.delete()
        for run in runs[-2:]:
            run.delete()
        credits[-1].delete()

        admin_user = users[0]
        for obj, flag in [(contents[0], ADDITION), (blueprints[0], CHANGE), (rules[0], CHANGE), (users[1], CHANGE), (ideas[0], ADDITION)]:
            LogEntry.objects.create(
                user=admin_user,
                content_type=ContentType.objects.get_for_model(obj),
                object_id=str(obj.pk),
                object_repr=str(obj)[:200],
                action_flag=flag,
                change_message=json.dumps([{"changed": {"fields": ["title"]}}]),
            )

        # The removed WorkflowState model has no class any more: its rows go in by SQL.
        table = connection.ops.quote_name("igny8_site_blueprint_workflow_states")
        with connection.cursor() as cursor:
            for i in range(10 * scale):
                cursor.execute(
                    f"INSERT INTO {table} (site_id, step, state, updated_at) VALUES (%s, %s, %s, %s)",
                    [rnd.choice(blueprints).pk, rnd.choice(["draft", "review", "live"]), json.dumps({"i": i, "who": self._text(rnd, 1)}), self._when(rnd)],
                )
        # The retired LegacyFlag model has no class either; a full-text index of the prompts on
        # SQLite; and cache entries in the database cache.
        with connection.cursor() as cursor:
            for i in range(4 * scale):
                cursor.execute("INSERT INTO system_legacyflag (name, enabled) VALUES (%s, %s)", [f"flag {i} {self._text(rnd, 1)}", i % 2 == 0])
            if connection.vendor == "sqlite":
                cursor.execute("INSERT INTO system_prompt_fts (rowid, name, template) SELECT id, name, template FROM system_aiprompt")
        from django.core.cache import cache

        for i in range(3):
            cache.set(f"igny8:report:{i}", {"rows": i, "text": self._text(rnd, 2)}, timeout=None)
        made = [accounts, users, clusters, keywords, ideas, tasks, contents, blueprints, pages, links, taxonomies, optimizations, publications, integrations, plans, credits, rules, runs, prompts]
        return {i: len(rows) for i, rows in enumerate(made)}
