"""Which VMs a policy covers, and why: its explicit VMs plus those its auto-assignment rules match
(name regex, tag, cluster) less its exclusions. When two enabled policies cover a VM, the one with
the higher priority (the lower number, then the name) wins.

Every page, the API, the CLI, Back up now and the scheduler ask here, so they all agree."""

import re
from dataclasses import dataclass

from django.db import models

from inventory.models import VM
from policies.models import Policy
from repository.models import BackupPoint

EXPLICIT = "listed explicitly"


@dataclass(frozen=True)
class Rule:
    """One enabled policy's terms over VMs: explicit membership, and its rules less its exclusions."""

    policy: Policy
    explicit: models.Q
    auto: models.Q | None  # None: the policy has no auto-assignment rule
    why: str  # the rules, as people read them

    def reason_case(self) -> list[models.When]:
        whens = [models.When(self.explicit, then=models.Value(EXPLICIT))]
        if self.auto is not None:
            whens.append(models.When(self.auto, then=models.Value(self.why)))
        return whens

    def policy_case(self) -> list[models.When]:
        term = self.explicit if self.auto is None else self.explicit | self.auto
        return [models.When(term, then=models.Value(self.policy.pk))]


def _has_tag(name: str) -> models.Q:
    return models.Q(
        models.Exists(VM.tags.through.objects.filter(vm=models.OuterRef("pk"), tag__name=name)),
    )


def rules(policies=None, *, names: list[tuple[int, str]] | None = None) -> list[Rule]:
    """The terms of each enabled policy, highest priority first (one query for the policies, one for
    their explicit VMs, and one for the VMs' names when a policy has a name regex, unless `names`
    are given)."""
    if policies is None:
        policies = Policy.objects.filter(enabled=True).select_related("match_cluster").order_by("priority", "name")
    policies = list(policies)
    # Explicit lists are short: read them all at once rather than one subquery per policy and VM.
    listed: dict[int, list[int]] = {p.pk: [] for p in policies}
    for policy_id, vm_id in VM.policies.through.objects.filter(policy__in=listed).values_list("policy_id", "vm_id"):
        listed[policy_id].append(vm_id)
    found = []
    for policy in policies:
        explicit = models.Q(pk__in=listed[policy.pk])
        auto, why = None, []
        if policy.match_name_regex or policy.match_tag or policy.match_cluster_id:
            auto = models.Q()
            if policy.match_name_regex:
                # Matched in Python, as validated: PostgreSQL's regular expressions are another dialect
                # (a Python-only pattern such as (?P<n>web) would make every page using this fail).
                if names is None:
                    names = list(VM.objects.values_list("pk", "name"))
                pattern = re.compile(policy.match_name_regex)
                auto &= models.Q(pk__in=[pk for pk, name in names if pattern.search(name)])
                why.append(f"name matches {policy.match_name_regex}")
            if policy.match_tag:
                auto &= _has_tag(policy.match_tag)
                why.append(f"tag {policy.match_tag}")
            if policy.match_cluster_id:
                auto &= models.Q(cluster_id=policy.match_cluster_id)
                why.append(f"cluster {policy.match_cluster.name if policy.match_cluster else policy.match_cluster_id}")
            if policy.exclude_name_regex:
                if names is None:
                    names = list(VM.objects.values_list("pk", "name"))
                pattern = re.compile(policy.exclude_name_regex)
                auto &= ~models.Q(pk__in=[pk for pk, name in names if pattern.search(name)])
            if policy.exclude_tag:
                auto &= ~_has_tag(policy.exclude_tag)
        found.append(Rule(policy, explicit, auto, " and ".join(why)))
    return found


def with_coverage(vms: models.QuerySet[VM], *, policy_rules: list[Rule] | None = None) -> models.QuerySet[VM]:
    """Annotate `covering_policy_id` (the winning enabled policy, or None), `coverage_reason` (why it
    covers the VM) and `protected` (some enabled policy covers it)."""
    policy_rules = rules() if policy_rules is None else policy_rules
    if not policy_rules:
        return vms.annotate(
            covering_policy_id=models.Value(None, output_field=models.IntegerField()),
            coverage_reason=models.Value(None, output_field=models.CharField()),
            protected=models.Value(False, output_field=models.BooleanField()),
        )
    # A CASE stops at its first match: the rules come highest priority first.
    return vms.annotate(
        covering_policy_id=models.Case(
            *[w for r in policy_rules for w in r.policy_case()], default=None, output_field=models.IntegerField()
        ),
        coverage_reason=models.Case(
            *[w for r in policy_rules for w in r.reason_case()], default=None, output_field=models.CharField()
        ),
        protected=models.ExpressionWrapper(models.Q(covering_policy_id__isnull=False), models.BooleanField()),
    )


def with_last_backup(vms: models.QuerySet[VM]) -> models.QuerySet[VM]:
    """The newest backup point's status and start, whatever its status (the API's last_backup_*)."""
    last = BackupPoint.objects.filter(vm=models.OuterRef("pk")).order_by("-started")
    return vms.annotate(
        last_backup_status=models.Subquery(last.values("status")[:1]),
        last_backup_time=models.Subquery(last.values("started")[:1]),
    )


def covering_policy(vm: VM) -> Policy | None:
    """The enabled policy that covers this VM, the highest priority one when several do."""
    found = coverage_of(vm)
    return found[0][0] if found else None


def coverage_of(vm: VM) -> list[tuple[Policy, str]]:
    """Every enabled policy that covers this VM, with why, the winner first (two queries)."""
    policy_rules = rules(names=[(vm.pk, vm.name)])
    if not policy_rules:
        return []
    reasons = (
        VM.objects.filter(pk=vm.pk)
        .annotate(
            **{
                f"p{r.policy.pk}": models.Case(*r.reason_case(), default=None, output_field=models.CharField())
                for r in policy_rules
            }
        )
        .values(*[f"p{r.policy.pk}" for r in policy_rules])
        .first()
    )
    if reasons is None:
        return []
    return [(r.policy, reasons[f"p{r.policy.pk}"]) for r in policy_rules if reasons[f"p{r.policy.pk}"]]


def covered_by(policy: Policy, vms: models.QuerySet[VM] | None = None) -> models.QuerySet[VM]:
    """The VMs this policy's terms match (whether or not it wins them), annotated with `reason` (this
    policy's) and, as with_coverage, the winning policy. A disabled policy matches the same VMs but
    wins none."""
    vms = VM.objects.filter(missing_since=None) if vms is None else vms
    policy_rules = rules()
    (own,) = [r for r in policy_rules if r.policy.pk == policy.pk] or rules([policy])
    term = own.explicit if own.auto is None else own.explicit | own.auto
    return (
        with_coverage(vms, policy_rules=policy_rules)
        .filter(term)
        .annotate(reason=models.Case(*own.reason_case(), default=None, output_field=models.CharField()))
    )


def covered_vms(policy: Policy) -> models.QuerySet[VM]:
    """The VMs this policy covers now and wins (a disabled policy wins none)."""
    return covered_by(policy).filter(covering_policy_id=policy.pk)
