from django.apps import AppConfig


class Igny8CoreAuthConfig(AppConfig):
    name = "igny8_core.auth"
    label = "igny8_core_auth"
    default_auto_field = "django.db.models.BigAutoField"
