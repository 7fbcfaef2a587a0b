from django.apps import AppConfig


class SiteBuildingConfig(AppConfig):
    name = "igny8_core.business.site_building"
    label = "site_building"
    default_auto_field = "django.db.models.BigAutoField"
