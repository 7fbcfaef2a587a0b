from django.conf import settings
from django.db import models
from django.utils import timezone


class Team(models.Model):
    name = models.CharField(max_length=100, unique=True)
    slug = models.SlugField(max_length=100, unique=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self):
        return self.name


class Member(models.Model):
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="member")
    team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.SET_NULL, related_name="members")
    display_name = models.CharField(max_length=80)
    bio = models.TextField(blank=True)
    preferences = models.JSONField(default=dict, blank=True)
    favourite_product = models.ForeignKey("catalog.Product", null=True, blank=True, on_delete=models.SET_NULL,
                                          related_name="fans")

    def __str__(self):
        return self.display_name


class SiteSetting(models.Model):
    key = models.CharField(max_length=64, unique=True)
    value = models.CharField(max_length=500, blank=True)
    updated_at = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return self.key
