import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backupsite.settings")
application = get_wsgi_application()

from core.secrets import require_keys  # noqa: E402  (needs the settings configured above)
from core.site import check_web_can_start  # noqa: E402

require_keys()
check_web_can_start()  # this server's keys are the site's (core.site)
