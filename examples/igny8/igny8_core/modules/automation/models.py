from django.db import models

# Two packages, one label: the run models live in igny8_core.business.automation
# but declare app_label "automation"; importing them here registers them.
from igny8_core.business.automation.models import AutomationRun  # noqa: F401


class AutomationRule(models.Model):
    account = models.ForeignKey("igny8_core_auth.Account", on_delete=models.CASCADE)
    name = models.CharField(max_length=200)
    trigger = models.CharField(max_length=50)
    config = models.JSONField(default=dict)
    enabled = models.BooleanField(default=True)
