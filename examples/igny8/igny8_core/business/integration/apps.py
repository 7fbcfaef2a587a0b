from django.apps import AppConfig


class IntegrationConfig(AppConfig):
    name = "igny8_core.business.integration"
    label = "integration"
    default_auto_field = "django.db.models.BigAutoField"
