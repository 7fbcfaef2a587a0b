from django.apps import AppConfig


class OptimizationConfig(AppConfig):
    name = "igny8_core.business.optimization"
    label = "optimization"
    default_auto_field = "django.db.models.BigAutoField"
