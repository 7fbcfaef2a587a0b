from django.apps import AppConfig


class WriterConfig(AppConfig):
    name = "igny8_core.modules.writer"
    label = "writer"
    default_auto_field = "django.db.models.BigAutoField"
