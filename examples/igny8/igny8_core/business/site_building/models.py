from django.db import models


class SiteBlueprint(models.Model):
    account = models.ForeignKey("igny8_core_auth.Account", on_delete=models.CASCADE, related_name="blueprints")
    name = models.CharField(max_length=200)
    structure = models.JSONField(default=dict)
    status = models.CharField(max_length=20, default="draft")


class PageBlueprint(models.Model):
    site = models.ForeignKey(SiteBlueprint, on_delete=models.CASCADE, related_name="pages")
    slug = models.SlugField()
    title = models.CharField(max_length=200)
    order = models.IntegerField(default=0)
    content = models.ForeignKey("writer.Content", null=True, blank=True, on_delete=models.SET_NULL)


class SiteBlueprintCluster(models.Model):
    site = models.ForeignKey(SiteBlueprint, on_delete=models.CASCADE, related_name="cluster_links")
    cluster = models.ForeignKey("planner.Cluster", on_delete=models.CASCADE)
    role = models.CharField(max_length=20, default="hub")


class SiteBlueprintTaxonomy(models.Model):
    site = models.ForeignKey(SiteBlueprint, on_delete=models.CASCADE, related_name="taxonomies")
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=20)


# WorkflowState was removed from the code, but migration 0003 still creates it.
