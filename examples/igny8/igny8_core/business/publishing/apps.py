from django.apps import AppConfig


class PublishingConfig(AppConfig):
    name = "igny8_core.business.publishing"
    label = "publishing"
    default_auto_field = "django.db.models.BigAutoField"
