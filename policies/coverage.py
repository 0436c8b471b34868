"""Which VMs a policy covers: its explicit VMs plus those its auto-assignment rules match."""

import re

from django.db import models

from inventory.models import VM
from policies.models import Policy
from repository.models import BackupPoint


def with_backup_summary(vms: models.QuerySet[VM]) -> models.QuerySet[VM]:
    """Annotate `protected` (an enabled policy covers the VM, explicitly or by its rules) and the
    last backup's status and time."""
    last = BackupPoint.objects.filter(vm=models.OuterRef("pk")).order_by("-started")
    covered = models.Q(
        models.Exists(VM.policies.through.objects.filter(vm=models.OuterRef("pk"), policy__enabled=True))
    )
    # Auto-assignment rules, one term per enabled policy that has any (one query for the policies).
    names = None
    for policy in Policy.objects.filter(enabled=True).exclude(match_name_regex="", match_tag="", match_cluster=None):
        rule = models.Q()
        if policy.match_name_regex:
            # Matched in Python, as validated: PostgreSQL's regular expressions are another dialect
            # (a Python-only pattern such as (?P<n>web) would make every page using this fail).
            if names is None:
                names = list(VM.objects.values_list("pk", "name"))
            pattern = re.compile(policy.match_name_regex)
            rule &= models.Q(pk__in=[pk for pk, name in names if pattern.search(name)])
        if policy.match_tag:
            rule &= models.Q(
                models.Exists(VM.tags.through.objects.filter(vm=models.OuterRef("pk"), tag__name=policy.match_tag))
            )
        if policy.match_cluster_id:
            rule &= models.Q(cluster_id=policy.match_cluster_id)
        covered |= rule
    return vms.annotate(
        protected=models.ExpressionWrapper(covered, output_field=models.BooleanField()),
        last_backup_status=models.Subquery(last.values("status")[:1]),
        last_backup_time=models.Subquery(last.values("started")[:1]),
    )


def covered_vms(policy: Policy) -> models.QuerySet[VM]:
    """The VMs in the inventory this policy covers now: its explicit VMs, and those its rules match."""
    covered = models.Q(pk__in=policy.vms.values("pk"))
    if policy.match_name_regex or policy.match_tag or policy.match_cluster_id:
        rule = models.Q()
        if policy.match_name_regex:
            pattern = re.compile(policy.match_name_regex)  # in Python: see with_backup_summary
            rule &= models.Q(pk__in=[pk for pk, name in VM.objects.values_list("pk", "name") if pattern.search(name)])
        if policy.match_tag:
            rule &= models.Q(
                models.Exists(VM.tags.through.objects.filter(vm=models.OuterRef("pk"), tag__name=policy.match_tag))
            )
        if policy.match_cluster_id:
            rule &= models.Q(cluster_id=policy.match_cluster_id)
        covered |= rule
    return VM.objects.filter(covered, missing_since=None)
