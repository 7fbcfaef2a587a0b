from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "igny8_core.modules.billing"
    label = "billing"
    default_auto_field = "django.db.models.BigAutoField"
