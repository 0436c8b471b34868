import re
from datetime import timedelta

import pytest
from django.utils import timezone

from jobs.models import Job

pytestmark = pytest.mark.django_db


def test_it_says_progress_in_peoples_units_on_the_page_in_the_cli_and_in_the_api(admin_client):
    job = Job.objects.create(
        kind="backup",
        name="app01",
        status=Job.Status.RUNNING,
        started=timezone.now() - timedelta(seconds=10),
        bytes_done=2**30,
        bytes_total=4 * 2**30,
    )
    # 1 GiB in 10 s: about 102.4 MiB/s, 3 GiB left: about 30 s.
    assert job.progress_text.startswith("1.0 GiB of 4.0 GiB (25.0%), 10")
    assert job.progress_text.endswith(" s left") and "MiB/s" in job.progress_text
    assert admin_client.get(f"/api/v1/jobs/{job.pk}/").json()["progress_text"].startswith("1.0 GiB of 4.0 GiB")
    page = admin_client.get(f"/jobs/{job.pk}/").content.decode()
    # No decimal unit in the page's text (its tags' attributes left out: a random CSRF token holds "GB"
    # now and then).
    text = re.sub(r"<[^>]*>", " ", page)
    assert "1.0 GiB of 4.0 GiB (25.0%)" in text and not re.search(r"\b[KMGT]B\b", text)
    assert Job(kind="backup", name="x").progress_text == ""
