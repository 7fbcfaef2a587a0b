from django.db import models


class OptimizationTask(models.Model):
    content = models.ForeignKey("writer.Content", on_delete=models.CASCADE, related_name="optimizations")
    score_before = models.FloatField(null=True)
    score_after = models.FloatField(null=True)
    notes = models.TextField(blank=True)
