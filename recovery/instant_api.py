"""Instant restore through the API (`/api/v1/instant-restores/`): list and read them, migrate one's
disks to a storage domain, discard one. A point is booted with POST /api/v1/backups/{id}/instant-restore/
(or proven with .../prove/), beside the other restores in recovery/api.py. Every request queues a job
on the node that serves the instant restore: the answer is 202 with the job in Location and in the
body, with the instant restore as it is now."""

from drf_spectacular.utils import OpenApiResponse
from rest_framework import mixins, serializers, viewsets
from rest_framework.decorators import action

from core import roles
from core.api import Conflict, ErrorSerializer, accepted
from core.api import accepted_schema as core_accepted_schema
from core.audit import record_request
from jobs.models import Job
from ovirt.vms import VM_NAME_RULE, validate_vm_name
from recovery.instant.errors import InstantError
from recovery.instant.workflow import request_discard, request_migrate
from recovery.models import InstantRestore


def refused(error: InstantError) -> Conflict:
    """What recovery.instant refused once the request was valid: the state of the point, the
    instant restore or its jobs is in the way (409), in its words (the one error body, core.api)."""
    return Conflict(str(error))


REFUSED = OpenApiResponse(
    ErrorSerializer,
    description="It cannot be done now: the message says why (its state, a job of it at work, the backup "
    "being deleted, a VM of that name already booted...).",
)


class InstantDiskSerializer(serializers.Serializer):
    alias = serializers.CharField()
    original_id = serializers.CharField(help_text="the backed-up disk's id on the engine")
    image_id = serializers.CharField(help_text="the booted VM's disk id on the engine")
    volume_id = serializers.CharField(help_text="its writable top volume, on the node beside the backup")
    chain = serializers.ListField(child=serializers.CharField(), help_text="the backup's files it reads, oldest first")
    virtual_size = serializers.IntegerField(help_text="bytes")


class InstantRestoreSerializer(serializers.ModelSerializer):
    vm = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True, help_text="the backed-up VM's id")
    vm_name = serializers.CharField(
        source="vm.name", read_only=True, allow_null=True, default=None, help_text="the backed-up VM's name"
    )
    disks = InstantDiskSerializer(many=True, read_only=True)
    top_bytes = serializers.IntegerField(
        read_only=True, help_text="what its writable top layers take on the node (refreshed by its heartbeat)"
    )

    class Meta:
        model = InstantRestore
        fields = [
            "id",
            "point",
            "vm",
            "vm_name",
            "purpose",
            "name",
            "cluster",
            "migrate_to",
            "node",
            "status",
            "step",
            "error",
            "who",
            "created",
            "up_at",
            "seconds_to_up",
            "ended",
            "share",
            "storage_domain_name",
            "vm_engine_id",
            "disks",
            "top_bytes",
            "proof_ok",
            "proof_answer",
        ]
        read_only_fields = fields


class InstantAcceptedSerializer(serializers.Serializer):
    """The body of a 202: the job queued for it (also in Location) and the instant restore."""

    job = serializers.IntegerField(help_text="the job's id: follow it at /api/v1/jobs/{job}/ (the Location)")
    status = serializers.CharField(help_text="the job's status: queued or running")
    instant_restore = InstantRestoreSerializer()


def accepted_instant(request, job: Job, instant: InstantRestore):
    """202 with the job's URL in Location and the instant restore (as it is now) in the body; 503
    as core.api.accepted answers when the job's task cannot reach a worker."""
    response = accepted(job)
    if response.status_code == 202:
        instant.refresh_from_db()
        response.data["instant_restore"] = InstantRestoreSerializer(instant, context={"request": request}).data
    return response


def accepted_schema(**more):
    return core_accepted_schema(InstantAcceptedSerializer, responses={409: REFUSED}, **more)


class InstantRequestSerializer(serializers.Serializer):
    name = serializers.CharField(
        validators=[validate_vm_name],
        help_text=f"name of the VM booted from the backup: {VM_NAME_RULE}; no VM on the engine may have it "
        "(checked before anything is queued: 400 when one has)",
    )
    cluster = serializers.CharField(
        required=False, allow_blank=True, default="", help_text="cluster to run it in; default the backed-up VM's"
    )
    migrate_to = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        help_text="once it is up, move its disks to this storage domain (a migration job); empty: it runs "
        "from the backup until POST /api/v1/instant-restores/{id}/migrate/ or .../discard/",
    )


class ProveRequestSerializer(serializers.Serializer):
    cluster = serializers.CharField(
        required=False, allow_blank=True, default="", help_text="cluster to boot it in; default the backed-up VM's"
    )


class MigrateRequestSerializer(serializers.Serializer):
    storage_domain = serializers.CharField(help_text="name of the data domain its disks move to")


class InstantRestoreViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Backup points booted as VMs from the backup itself (instant restores and restore proofs), newest
    first. Boot one with POST /api/v1/backups/{id}/instant-restore/."""

    queryset = InstantRestore.objects.select_related("vm").order_by("-created", "-pk")
    serializer_class = InstantRestoreSerializer
    role_rules = {"read": roles.VIEW, "write": roles.OPERATE, "migrate": roles.OPERATE, "discard": roles.OPERATE}
    filterset_fields = ["name", "status", "purpose", "cluster", "node", "point", "vm"]

    @accepted_schema(request=MigrateRequestSerializer)
    @action(detail=True, methods=["post"], serializer_class=MigrateRequestSerializer, filter_backends=[])
    def migrate(self, request, pk=None):
        """Move the disks of a VM running from its backup to a storage domain (a job); once they are
        there, the backup is no longer in use (done)."""
        instant = self.get_object()
        data = MigrateRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        to = data.validated_data["storage_domain"]
        try:
            job = request_migrate(instant=instant, to=to, origin=Job.Origin.API, owner=request.user)
        except InstantError as e:
            raise refused(e) from None
        record_request(
            request,
            action="instant_migrate_requested",
            target=instant.point or instant,
            job=job.pk,
            instant=instant.pk,
            to=to,
        )
        return accepted_instant(request, job, instant)

    @accepted_schema(request=None)
    @action(detail=True, methods=["post"], filter_backends=[])
    def discard(self, request, pk=None):
        """Stop and remove the VM and its temporary storage domain (a job): its writes are lost, the
        backup is as it was."""
        instant = self.get_object()
        try:
            job = request_discard(instant=instant, origin=Job.Origin.API, owner=request.user)
        except InstantError as e:
            raise refused(e) from None
        record_request(
            request, action="instant_discard_requested", target=instant.point or instant, job=job.pk, instant=instant.pk
        )
        return accepted_instant(request, job, instant)
