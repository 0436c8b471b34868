from urllib.parse import urlencode

from django.urls import reverse
from drf_spectacular.utils import OpenApiParameter, extend_schema_field
from rest_framework import routers, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from core import roles
from core.api import accepted, accepted_schema
from core.audit import AuditedModelViewSet, record_request
from core.ssh import normalize_private_key
from jobs.models import Job
from policies import models
from policies.schedule import run_policy_now
from policies.validators import proof_problems, schedule_window_problems, window_problems
from repository.retention import plan_policy, request_prune, validate_keep
from strategies.registry import check_options, options_help, refusal


class PolicySerializer(serializers.ModelSerializer):
    next_run = serializers.SerializerMethodField()
    next_proofs = serializers.SerializerMethodField()
    guest_ssh_private_key = serializers.CharField(
        write_only=True, required=False, allow_blank=True, trim_whitespace=False, help_text="write-only"
    )
    has_guest_ssh_key = serializers.SerializerMethodField()
    strategy_options = serializers.DictField(
        child=serializers.JSONField(),
        required=False,
        help_text="The strategy's own options by name, for the policy's backups (another strategy's is refused). "
        + options_help(),
    )

    class Meta:
        model = models.Policy
        fields = [
            "id",
            "name",
            "description",
            "enabled",
            "priority",
            "strategy",
            "strategy_options",
            "destination",
            "schedule",
            "next_run",
            "window_start",
            "window_end",
            "full_every_days",
            "full_every_runs",
            "max_chain_length",
            "verify_after_backup",
            "verify_weekly",
            "prove_restores",
            "proof_schedule",
            "next_proofs",
            "proof_cluster",
            "keep_last",
            "keep_days",
            "keep_daily",
            "keep_weekly",
            "keep_monthly",
            "change_rate_factor",
            "quiesce",
            "pre_snapshot_command",
            "post_snapshot_command",
            "guest_ssh_user",
            "guest_ssh_port",
            "guest_ssh_private_key",
            "has_guest_ssh_key",
            "guest_command_timeout",
            "excluded_disks",
            "vms",
            "match_name_regex",
            "match_tag",
            "match_cluster",
            "exclude_name_regex",
            "exclude_tag",
            "parallel_vms",
            "created",
        ]
        read_only_fields = ["created"]

    def validate_strategy(self, value):
        refused = refusal(value)
        if refused:
            raise serializers.ValidationError(refused)
        return value

    def validate_guest_ssh_private_key(self, value):
        try:
            return normalize_private_key(value)
        except ValueError as e:
            raise serializers.ValidationError(str(e)) from None

    def validate(self, attrs):
        current = self.instance
        values = {
            name: attrs.get(name, getattr(current, name) if current else models.Policy._meta.get_field(name).default)
            for name in ("keep_last", "keep_days", "keep_daily", "keep_weekly", "keep_monthly")
        }
        errors = validate_keep(
            keep_last=values["keep_last"],
            keep_days=values["keep_days"],
            daily=values["keep_daily"],
            weekly=values["keep_weekly"],
            monthly=values["keep_monthly"],
        )
        if errors:
            raise serializers.ValidationError({name: [message] for name, message in errors.items()})
        window = (
            attrs.get("window_start", current.window_start if current else None),
            attrs.get("window_end", current.window_end if current else None),
        )
        schedule = attrs.get(
            "schedule", current.schedule if current else models.Policy._meta.get_field("schedule").default
        )
        problems = window_problems(*window) or schedule_window_problems(schedule, *window)
        if problems:
            raise serializers.ValidationError({name: [message] for name, message in problems.items()})
        proof = {
            name: attrs.get(
                name, getattr(current, name) if current else models.Policy._meta.get_field(name).get_default()
            )
            for name in ("prove_restores", "proof_schedule", "proof_cluster", "schedule")
        }
        if problems := proof_problems(**proof):
            raise serializers.ValidationError({name: [message] for name, message in problems.items()})
        # The options are the strategy's: checked against the one the policy has once saved; a new
        # strategy without options given keeps none of the old one's. Left alone when neither changes.
        if current is None or "strategy" in attrs or "strategy_options" in attrs:
            default = models.Policy._meta.get_field("strategy").default
            strategy = attrs.get("strategy", current.strategy if current else default())
            options = attrs.get("strategy_options", current.strategy_options if current else {})
            if current and "strategy_options" not in attrs and strategy != current.strategy:
                options = {}
            try:
                checked = check_options(strategy, options)
            except (ValueError, LookupError) as e:
                raise serializers.ValidationError({"strategy_options": [str(e)]}) from None
            if "strategy_options" in attrs or (current and checked != current.strategy_options):
                attrs["strategy_options"] = checked
        return attrs

    def get_has_guest_ssh_key(self, policy) -> bool:
        return bool(policy.guest_ssh_private_key)

    @extend_schema_field(serializers.DateTimeField(allow_null=True, help_text="null when the policy is disabled"))
    def get_next_run(self, policy) -> str | None:
        return policy.next_run().isoformat() if policy.enabled else None

    @extend_schema_field(
        serializers.DateTimeField(allow_null=True, help_text="null when the policy is disabled or proves no restore")
    )
    def get_next_proofs(self, policy) -> str | None:
        return policy.next_proofs().isoformat() if policy.enabled and policy.prove_restores else None


class PruneRequestSerializer(serializers.Serializer):
    dry_run = serializers.BooleanField(default=False, help_text="only say what would be deleted and merged, and why")


class PruneDecisionSerializer(serializers.Serializer):
    point = serializers.IntegerField()
    started = serializers.DateTimeField()
    type = serializers.CharField()
    action = serializers.ChoiceField(choices=["keep", "delete", "merge"])
    reason = serializers.CharField(help_text='e.g. "kept: weekly 2026-W47" or "merged into #12: ..."')
    into = serializers.IntegerField(allow_null=True, help_text="merge: the kept point it is merged into")


class PrunePlanSerializer(serializers.Serializer):
    plan = PruneDecisionSerializer(many=True)


class PolicyRunSerializer(serializers.ModelSerializer):
    owner = serializers.SlugRelatedField(read_only=True, allow_null=True, slug_field="username")
    jobs = serializers.SerializerMethodField(
        help_text="ids of its jobs: the backups in queue order, and the retention after each"
    )

    class Meta:
        model = models.PolicyRun
        fields = [
            "id",
            "policy",
            "number",
            "due",
            "started",
            "finished",
            "origin",
            "owner",
            "note",
            "jobs",
            "verify_job",
        ]
        read_only_fields = fields

    def get_jobs(self, run) -> list[int]:
        return list(run.jobs.order_by("created", "pk").values_list("pk", flat=True))


RUN_JOBS = OpenApiParameter(
    "Location",
    str,
    location=OpenApiParameter.HEADER,
    response=[202],
    description="the run's jobs: /api/v1/jobs/?group={job group}",
)


class PolicyViewSet(AuditedModelViewSet, viewsets.ModelViewSet):
    audit_name = "policy"
    queryset = models.Policy.objects.prefetch_related("vms").order_by("priority", "name")
    serializer_class = PolicySerializer
    role_rules = {"read": roles.VIEW, "write": roles.OPERATE, "run": roles.OPERATE, "prune": roles.OPERATE}
    filterset_fields = ["name", "enabled", "strategy", "destination"]
    search_fields = ["name", "description"]

    @accepted_schema(PolicyRunSerializer, location=RUN_JOBS, request=None)
    @action(detail=True, methods=["post"])
    def run(self, request, pk=None):
        """Run the policy now: one backup job per VM it covers, as a scheduled run would. Its jobs are
        listed at the Location, /api/v1/jobs/?group={the run's job group}."""
        try:
            run = run_policy_now(policy=self.get_object(), origin=Job.Origin.API, owner=request.user)
        except ValueError as e:
            raise serializers.ValidationError({"non_field_errors": [str(e)]}) from None
        record_request(request, action="policy_run_requested", target=run.policy, run=run.number)
        jobs = f"{reverse('api:job-list')}?{urlencode({'group': run.job_group})}"
        return Response(PolicyRunSerializer(run).data, status=status.HTTP_202_ACCEPTED, headers={"Location": jobs})

    @accepted_schema(request=PruneRequestSerializer, responses={200: PrunePlanSerializer})
    @action(detail=True, methods=["post"])
    def prune(self, request, pk=None):
        """Apply the policy's retention now (a retention job), or with dry_run say what it would do."""
        policy = self.get_object()
        body = PruneRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        if body.validated_data["dry_run"]:
            plans = plan_policy(policy=policy)
            return Response({"plan": [d for plan in plans.values() for d in plan.as_dict()]})
        try:
            job = request_prune(policy=policy, origin=Job.Origin.API, owner=request.user)
        except ValueError as e:
            raise serializers.ValidationError({"keep_last": [str(e)]}) from None
        record_request(request, action="prune_requested", target=policy, job=job.pk)
        return accepted(job)


router = routers.SimpleRouter()
router.register("policies", PolicyViewSet, basename="policy")
