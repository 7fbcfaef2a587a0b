from django.apps import AppConfig


class PlannerConfig(AppConfig):
    name = "igny8_core.modules.planner"
    label = "planner"
    default_auto_field = "django.db.models.BigAutoField"
