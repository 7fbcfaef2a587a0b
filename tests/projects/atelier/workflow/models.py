from django.conf import settings
from django.db import models
from django.utils import timezone


class WorkflowStage(models.Model):
    name = models.CharField(max_length=60, unique=True)
    position = models.PositiveIntegerField(default=0)
    is_terminal = models.BooleanField(default=False)
    color = models.CharField(max_length=7, default="#9e9e9e")

    def __str__(self):
        return self.name


class Task(models.Model):
    title = models.CharField(max_length=200)
    product = models.ForeignKey("catalog.Product", null=True, blank=True, on_delete=models.SET_NULL, related_name="tasks")
    stage = models.ForeignKey(WorkflowStage, on_delete=models.PROTECT, related_name="tasks")
    assignee = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                 related_name="tasks")
    priority = models.PositiveSmallIntegerField(default=3)
    notes = models.TextField(blank=True)
    due_at = models.DateTimeField(null=True, blank=True)
    payload = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self):
        return self.title


class StageTally(models.Model):
    """How many tasks each stage holds; kept by a database trigger on PostgreSQL (migration 0005)."""

    stage = models.OneToOneField(WorkflowStage, on_delete=models.CASCADE, related_name="tally")
    task_count = models.IntegerField(default=0)
