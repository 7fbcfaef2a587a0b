from django.db import models


class SiteIntegration(models.Model):
    site = models.ForeignKey("site_building.SiteBlueprint", on_delete=models.CASCADE, related_name="integrations")
    platform = models.CharField(max_length=50)
    config = models.JSONField(default=dict)
    is_active = models.BooleanField(default=True)
