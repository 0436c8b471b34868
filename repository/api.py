from rest_framework import routers, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from backupsite import roles
from repository import models


class BackupDestinationSerializer(serializers.ModelSerializer):
    used_percent = serializers.FloatField(read_only=True)

    class Meta:
        model = models.BackupDestination
        fields = [
            "id",
            "name",
            "kind",
            "path",
            "enabled",
            "capacity_bytes",
            "free_bytes",
            "used_percent",
            "checked",
            "created",
        ]
        read_only_fields = ["capacity_bytes", "free_bytes", "checked", "created"]

    def save(self, **kwargs):
        destination = super().save(**kwargs)
        destination.refresh_usage()
        return destination


class DiskBackupSerializer(serializers.ModelSerializer):
    class Meta:
        model = models.DiskBackup
        fields = ["id", "point", "disk", "file", "format", "virtual_size", "stored_size", "parent", "checksum"]


class BackupPointSerializer(serializers.ModelSerializer):
    disks = DiskBackupSerializer(many=True, read_only=True)

    class Meta:
        model = models.BackupPoint
        fields = [
            "id",
            "vm",
            "destination",
            "policy",
            "job",
            "strategy",
            "type",
            "parent",
            "status",
            "started",
            "finished",
            "bytes_transferred",
            "bytes_stored",
            "ovf_path",
            "engine_snapshot_id",
            "engine_checkpoint_id",
            "consistency",
            "note",
            "disks",
        ]


class BackupDestinationViewSet(viewsets.ModelViewSet):
    queryset = models.BackupDestination.objects.order_by("name")
    serializer_class = BackupDestinationSerializer
    role_rules = {"read": roles.VIEW, "write": roles.ADMINISTER}
    filterset_fields = ["kind", "enabled"]
    search_fields = ["name", "path"]


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


class BackupPointViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = models.BackupPoint.objects.select_related("vm").prefetch_related("disks").order_by("-started")
    serializer_class = BackupPointSerializer
    role_rules = {"read": roles.VIEW, "write": roles.OPERATE, "restore": roles.OPERATE}
    filterset_fields = ["vm", "destination", "policy", "type", "status", "strategy", "consistency"]
    search_fields = ["vm__name"]

    @action(detail=True, methods=["post"], serializer_class=RestoreRequestSerializer)
    def restore(self, request, pk=None):
        from repository.restore import request_restore

        data = RestoreRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            job = request_restore(point=self.get_object(), owner=request.user, **data.validated_data)
        except ValueError as e:
            raise serializers.ValidationError({"non_field_errors": [str(e)]}) from None
        return Response({"job": job.pk, "status": job.status}, status=status.HTTP_202_ACCEPTED)


class DiskBackupViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = models.DiskBackup.objects.order_by("pk")
    serializer_class = DiskBackupSerializer
    role_rules = {"read": roles.VIEW, "write": roles.OPERATE}
    filterset_fields = ["point", "disk", "format"]


router = routers.SimpleRouter()
router.register("destinations", BackupDestinationViewSet, basename="destination")
router.register("backups", BackupPointViewSet, basename="backup")
router.register("diskbackups", DiskBackupViewSet, basename="diskbackup")
