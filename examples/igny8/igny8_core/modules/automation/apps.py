from django.apps import AppConfig


class AutomationConfig(AppConfig):
    name = "igny8_core.modules.automation"
    label = "automation"
    default_auto_field = "django.db.models.BigAutoField"
