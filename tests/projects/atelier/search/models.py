from django.conf import settings
from django.db import models
from django.utils import timezone


class SearchEntry(models.Model):
    title = models.CharField(max_length=200)
    body = models.TextField(blank=True)
    product = models.ForeignKey("catalog.Product", null=True, blank=True, on_delete=models.CASCADE,
                                related_name="search_entries")
    language = models.CharField(max_length=8, default="en")
    weight = models.FloatField(default=1.0)
    indexed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "search entries"

    def __str__(self):
        return self.title


class SavedQuery(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE,
                             related_name="saved_queries")
    text = models.CharField(max_length=200)
    filters = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "saved queries"

    def __str__(self):
        return self.text
