"""Deterministic, realistic data in every table of the atelier project.

`manage.py fill_atelier --rows N` (run once, after `migrate`): users, groups and permissions,
teams and members, categories, products (some deleted, so ids have gaps), images, tasks (the
PostgreSQL trigger keeps the tallies; on SQLite they are computed here), search entries (the
post_save signal fills SQLite's full-text index), saved queries, settings, cache entries, admin
log entries, sessions, and the retired LegacyThing table through raw SQL. Unicode text, NULLs,
JSON, decimals and datetimes with microseconds throughout.
"""
import random
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.contrib.auth.models import Group, Permission, User
from django.contrib.contenttypes.models import ContentType
from django.contrib.sessions.models import Session
from django.core.cache import cache
from django.core.management.base import BaseCommand
from django.db import connection, transaction

from accounts.models import Member, SiteSetting, Team
from catalog.models import Category, Product, ProductImage
from search.models import SavedQuery, SearchEntry
from workflow.models import StageTally, Task, WorkflowStage

EPOCH = datetime(2024, 1, 15, 9, 30, 0, 125000, tzinfo=timezone.utc)
FIRST = ["Zoë", "Ærø", "Łukasz", "Søren", "Amélie", "Ngozi", "Björk", "Chloé", "Dmitrï", "Ōta", "Renée", "Ana"]
LAST = ["Müller", "O'Brien", "García-López", "Nguyễn", "Šťastný", "Ødegård", "渡辺", "Kowalczyk", "Dubois", "Smith"]
WORDS = ["linen", "tea towel", "mug", "stoneware", "risograph", "notebook", "merino", "scarf", "ceramic",
         "bowl", "poster", "indigo", "hand-dyed", "Bouclé", "crème", "naïve", "façade", "smørrebrød",
         "東京", "Ελληνικά", "مرحبا", "🧶", "☕", "\"quoted\"", "back\\slash", "50% off", "tab\tseparated"]
STAGES = [("Review", 1, False, "#ffb300"), ("Approved", 2, False, "#43a047"), ("Published", 3, True, "#1e88e5")]


class Command(BaseCommand):
    help = "Fill every table of the atelier project with deterministic realistic data."

    def add_arguments(self, parser):
        parser.add_argument("--rows", type=int, default=60, help="about how many products and tasks (default 60)")

    def handle(self, *args, rows, **options):
        rng = random.Random(20241115)
        with transaction.atomic():
            self.fill(rng, max(rows, 10))
        self.stdout.write(self.style.SUCCESS(f"atelier filled ({rows} rows per main table)"))

    def at(self, minutes):
        return EPOCH + timedelta(minutes=minutes, microseconds=minutes * 7919 % 1000000)

    def text(self, rng, n):
        return " ".join(rng.choice(WORDS) for _ in range(n))

    def fill(self, rng, rows):
        users = self.users(rng, max(8, rows // 6))
        teams = self.teams()
        categories = self.categories(rng, rows)
        products = self.products(rng, rows, categories, teams)
        self.members(rng, users, teams, products)
        self.images(rng, products)
        self.legacy_things(rng, rows, categories)
        self.tasks(rng, rows, users, products)
        self.search(rng, rows, users, products)
        self.permissions(users)
        self.settings_and_cache(products)
        self.admin_log(users, products)
        self.sessions(users)

    def users(self, rng, count):
        users = []
        for i in range(count):
            user = User.objects.create(
                username=f"{FIRST[i % len(FIRST)].lower()}.{i}",
                email=f"user{i}@atelier.example" if i % 5 else "",
                first_name=FIRST[i % len(FIRST)], last_name=LAST[i % len(LAST)],
                password=f"pbkdf2_sha256$1000000$atelierSalt{i:03d}$" + "A" * 43 + "=",
                is_staff=i < 3, is_superuser=i == 0, is_active=i % 9 != 8,
                date_joined=self.at(i * 97), last_login=None if i % 4 == 3 else self.at(i * 97 + 5000),
            )
            users.append(user)
        return users

    def teams(self):
        names = [("Studio Nord", "studio-nord"), ("Équipe Créa", "equipe-crea"), ("Warehouse", "warehouse"),
                 ("Ops & Support", "ops-support"), ("Temp team", "temp-team")]
        teams = [Team.objects.create(name=n, slug=s, created_at=self.at(i * 11)) for i, (n, s) in enumerate(names)]
        teams.pop().delete()  # a gap in the ids
        return teams

    def categories(self, rng, rows):
        parents = list(Category.objects.filter(parent__isnull=True).order_by("id"))  # seeded from the CSV
        for i in range(max(3, rows // 15)):
            Category.objects.create(code=f"sub-{i:02d}", name=f"{self.text(rng, 2).title()} ({i})",
                                    parent=parents[i % len(parents)], position=10 + i, is_active=i % 4 != 3)
        Category.objects.filter(code="gift").update(is_active=False, name="Gift cards (paused)")
        return list(Category.objects.order_by("id"))

    def products(self, rng, rows, categories, teams):
        products = []
        for i in range(rows):
            products.append(Product.objects.create(
                sku=f"AT-{i:04d}", name=f"{self.text(rng, 3)} #{i}"[:120],
                category=categories[rng.randrange(len(categories))],
                price=Decimal(rng.randrange(100, 2500000)) / 100 if i else Decimal("99999999.99"),
                weight_grams=None if i % 6 == 0 else rng.randrange(20, 4000),
                attributes={} if i % 8 == 0 else {"colour": rng.choice(["ecru", "indigo", "rouge", None]),
                                                   "sizes": [rng.choice("SML") for _ in range(rng.randrange(1, 4))],
                                                   "care": {"wash": rng.choice([30, 40]), "note": self.text(rng, 2)}},
                owner_team=None if i % 5 == 0 else teams[i % len(teams)],
                status=["active", "draft", "retired"][i % 3],
                released_on=None if i % 4 == 0 else date(2023, 1, 1) + timedelta(days=i * 3),
                created_at=self.at(1000 + i * 13),
            ))
        doomed = [p.pk for p in products if p.pk % 7 == 0]
        Product.objects.filter(pk__in=doomed).delete()
        return [p for p in products if p.pk not in doomed]

    def members(self, rng, users, teams, products):
        for i, user in enumerate(users):
            if i % 6 == 5:
                continue  # not every user has a member profile
            Member.objects.create(
                user=user, team=None if i % 4 == 0 else teams[i % len(teams)],
                display_name=f"{user.first_name} {user.last_name}", bio="" if i % 3 else f"Aime le {self.text(rng, 4)}\nLigne 2",
                preferences={} if i % 2 else {"theme": rng.choice(["dark", "light"]), "digest": None, "langs": ["fr", "en"]},
                favourite_product=None if i % 3 == 0 else products[i % len(products)],
            )

    def images(self, rng, products):
        for product in products:
            for position in range(product.pk % 3):
                ProductImage.objects.create(product=product, url=f"https://cdn.atelier.example/p/{product.sku}/{position}.jpg",
                                            alt_text="" if position else f"{product.name[:150]} – vue {position}",
                                            position=position)
        ProductImage.objects.filter(pk__in=list(ProductImage.objects.order_by("id").values_list("id", flat=True)[::5])).delete()

    def legacy_things(self, rng, rows, categories):
        """The retired model's table through raw SQL: its class is gone from models.py."""
        adapt = connection.ops.adapt_datetimefield_value
        with connection.cursor() as cursor:
            for i in range(max(5, rows // 3)):
                cursor.execute("INSERT INTO catalog_legacything (name, payload, created_at, category_id) VALUES (%s, %s, %s, %s)",
                               [f"legacy import {i} – {self.text(rng, 2)}", "" if i % 3 else '{"v": 1, "raw": "ÄÖÜ"}',
                                adapt(self.at(-5000 + i)), None if i % 4 == 0 else categories[i % len(categories)].pk])
            cursor.execute("DELETE FROM catalog_legacything WHERE id IN (2, 5)")

    def tasks(self, rng, rows, users, products):
        stages = [WorkflowStage.objects.get(name="Draft")]
        stages += [WorkflowStage.objects.create(name=n, position=p, is_terminal=t, color=c) for n, p, t, c in STAGES]
        tasks = []
        for i in range(rows):
            tasks.append(Task.objects.create(
                title=f"Shoot {self.text(rng, 2)} ({i})", product=None if i % 7 == 3 else products[i % len(products)],
                stage=stages[i % len(stages)], assignee=None if i % 5 == 0 else users[i % len(users)],
                priority=1 + i % 5, notes="" if i % 2 else f"{self.text(rng, 6)}\n– {FIRST[i % len(FIRST)]}",
                due_at=None if i % 3 == 0 else self.at(20000 + i * 60),
                payload=None if i % 4 == 0 else {"checklist": [{"done": bool(i % 2), "item": self.text(rng, 2)}], "ref": i, "x": None},
                created_at=self.at(3000 + i * 17),
            ))
        Task.objects.filter(pk__in=[t.pk for t in tasks if t.pk % 6 == 0]).delete()
        Task.objects.filter(pk__in=[t.pk for t in tasks if t.pk % 11 == 1]).update(stage=stages[2])
        if connection.vendor != "postgresql":  # PostgreSQL's trigger keeps them; here the application does
            for stage in stages:
                StageTally.objects.update_or_create(stage=stage, defaults={"task_count": stage.tasks.count()})

    def search(self, rng, rows, users, products):
        entries = []
        for i, product in enumerate(products):
            entries.append(SearchEntry.objects.create(
                title=product.name, body=f"{self.text(rng, 8)}\n{product.sku}", product=product,
                language=["en", "fr", "de", "ja"][i % 4], weight=round(0.5 + (i % 5) * 0.25, 2),
                indexed_at=None if i % 5 == 0 else self.at(40000 + i)))
        entries.append(SearchEntry.objects.create(title="À propos de l’atelier", body="Notre histoire 🧵", language="fr"))
        for entry in entries[::9]:
            entry.title += " (mis à jour)"
            entry.save()  # the index follows (post_save)
        for entry in entries[4::10]:
            entry.delete()  # and forgets (post_delete)
        for i in range(max(4, rows // 4)):
            SavedQuery.objects.create(user=None if i % 3 == 0 else users[i % len(users)], text=self.text(rng, 2),
                                      filters={} if i % 2 else {"category": ["home", "wear"][i % 2], "max_price": 50.5 + i},
                                      created_at=self.at(50000 + i * 31))

    def permissions(self, users):
        editors = Group.objects.get(name="editors")  # made by catalog's post_migrate handler
        # Editors may no longer delete catalog objects (an administrator's decision).
        editors.permissions.remove(*Permission.objects.filter(content_type__app_label="catalog", codename__startswith="delete_"))
        reviewers = Group.objects.create(name="reviewers")
        reviewers.permissions.add(*Permission.objects.filter(codename__startswith="view_").order_by("id")[:12])
        for i, user in enumerate(users):
            if i % 2:
                user.groups.add(editors)
            if i % 3 == 0:
                user.groups.add(reviewers)
        users[1].user_permissions.add(*Permission.objects.filter(content_type__app_label="workflow").order_by("id")[:3])
        users[2].user_permissions.add(Permission.objects.get(codename="change_sitesetting"))

    def settings_and_cache(self, products):
        SiteSetting.objects.filter(key="maintenance").update(value="on", updated_at=self.at(60000))  # maintenance during the reset
        SiteSetting.objects.create(key="banner", value="Soldes d’été ☀ – jusqu’à −30 %", updated_at=self.at(60001))
        SiteSetting.objects.create(key="analytics_id", value="")
        SiteSetting.objects.filter(key="support_email").delete()
        cache.set("catalog:featured", [p.pk for p in products[:6]], None)
        cache.set("ops:banner", "Soldes d’été ☀", None)
        cache.set("search:top", {"queries": ["lin", "東京", "mug"], "at": self.at(61000)}, None)

    def admin_log(self, users, products):
        product_type = ContentType.objects.get_for_model(Product)
        user_type = ContentType.objects.get_for_model(User)
        for i, product in enumerate(products[:8]):
            LogEntry.objects.create(user=users[i % 3], content_type=product_type, object_id=str(product.pk),
                                    object_repr=product.name[:200], action_flag=[ADDITION, CHANGE][i % 2],
                                    change_message="[]" if i % 2 == 0 else '[{"changed": {"fields": ["Price"]}}]',
                                    action_time=self.at(70000 + i))
        LogEntry.objects.create(user=users[0], content_type=user_type, object_id="999", object_repr="ancien compte",
                                action_flag=DELETION, change_message="", action_time=self.at(70100))

    def sessions(self, users):
        for i in range(3):
            Session.objects.create(session_key=f"atelier{i:02d}" + "k" * 24, session_data=f"e30:atelier-session-{i}",
                                   expire_date=datetime(2031, 1, 1 + i, 12, 0, tzinfo=timezone.utc))
