"""Settings of the igny8 sample project.

The database comes from the environment like in a real deployment:
DATABASE_URL, else DB_ENGINE/DB_NAME/DB_USER/DB_PASSWORD/DB_HOST/DB_PORT,
else a SQLite file (DB_PATH, default db.sqlite3 beside manage.py).
"""
import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("SECRET_KEY", "sample-project-not-secret")
DEBUG = False
ALLOWED_HOSTS = ["*"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "igny8_core.auth.apps.Igny8CoreAuthConfig",
    "igny8_core.modules.planner.apps.PlannerConfig",
    "igny8_core.modules.writer.apps.WriterConfig",
    "igny8_core.modules.system.apps.SystemConfig",
    "igny8_core.modules.billing.apps.BillingConfig",
    "igny8_core.modules.automation.apps.AutomationConfig",
    "igny8_core.business.site_building.apps.SiteBuildingConfig",
    "igny8_core.business.optimization.apps.OptimizationConfig",
    "igny8_core.business.publishing.apps.PublishingConfig",
    "igny8_core.business.integration.apps.IntegrationConfig",
]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

ROOT_URLCONF = "igny8_core.urls"
AUTH_USER_MODEL = "igny8_core_auth.User"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"


def _database():
    url = os.environ.get("DATABASE_URL")
    if url:
        import dj_database_url

        return dj_database_url.parse(url)
    engine = os.environ.get("DB_ENGINE")
    if engine:
        if "." not in engine:
            engine = {
                "postgres": "django.db.backends.postgresql",
                "postgresql": "django.db.backends.postgresql",
                "sqlite": "django.db.backends.sqlite3",
                "sqlite3": "django.db.backends.sqlite3",
            }.get(engine, engine)
        return {
            "ENGINE": engine,
            "NAME": os.environ.get("DB_NAME", ""),
            "USER": os.environ.get("DB_USER", ""),
            "PASSWORD": os.environ.get("DB_PASSWORD", ""),
            "HOST": os.environ.get("DB_HOST", ""),
            "PORT": os.environ.get("DB_PORT", ""),
        }
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DB_PATH", str(BASE_DIR / "db.sqlite3")),
    }


DATABASES = {"default": _database()}
# The cache lives in the database, in a table made by a data migration (system 0003).
CACHES = {"default": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "igny8_cache"}}
