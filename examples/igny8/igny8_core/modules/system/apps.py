from django.apps import AppConfig
from django.db.models.signals import post_migrate


def remember_migrate(sender, **kwargs):
    """Like many projects: a post_migrate handler that writes to the database cache (so migrate
    fails if the cache table is missing)."""
    from django.core.cache import cache

    cache.set("igny8:migrated", "yes", timeout=None)


class SystemConfig(AppConfig):
    name = "igny8_core.modules.system"
    label = "system"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        post_migrate.connect(remember_migrate, sender=self)
