from django.apps import AppConfig
from django.db.models.signals import post_migrate


def ensure_editors_group(sender, using="default", **kwargs):
    """The "editors" group may do everything in the catalog: missing permissions are added on
    every `migrate` (rows are added to auth_group_permissions)."""
    from django.contrib.auth.models import Group, Permission

    group, _ = Group.objects.using(using).get_or_create(name="editors")
    wanted = Permission.objects.using(using).filter(content_type__app_label="catalog").order_by("content_type__model", "codename")
    group.permissions.add(*wanted)


class CatalogConfig(AppConfig):
    name = "catalog"
    verbose_name = "Catalog"

    def ready(self):
        post_migrate.connect(ensure_editors_group, sender=self, dispatch_uid="catalog.ensure_editors_group")
