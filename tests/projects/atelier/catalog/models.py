from django.db import models
from django.utils import timezone


class Category(models.Model):
    code = models.CharField(max_length=20, unique=True)
    name = models.CharField(max_length=120)
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="children")
    position = models.PositiveIntegerField(default=0)
    is_active = models.BooleanField(default=True)

    class Meta:
        verbose_name_plural = "categories"

    def __str__(self):
        return self.name


class Product(models.Model):
    STATUS_CHOICES = [("active", "Active"), ("draft", "Draft"), ("retired", "Retired")]

    sku = models.CharField(max_length=32, unique=True)
    name = models.CharField(max_length=120)
    category = models.ForeignKey(Category, on_delete=models.PROTECT, related_name="products")
    price = models.DecimalField(max_digits=10, decimal_places=2)
    weight_grams = models.IntegerField(null=True, blank=True)
    attributes = models.JSONField(default=dict, blank=True)
    owner_team = models.ForeignKey("accounts.Team", null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="products")
    status = models.CharField(max_length=12, choices=STATUS_CHOICES, default="active")
    released_on = models.DateField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self):
        return self.name


class ProductImage(models.Model):
    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="images")
    url = models.URLField(max_length=300)
    alt_text = models.CharField(max_length=200, blank=True)
    position = models.PositiveSmallIntegerField(default=0)

    def __str__(self):
        return self.url
