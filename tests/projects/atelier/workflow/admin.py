from django.contrib import admin

from .models import StageTally, Task, WorkflowStage

admin.site.register(WorkflowStage)
admin.site.register(Task)
admin.site.register(StageTally)
