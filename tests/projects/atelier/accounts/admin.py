from django.contrib import admin

from .models import Member, SiteSetting, Team

admin.site.register(Team)
admin.site.register(Member)
admin.site.register(SiteSetting)
