from django.contrib.auth.models import AbstractUser
from django.db import models


class Account(models.Model):
    name = models.CharField(max_length=200)
    slug = models.SlugField(unique=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return self.name


class User(AbstractUser):
    account = models.ForeignKey(Account, null=True, blank=True, on_delete=models.SET_NULL, related_name="users")
    role = models.CharField(max_length=20, default="member")
    timezone = models.CharField(max_length=64, default="UTC")
