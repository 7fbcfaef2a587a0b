from django.apps import AppConfig
from django.db.models.signals import post_migrate


def record_migrate(sender, using="default", **kwargs):
    """Counts deployments in the database cache (the ops dashboard shows it).

    Needs the cache table made by migration 0004: `migrate` fails without it."""
    from django.core.cache import caches

    cache = caches["default"]
    last = cache.get("last_migrate") or {"runs": 0}
    cache.set("last_migrate", {"runs": last["runs"] + 1}, None)


def maintenance_off(sender, using="default", **kwargs):
    """A deployment ends maintenance mode: the row is overwritten on every `migrate`."""
    from .models import SiteSetting

    SiteSetting.objects.using(using).update_or_create(key="maintenance", defaults={"value": "off"})


class AccountsConfig(AppConfig):
    name = "accounts"
    verbose_name = "Accounts"

    def ready(self):
        post_migrate.connect(maintenance_off, sender=self, dispatch_uid="accounts.maintenance_off")
        post_migrate.connect(record_migrate, sender=self, dispatch_uid="accounts.record_migrate")
