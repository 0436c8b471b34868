"""Restores through the API: `POST /api/v1/backups/{id}/restore/` beside the repository's backups."""

from drf_spectacular.utils import extend_schema
from rest_framework import routers, serializers, viewsets
from rest_framework.decorators import action

from core import roles
from core.api import AcceptedJobSerializer, accepted
from core.audit import record_request
from jobs.models import Job
from recovery.restore import request_restore
from recovery.ssh_restore import TRANSFERS
from repository.models import BackupPoint


class RestoreRequestSerializer(serializers.Serializer):
    name = serializers.CharField(
        max_length=255, required=False, allow_blank=True, default="", help_text="name of the new VM (whole-VM restore)"
    )
    cluster = serializers.CharField(required=False, allow_blank=True, default="")
    storage_domain = serializers.CharField(required=False, allow_blank=True, default="")
    power_on = serializers.BooleanField(default=False)
    disks = serializers.ListField(
        child=serializers.CharField(), required=False, default=list, help_text="disk ids or aliases; default all"
    )
    attach_to = serializers.CharField(
        required=False, allow_blank=True, default="", help_text="restore the disks into this existing VM (name or id)"
    )
    floating = serializers.BooleanField(default=False, help_text="restore the disks alone, attached to no VM")
    allocation = serializers.ChoiceField(choices=["original", "thin", "preallocated"], default="original")
    replace = serializers.BooleanField(default=False, help_text="replace an existing VM of that name (must be down)")
    transfer = serializers.ChoiceField(
        choices=list(TRANSFERS),
        default="auto",
        help_text="how the disks are written: imageio, over SSH into the new volumes on a host, or through "
        "a proxy VM of the cluster (proxy) (auto: SSH for points of the SSH transfer, the proxy for points "
        "of disk attachment)",
    )
    export_domain = serializers.BooleanField(
        default=False,
        help_text="write the VM into its data center's export domain (on this node's staging share) for an "
        "administrator to import, instead of creating it",
    )
    data_center = serializers.CharField(
        required=False, allow_blank=True, default="", help_text="with export_domain: another data center's"
    )
    import_vm = serializers.BooleanField(
        default=False,
        help_text="with export_domain: import it from there as VM `name`, into `cluster` and `storage_domain`",
    )


class RestoreViewSet(viewsets.GenericViewSet):
    """Only the detail action below: the backups themselves are listed by the repository's API."""

    queryset = BackupPoint.objects.all()
    serializer_class = RestoreRequestSerializer
    role_rules = {"read": roles.VIEW, "write": roles.OPERATE, "restore": roles.OPERATE}

    @extend_schema(responses={202: AcceptedJobSerializer})
    @action(detail=True, methods=["post"], serializer_class=RestoreRequestSerializer)
    def restore(self, request, pk=None):
        data = RestoreRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            point = self.get_object()
            job = request_restore(point=point, origin=Job.Origin.API, owner=request.user, **data.validated_data)
        except ValueError as e:
            raise serializers.ValidationError({"non_field_errors": [str(e)]}) from None
        record_request(request, action="restore_requested", target=point, job=job.pk)
        return accepted(job)


router = routers.SimpleRouter()
# Same basename as the backups themselves, so the route is named as an action of theirs: "backup-restore".
router.register("backups", RestoreViewSet, basename="backup")
