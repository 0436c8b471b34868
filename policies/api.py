from drf_spectacular.utils import extend_schema_field
from rest_framework import routers, serializers, viewsets

from core import roles
from core.audit import AuditedModelViewSet
from core.ssh import normalize_private_key
from policies import models
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
            "full_every_days",
            "max_chain_length",
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

    def get_has_guest_ssh_key(self, policy) -> bool:
        return bool(policy.guest_ssh_private_key)

    @extend_schema_field(serializers.DateTimeField(allow_null=True, help_text="null when the policy is disabled"))
    def get_next_run(self, policy) -> str | None:
        return policy.next_run().isoformat() if policy.enabled else None


class PolicyViewSet(AuditedModelViewSet, viewsets.ModelViewSet):
    audit_name = "policy"
    queryset = models.Policy.objects.prefetch_related("vms").order_by("priority", "name")
    serializer_class = PolicySerializer
    role_rules = {"read": roles.VIEW, "write": roles.OPERATE}
    filterset_fields = ["enabled", "strategy", "destination"]
    search_fields = ["name", "description"]


router = routers.SimpleRouter()
router.register("policies", PolicyViewSet, basename="policy")
