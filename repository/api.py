import copy

import django_filters
from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import routers, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from core import roles
from core.api import ErrorSerializer, accepted, accepted_schema, error_body
from core.audit import AuditedModelViewSet, record_request
from jobs.models import Job, Node
from jobs.nodes import NodeError, find_node
from repository import models
from repository.places import read_usage
from repository.retention import Dependants, delete_backup
from repository.storage import DestinationRefused
from repository.verify import request_verify


class NodeNameField(serializers.SlugRelatedField):
    """A node by its name; null or "" for none. An unknown name is refused naming the nodes there are."""

    def __init__(self, **kwargs):
        super().__init__(slug_field="name", queryset=Node.objects.all(), allow_null=True, **kwargs)

    def to_internal_value(self, data):
        if data == "":
            return None
        try:
            return find_node(str(data))
        except NodeError as e:
            raise serializers.ValidationError(str(e)) from None


class BackupDestinationSerializer(serializers.ModelSerializer):
    used_percent = serializers.FloatField(read_only=True, allow_null=True, help_text="null until measured")
    node = NodeNameField(
        required=False,
        help_text="The node whose own directory this is, by name; null: shared by every node (mounted at the same "
        "path on each). A destination holding backups keeps its node.",
    )

    class Meta:
        model = models.BackupDestination
        fields = [
            "id",
            "name",
            "kind",
            "path",
            "node",
            "enabled",
            "capacity_bytes",
            "free_bytes",
            "used_percent",
            "checked",
            "check_error",
            "created",
        ]
        read_only_fields = ["capacity_bytes", "free_bytes", "checked", "check_error", "created"]

    def validate(self, attrs):
        # The model's own checks, as the form runs them: the directory where it is (when the path or
        # the node is given), one destination per real directory, the node of one holding backups.
        destination = copy.copy(self.instance) if self.instance else models.BackupDestination()
        for name, value in attrs.items():
            setattr(destination, name, value)
        try:
            if self.instance is None or {"path", "node"} & attrs.keys():
                destination.clean_fields(exclude=[f.name for f in destination._meta.fields if f.name != "path"])
            destination.clean()
        except DjangoValidationError as e:
            raise serializers.ValidationError(e.message_dict) from None
        return attrs

    def save(self, **kwargs):
        destination = super().save(**kwargs)
        request = self.context.get("request")
        read_usage(destination, origin=Job.Origin.API, owner=getattr(request, "user", None))
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
            "base_kind",
            "base_id",
            "consistency",
            "note",
            "verified",
            "damage",
            "disks",
        ]


class BackupDestinationViewSet(AuditedModelViewSet, viewsets.ModelViewSet):
    audit_name = "destination"
    queryset = models.BackupDestination.objects.order_by("name")
    serializer_class = BackupDestinationSerializer
    role_rules = {"read": roles.VIEW, "write": roles.ADMINISTER}
    filterset_fields = ["name", "kind", "enabled", "node"]
    search_fields = ["name", "path"]


class DeletedSerializer(serializers.Serializer):
    deleted = serializers.ListField(child=serializers.IntegerField(), help_text="the ids of the deleted points")


class BackupPointViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = models.BackupPoint.objects.select_related("vm").prefetch_related("disks").order_by("-started")
    serializer_class = BackupPointSerializer
    role_rules = {"read": roles.VIEW, "write": roles.OPERATE, "verify": roles.OPERATE, "verify_all": roles.OPERATE}
    filterset_fields = ["vm", "destination", "policy", "type", "status", "strategy", "consistency"]
    search_fields = ["vm__name"]

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "with_dependants",
                OpenApiTypes.BOOL,
                description="also delete the points built on this one (without it, 409 lists them)",
            )
        ],
        responses={
            200: DeletedSerializer,
            409: OpenApiResponse(
                ErrorSerializer,
                description=(
                    "Points are built on it (listed in fields.dependants), it is running, or a restore, "
                    "verify or backup reads it now (the message says which job)."
                ),
            ),
        },
    )
    def destroy(self, request, pk=None):
        """Delete a backup point's files and row; the engine snapshot its chain kept goes with the chain."""
        point = self.get_object()
        flag = request.query_params.get("with_dependants", "false").lower()
        if flag not in ("true", "false", "1", "0"):
            raise serializers.ValidationError({"with_dependants": ["Must be true or false."]})
        try:
            deleted = delete_backup(point=point, with_dependants=flag in ("true", "1"))
        except Dependants as e:
            ids = [o.pk for o in e.others]
            return Response(error_body(409, "conflict", str(e), {"dependants": ids}), status=status.HTTP_409_CONFLICT)
        except (ValueError, DestinationRefused) as e:
            return Response(error_body(409, "conflict", str(e)), status=status.HTTP_409_CONFLICT)
        record_request(request, action="point_deleted", target=point, deleted=deleted)
        return Response({"deleted": deleted})

    @accepted_schema(request=None)
    @action(detail=True, methods=["post"])
    def verify(self, request, pk=None):
        """Check this point's files against its manifest (a verify job)."""
        point = self.get_object()
        if not models.BackupPoint.objects.kept().filter(pk=point.pk).exists():
            raise serializers.ValidationError({"non_field_errors": [f"Backup {point.pk} is {point.status}."]})
        job = request_verify(origin=Job.Origin.API, points=[point], owner=request.user)
        record_request(request, action="verify_requested", target=point, job=job.pk)
        return accepted(job)

    @accepted_schema(request=None, operation_id="backups_verify_all")
    @action(detail=False, methods=["post"], url_path="verify")
    def verify_all(self, request):
        """Check every complete or damaged point (a verify job)."""
        job = request_verify(origin=Job.Origin.API, owner=request.user)
        record_request(request, action="verify_requested", job=job.pk)
        return accepted(job)


class DiskBackupFilter(django_filters.FilterSet):
    # ?format= is DRF's (the answer's: json, api), so the stored file's format is ?disk_format=.
    disk_format = django_filters.ChoiceFilter(field_name="format", choices=models.DiskBackup.Format.choices)

    class Meta:
        model = models.DiskBackup
        fields = ["point", "disk"]


class DiskBackupViewSet(viewsets.ReadOnlyModelViewSet):
    queryset = models.DiskBackup.objects.order_by("pk")
    serializer_class = DiskBackupSerializer
    role_rules = {"read": roles.VIEW, "write": roles.OPERATE}
    filterset_class = DiskBackupFilter


router = routers.SimpleRouter()
router.register("destinations", BackupDestinationViewSet, basename="destination")
router.register("backups", BackupPointViewSet, basename="backup")
router.register("diskbackups", DiskBackupViewSet, basename="diskbackup")
