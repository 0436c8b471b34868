import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backupsite.settings")
application = get_wsgi_application()

from core.secrets import require_keys  # noqa: E402  (needs the settings configured above)

require_keys()
