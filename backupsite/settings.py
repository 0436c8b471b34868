"""Settings for the backup service, all taken from the environment with safe defaults.

With nothing set the service runs on SQLite, the django-q2 ORM broker and secrets kept in
DATA_DIR (./var). DATABASE_URL selects PostgreSQL, REDIS_URL the Redis broker.

Reading the settings changes nothing: the secret keys are created by the first-start step
(`manage.py init_secrets`, which `make run` and `make test` call), and a process that needs a
missing key stops with a message saying so (core.secrets).
"""

import socket
from datetime import timedelta
from pathlib import Path

from core.env import (
    database_from_url,
    env_bool,
    env_choice,
    env_int,
    env_list,
    env_path,
    env_seconds,
    env_str,
    machine_uuid,
    read_secret,
)

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
# The oVirt id of the VM this node runs in (a proxy VM's node): its SMBIOS UUID unless set.
NODE_VM_ID = env_str("NODE_VM_ID") or machine_uuid()

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "axes",
    "rest_framework",
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
    "alerts",
    "dashboard",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "core.middleware.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it turns a refused login into the locked-out page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "backupsite.urls"
WSGI_APPLICATION = "backupsite.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            # The formatting layer's filters (|iec, |duration, |when, |ago, |plural, |label) in every template.
            "builtins": ["core.templatetags.formats"],
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "core.roles.context_processor",
                "jobs.broker.context_processor",  # the banner when the task broker does not answer
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
AUTHENTICATION_BACKENDS = [
    # Refuses a login while its account or address is locked, before the password is checked.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "login"

# Alerts by e-mail (Django's mail settings).
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 30)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "ovirt-backup@localhost")
# Alert webhooks may not call loopback, private, link-local and other non-public addresses, except
# these networks (CIDRs or single addresses) and host names, which an admin allows here.
ALERT_WEBHOOK_ALLOW = env_list("ALERT_WEBHOOK_ALLOW", [])
# The change-rate alert (alerts.change_rate) ignores a VM writing less than this many MiB an hour,
# however far above its usual: a tiny VM going from 1 to 10 MiB is no news.
ALERT_CHANGE_RATE_FLOOR = env_int("ALERT_CHANGE_RATE_FLOOR_MIB", 64) * 2**20

# The engine client's retry schedule (ovirt.polling): the seconds before each further try of a request
# the engine refused as busy (409) or failed to answer (5xx). Five more tries over about half a minute,
# as long as an engine takes to restart behind its web server; the test suite shortens it.
ENGINE_RETRY_DELAYS = env_seconds("ENGINE_RETRY_DELAYS", (1.0, 2.0, 4.0, 8.0, 16.0))

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
# Served straight from the source folders (no collectstatic, so no STATIC_ROOT to create).
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

# Failed logins (our login page and the Django admin's): after LOGIN_FAILURE_LIMIT failures for one
# user name, or from one address, logins there are refused until LOGIN_COOLOFF_MINUTES have passed
# since the last attempt. `manage.py axes_reset` unlocks everything at once.
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("LOGIN_COOLOFF_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
# Not axes' reset, which forgets every failure of the name or of the address: anyone able to log in
# would reset the count against another account (core.logins.forget_own_failures instead).
AXES_RESET_ON_SUCCESS = False
AXES_VERBOSE = False  # its start-up banner on every command
# The log names the user name and address it locks (passwords are always masked): the attempts
# table holds them anyway, and whoever reads the log needs them to act.
AXES_SENSITIVE_PARAMETERS = []
AXES_LOCKOUT_CALLABLE = "core.logins.locked_out"
AXES_CLIENT_IP_CALLABLE = "core.logins.client_address"

# Behind a reverse proxy that terminates TLS: trust its X-Forwarded-Proto, and count failed logins
# against the client address it adds to X-Forwarded-For. Only when the proxy is the sole way in.
BEHIND_PROXY = env_bool("BEHIND_PROXY", False)
if BEHIND_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# HTTPS (see the README's "Production"): redirect plain HTTP, and tell browsers to use nothing else.
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
# Every page, the Django admin's and Swagger UI's included, uses only same-origin static files:
# no inline script or style, no CDN. (data: images are Swagger UI's and the admin's icons.)
CONTENT_SECURITY_POLICY = env_str(
    "CONTENT_SECURITY_POLICY",
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'self'; "
    "form-action 'self'; frame-ancestors 'none'",
)

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE

# API tokens last this many days unless their maker says otherwise (0: they do not expire).
API_TOKEN_DAYS = env_int("API_TOKEN_DAYS", 90)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "core.tokens.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["core.roles.RolePermission"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": env_int("API_PAGE_SIZE", 50),
    "DEFAULT_FILTER_BACKENDS": [
        "core.filters.KnownQueryParams",  # first: an unknown parameter is refused before any filtering
        "django_filters.rest_framework.DjangoFilterBackend",
        "core.filters.SearchFilter",
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
# A worker node beats every NODE_HEARTBEAT seconds; one silent NODE_LOST_AFTER seconds is lost (its
# running jobs are failed and what they made on the engine is undone by another node).
NODE_HEARTBEAT = env_int("NODE_HEARTBEAT", 10)
NODE_LOST_AFTER = env_int("NODE_LOST_AFTER", 60)
# The oVirt clusters (names) whose VMs this node backs up and restores; empty: every cluster.
NODE_CLUSTERS = env_list("NODE_CLUSTERS", [])
# Backups and restores running at once: per engine, per hypervisor host, per storage domain.
# Per worker node the limit is WORKERS (django-q2 processes).
MAX_JOBS_PER_MANAGER = env_int("MAX_JOBS_PER_MANAGER", 6)
MAX_JOBS_PER_HOST = env_int("MAX_JOBS_PER_HOST", 3)
# How long a disk attached to a proxy VM may take to appear as a device in its guest (hot-plug, udev).
PROXY_DEVICE_TIMEOUT = env_int("PROXY_DEVICE_TIMEOUT", 60)
# The staging share this node serves over NFS for export storage domains: one directory per data
# center (STAGING/DC_NAME), which the engine's export domain of that data center is created on.
EXPORT_STAGING_DIR = env_path("EXPORT_STAGING_DIR", DATA_DIR / "staging")
MAX_JOBS_PER_STORAGE_DOMAIN = env_int("MAX_JOBS_PER_STORAGE_DOMAIN", 4)

# The shares this node serves to the hypervisors over NFS (jobs.nfs): the export storage domain's
# staging share, an instant restore's domain. NFS-Ganesha run by the node, the site's own NFS server
# through its commands (argument lists, no shell, with {path} {clients} {options} filled in), or none.
NFS_EXPORTER = env_choice("NFS_EXPORTER", "ganesha", ("ganesha", "command", "off"))
NFS_ADDRESS = env_str("NFS_ADDRESS") or socket.gethostname()  # where the hosts reach this node's shares
NFS_BIND = env_str("NFS_BIND")  # the address Ganesha listens on; empty: every address
NFS_PORT = env_int("NFS_PORT", 2049)  # Ganesha's port (NFSv4); 0: a free port at each start
# A network namespace's file (`nsenter --net=PATH`) Ganesha serves in, NFSv3 and v4: the simulated
# engine's hosts' storage network (its engine.json's storage_netns); empty: where the node runs.
NFS_NETNS = env_str("NFS_NETNS")
NFS_EXPORT_COMMAND = env_str("NFS_EXPORT_COMMAND")
NFS_UNEXPORT_COMMAND = env_str("NFS_UNEXPORT_COMMAND")
# Addresses allowed to mount an instant restore's share besides the cluster's hosts (the addresses
# the hosts reach this node from, where those are not their own).
NFS_CLIENTS = env_list("NFS_CLIENTS", [])

# Restore proofs (recovery.instant): how long a booted point's guest agent is waited for, when the
# VM had one.
PROOF_AGENT_TIMEOUT = env_int("PROOF_AGENT_TIMEOUT", 300)
# How long an instant restore's VM is waited for until up, once started.
INSTANT_UP_TIMEOUT = env_int("INSTANT_UP_TIMEOUT", 600)

# File-level restore (recovery.files): the points this node holds open for browsing, each in its
# own directory (mounts, the chain's qemu-storage-daemon); a session nobody uses for the idle timeout
# is closed by the node's worker, at most this many are open on a node at once.
FILES_DIR = env_path("FILES_DIR", DATA_DIR / "file-sessions")
FILES_IDLE_TIMEOUT = env_int("FILES_IDLE_TIMEOUT", 900)
FILES_SESSIONS_PER_NODE = env_int("FILES_SESSIONS_PER_NODE", 4)

REDIS_URL = env_str("REDIS_URL")
Q_CLUSTER = {
    "name": env_str("Q_CLUSTER_NAME", "backup"),
    "workers": env_int("WORKERS", 2),
    # Tasks a node takes ahead of its free workers; few, since the reaper must dispatch again the
    # tasks a dead node had taken.
    "queue_limit": env_int("WORKERS", 2),
    "timeout": env_int("TASK_TIMEOUT", 24 * 3600),
    "retry": env_int("TASK_TIMEOUT", 24 * 3600) + 60,
    "max_attempts": 1,
    "ack_failures": True,
    "catch_up": False,
    "label": "Tasks",
    # Each node's worker also runs a cluster named after the node (jobs.nodes), whose queue only it
    # takes; django-q2 reads this key whenever Q_CLUSTER_NAME is set, so it must exist.
    "ALT_CLUSTERS": {},
}
if REDIS_URL:
    # A broker host that drops packets must not hold every hand-over of a task for the TCP timeout
    # (minutes): five seconds to connect, unless the URL says otherwise.
    Q_CLUSTER["redis"] = (
        REDIS_URL
        if "socket_connect_timeout=" in REDIS_URL
        else REDIS_URL + ("&" if "?" in REDIS_URL else "?") + "socket_connect_timeout=5"
    )
else:
    Q_CLUSTER["orm"] = "default"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
}
