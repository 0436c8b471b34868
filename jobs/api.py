from rest_framework import routers, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from backupsite import roles
from inventory.ssh import normalize_private_key
from jobs import models


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

    def validate_guest_ssh_private_key(self, value):
        try:
            return normalize_private_key(value)
        except ValueError as e:
            raise serializers.ValidationError(str(e)) from None

    def get_has_guest_ssh_key(self, policy) -> bool:
        return bool(policy.guest_ssh_private_key)

    def get_next_run(self, policy):
        return policy.next_run().isoformat() if policy.enabled else None


class JobEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = models.JobEvent
        fields = ["id", "time", "level", "message"]


class JobSerializer(serializers.ModelSerializer):
    progress_percent = serializers.FloatField(read_only=True)
    throughput = serializers.FloatField(read_only=True, help_text="bytes per second")
    eta_seconds = serializers.IntegerField(read_only=True)
    owner = serializers.SlugRelatedField(read_only=True, slug_field="username")

    class Meta:
        model = models.Job
        fields = [
            "id",
            "kind",
            "status",
            "name",
            "manager",
            "vm",
            "policy",
            "params",
            "result",
            "owner",
            "node",
            "bytes_done",
            "bytes_total",
            "progress_percent",
            "throughput",
            "eta_seconds",
            "created",
            "started",
            "finished",
            "heartbeat",
            "error",
            "cancel_requested",
        ]


class PolicyViewSet(viewsets.ModelViewSet):
    queryset = models.Policy.objects.prefetch_related("vms").order_by("priority", "name")
    serializer_class = PolicySerializer
    role_rules = {"read": roles.VIEW, "write": roles.OPERATE}
    filterset_fields = ["enabled", "strategy", "destination"]
    search_fields = ["name", "description"]


class JobViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = models.Job.objects.select_related("owner").order_by("-created")
    serializer_class = JobSerializer
    role_rules = {"read": roles.VIEW, "write": roles.OPERATE, "events": roles.VIEW, "cancel": roles.OPERATE}
    filterset_fields = ["kind", "status", "manager", "vm", "policy", "node"]
    search_fields = ["name", "error"]

    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        job = self.get_object()
        if job.is_final:
            raise serializers.ValidationError({"non_field_errors": [f"Job {job.pk} has already {job.status}."]})
        job.request_cancel()
        job.log("warning", f"Cancel requested by {request.user.username}")
        job.refresh_from_db()
        return Response(JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)

    @action(detail=True, methods=["get"])
    def events(self, request, pk=None):
        job = self.get_object()
        page = self.paginate_queryset(job.events.all())
        return self.get_paginated_response(JobEventSerializer(page, many=True).data)


router = routers.SimpleRouter()
router.register("policies", PolicyViewSet, basename="policy")
router.register("jobs", JobViewSet, basename="job")
