from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import routers, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from core import roles
from core.ssh import normalize_private_key
from jobs.models import Job
from policies import models
from policies.schedule import run_policy_now
from strategies.registry import refusal


class PolicySerializer(serializers.ModelSerializer):
    next_run = serializers.SerializerMethodField()
    guest_ssh_private_key = serializers.CharField(
        write_only=True, required=False, allow_blank=True, trim_whitespace=False, help_text="write-only"
    )
    has_guest_ssh_key = serializers.SerializerMethodField()

    class Meta:
        model = models.Policy
        fields = [
            "id",
            "name",
            "description",
            "enabled",
            "priority",
            "strategy",
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
            "keep_last",
            "keep_days",
            "keep_daily",
            "keep_weekly",
            "keep_monthly",
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

    def validate(self, attrs):
        start = attrs.get("window_start", self.instance.window_start if self.instance else None)
        end = attrs.get("window_end", self.instance.window_end if self.instance else None)
        if (start is None) != (end is None):
            missing = "window_end" if end is None else "window_start"
            raise serializers.ValidationError({missing: ["Give both ends of the backup window, or neither."]})
        if start is not None and start == end:
            raise serializers.ValidationError(
                {"window_end": ["The backup window ends when it starts: it would be empty."]}
            )
        return attrs

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

    def get_has_guest_ssh_key(self, policy) -> bool:
        return bool(policy.guest_ssh_private_key)

    @extend_schema_field(serializers.DateTimeField(allow_null=True, help_text="null when the policy is disabled"))
    def get_next_run(self, policy) -> str | None:
        return policy.next_run().isoformat() if policy.enabled else None


class PolicyRunSerializer(serializers.ModelSerializer):
    owner = serializers.SlugRelatedField(read_only=True, allow_null=True, slug_field="username")
    jobs = serializers.PrimaryKeyRelatedField(many=True, read_only=True, help_text="its backup jobs, in queue order")

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


class PolicyViewSet(viewsets.ModelViewSet):
    queryset = models.Policy.objects.prefetch_related("vms").order_by("priority", "name")
    serializer_class = PolicySerializer
    role_rules = {"read": roles.VIEW, "write": roles.OPERATE, "run": roles.OPERATE}
    filterset_fields = ["enabled", "strategy", "destination"]
    search_fields = ["name", "description"]

    @extend_schema(request=None, responses={202: PolicyRunSerializer})
    @action(detail=True, methods=["post"])
    def run(self, request, pk=None):
        """Run the policy now: one backup job per VM it covers, as a scheduled run would."""
        try:
            run = run_policy_now(policy=self.get_object(), origin=Job.Origin.API, owner=request.user)
        except ValueError as e:
            raise serializers.ValidationError({"non_field_errors": [str(e)]}) from None
        return Response(PolicyRunSerializer(run).data, status=status.HTTP_202_ACCEPTED)


router = routers.SimpleRouter()
router.register("policies", PolicyViewSet, basename="policy")
