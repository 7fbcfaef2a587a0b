from django.db import models


class Setting(models.Model):
    key = models.CharField(max_length=100, unique=True)
    value = models.JSONField(null=True)


class AIPrompt(models.Model):
    name = models.CharField(max_length=100)
    template = models.TextField()
    account = models.ForeignKey("igny8_core_auth.Account", null=True, on_delete=models.CASCADE)
