from django.db import models


class PublishingRecord(models.Model):
    content = models.ForeignKey("writer.Content", on_delete=models.CASCADE, related_name="publications")
    site = models.ForeignKey("site_building.SiteBlueprint", null=True, on_delete=models.SET_NULL)
    channel = models.CharField(max_length=50)
    external_id = models.CharField(max_length=100, null=True)
