"""Settings for the backup service, all taken from the environment with safe defaults.

With nothing set the service runs on SQLite, the django-q2 ORM broker and secrets kept in
DATA_DIR (./var). DATABASE_URL selects PostgreSQL, REDIS_URL the Redis broker.

Reading the settings changes nothing: the secret keys are created by the first-start step
(`manage.py init_secrets`, which `make run` and `make test` call), and a process that needs a
missing key stops with a message saying so (core.secrets).
"""

import socket
from pathlib import Path

from core.env import database_from_url, env_bool, env_int, env_list, env_path, env_str, read_secret

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = env_path("DATA_DIR", BASE_DIR / "var")

SECRET_KEY = env_str("SECRET_KEY") or read_secret(DATA_DIR / "secret_key")
# Fernet key for credentials stored in the database (engine passwords, SSH keys).
CREDENTIALS_KEY = env_str("CREDENTIALS_KEY") or read_secret(DATA_DIR / "credentials.key")

DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
SITE_NAME = env_str("SITE_NAME", "oVirt Backup")
NODE_NAME = env_str("NODE_NAME", socket.gethostname())

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_q",
    # The apps, lowest layer first (docs/architecture.md).
    "core",
    "jobs",
    "inventory",
    "repository",
    "strategies",
    "recovery",
    "policies",
    "dashboard",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "backupsite.urls"
WSGI_APPLICATION = "backupsite.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "core.roles.context_processor",
            ],
        },
    },
]

DATABASES = {"default": database_from_url(env_str("DATABASE_URL"), sqlite_path=DATA_DIR / "db.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
# Served straight from the source folders (no collectstatic, so no STATIC_ROOT to create).
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["core.roles.RolePermission"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": env_int("API_PAGE_SIZE", 50),
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.SearchFilter",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_SCHEMA_CLASS": "core.api.AutoSchema",
    "EXCEPTION_HANDLER": "core.api.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": f"{SITE_NAME} API",
    "DESCRIPTION": "Backup and recovery for oVirt, RHV and OLVM virtual machines.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI's assets come from the sidecar package: no CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
}

# Backup destinations must lie under one of these directories (links and `..` resolved first).
BACKUP_ROOTS = env_list("BACKUP_ROOTS", ["/var/lib/ovirt-backup", "/srv", "/mnt", "/backup"])

# A running job beats at least every few seconds; one silent this long lost its worker.
JOB_HEARTBEAT_TIMEOUT = env_int("JOB_HEARTBEAT_TIMEOUT", 300)
# Backups and restores running at once: per engine, per hypervisor host, per storage domain.
# Per worker node the limit is WORKERS (django-q2 processes).
MAX_JOBS_PER_MANAGER = env_int("MAX_JOBS_PER_MANAGER", 6)
MAX_JOBS_PER_HOST = env_int("MAX_JOBS_PER_HOST", 3)
MAX_JOBS_PER_STORAGE_DOMAIN = env_int("MAX_JOBS_PER_STORAGE_DOMAIN", 4)

REDIS_URL = env_str("REDIS_URL")
Q_CLUSTER = {
    "name": env_str("Q_CLUSTER_NAME", "backup"),
    "workers": env_int("WORKERS", 2),
    "timeout": env_int("TASK_TIMEOUT", 24 * 3600),
    "retry": env_int("TASK_TIMEOUT", 24 * 3600) + 60,
    "max_attempts": 1,
    "ack_failures": True,
    "catch_up": False,
    "label": "Tasks",
}
if REDIS_URL:
    Q_CLUSTER["redis"] = REDIS_URL
else:
    Q_CLUSTER["orm"] = "default"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
}
