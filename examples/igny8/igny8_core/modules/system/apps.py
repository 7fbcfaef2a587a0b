from django.apps import AppConfig


class SystemConfig(AppConfig):
    name = "igny8_core.modules.system"
    label = "system"
    default_auto_field = "django.db.models.BigAutoField"
