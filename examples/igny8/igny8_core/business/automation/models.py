"""Models of the "automation" app that live outside its package (as in the original project)."""
from django.db import models


class AutomationRun(models.Model):
    rule = models.ForeignKey("automation.AutomationRule", on_delete=models.CASCADE, related_name="runs")
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True)
    log = models.TextField(blank=True)

    class Meta:
        app_label = "automation"
