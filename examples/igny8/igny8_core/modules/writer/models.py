from django.conf import settings
from django.db import models


class Task(models.Model):
    cluster = models.ForeignKey("planner.Cluster", on_delete=models.CASCADE, related_name="tasks")
    title = models.CharField(max_length=300)
    status = models.CharField(max_length=20, default="queued")
    assignee = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)


class Content(models.Model):
    task = models.OneToOneField(Task, null=True, on_delete=models.SET_NULL, related_name="content")
    title = models.CharField(max_length=300)
    body = models.TextField()
    meta = models.JSONField(default=dict)
    published_at = models.DateTimeField(null=True)
    word_count = models.IntegerField(default=0)

    class Meta:
        indexes = [models.Index(fields=["published_at"], name="writer_content_published_idx")]
