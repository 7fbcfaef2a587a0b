from django.contrib import admin

from .models import SavedQuery, SearchEntry

admin.site.register(SearchEntry)
admin.site.register(SavedQuery)
