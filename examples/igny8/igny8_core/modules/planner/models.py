from django.conf import settings
from django.db import models


class Cluster(models.Model):
    account = models.ForeignKey("igny8_core_auth.Account", on_delete=models.CASCADE, related_name="clusters")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)

    def __str__(self):
        return self.name


class Keyword(models.Model):
    cluster = models.ForeignKey(Cluster, null=True, blank=True, on_delete=models.SET_NULL, related_name="keywords")
    phrase = models.CharField(max_length=300)
    volume = models.IntegerField(null=True)
    difficulty = models.DecimalField(max_digits=5, decimal_places=2, null=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)


class ContentIdea(models.Model):
    cluster = models.ForeignKey(Cluster, on_delete=models.CASCADE, related_name="ideas")
    title = models.CharField(max_length=300)
    outline = models.JSONField(null=True)
