"""The last restore proof of each VM (issue 24), for the dashboard and the VM page: one query for
every VM's, whatever their number."""

from django.db import models

from recovery.models import InstantRestore

# The dashboard lists this many, failed ones first; the counts above them cover every VM.
DASHBOARD_ROWS = 20


def last_proofs() -> models.QuerySet[InstantRestore]:
    """Each VM's newest ended restore proof (one at work is not a result yet), annotated `failed`:
    a proof that did not end with the guest's answer (proof_ok not true: failed, or its worker died)."""
    ended = InstantRestore.objects.filter(purpose=InstantRestore.Purpose.PROOF).exclude(
        status__in=InstantRestore.ACTIVE
    )
    newest = ended.filter(vm=models.OuterRef("vm")).order_by("-created", "-pk").values("pk")[:1]
    return (
        ended.exclude(vm=None)
        .filter(pk=models.Subquery(newest))
        .annotate(
            failed=models.Case(
                models.When(proof_ok=True, then=models.Value(False)),
                default=models.Value(True),
                output_field=models.BooleanField(),
            )
        )
    )


def proof_summary() -> dict:
    """The dashboard's block: how many VMs' last proofs passed and failed, and the first rows."""
    counts = last_proofs().aggregate(
        ok=models.Count("pk", filter=models.Q(proof_ok=True)),
        failed=models.Count("pk", filter=~models.Q(proof_ok=True)),
    )
    rows = list(last_proofs().select_related("vm").order_by("-failed", "-created", "-pk")[:DASHBOARD_ROWS])
    more = counts["ok"] + counts["failed"] - len(rows)
    return {"rows": rows, "ok": counts["ok"], "failed": counts["failed"], "more": more}
