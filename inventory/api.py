from rest_framework import routers, serializers, viewsets

from backupsite import roles
from inventory import models

READ_ONLY = {"read": roles.VIEW, "write": roles.ADMINISTER}


class ManagerSerializer(serializers.ModelSerializer):
    class Meta:
        model = models.Manager
        fields = [
            "id",
            "name",
            "api_url",
            "username",
            "verify_tls",
            "ca_certificate",
            "status",
            "engine_version",
            "last_sync",
            "last_error",
            "created",
        ]


class DataCenterSerializer(serializers.ModelSerializer):
    class Meta:
        model = models.DataCenter
        fields = ["id", "manager", "engine_id", "name", "missing_since", "synced"]


class ClusterSerializer(serializers.ModelSerializer):
    class Meta:
        model = models.Cluster
        fields = ["id", "manager", "engine_id", "name", "data_center", "cpu_type", "missing_since", "synced"]


class HostSerializer(serializers.ModelSerializer):
    has_ssh_key = serializers.SerializerMethodField()
    has_ssh_password = serializers.SerializerMethodField()

    class Meta:
        model = models.Host
        fields = [
            "id",
            "manager",
            "engine_id",
            "name",
            "cluster",
            "address",
            "status",
            "ssh_port",
            "ssh_user",
            "has_ssh_key",
            "has_ssh_password",
            "missing_since",
            "synced",
        ]

    def get_has_ssh_key(self, host) -> bool:
        return bool(host.ssh_private_key)

    def get_has_ssh_password(self, host) -> bool:
        return bool(host.ssh_password)


class StorageDomainSerializer(serializers.ModelSerializer):
    class Meta:
        model = models.StorageDomain
        fields = [
            "id",
            "manager",
            "engine_id",
            "name",
            "data_center",
            "type",
            "storage_kind",
            "path",
            "available_bytes",
            "used_bytes",
            "missing_since",
            "synced",
        ]


class TagSerializer(serializers.ModelSerializer):
    class Meta:
        model = models.Tag
        fields = ["id", "manager", "engine_id", "name", "missing_since", "synced"]


class VMSerializer(serializers.ModelSerializer):
    tags = serializers.SlugRelatedField(many=True, read_only=True, slug_field="name")

    class Meta:
        model = models.VM
        fields = [
            "id",
            "manager",
            "engine_id",
            "name",
            "cluster",
            "host",
            "status",
            "guest_agent",
            "os_type",
            "memory_bytes",
            "cpu_cores",
            "tags",
            "missing_since",
            "synced",
        ]


class DiskSerializer(serializers.ModelSerializer):
    class Meta:
        model = models.Disk
        fields = [
            "id",
            "manager",
            "engine_id",
            "name",
            "vm",
            "storage_domain",
            "provisioned_size",
            "actual_size",
            "format",
            "sparse",
            "interface",
            "bootable",
            "active",
            "incremental_backup",
            "status",
            "missing_since",
            "synced",
        ]


def _viewset(model, serializer, filters, search=("name",), related=()):
    return type(
        f"{model.__name__}ViewSet",
        (viewsets.ReadOnlyModelViewSet,),
        {
            "queryset": model.objects.select_related(*related).order_by("name", "pk"),
            "serializer_class": serializer,
            "role_rules": READ_ONLY,
            "filterset_fields": filters,
            "search_fields": list(search),
            "ordering_fields": ["name", "id"],
        },
    )


router = routers.SimpleRouter()
router.register("managers", _viewset(models.Manager, ManagerSerializer, ["status"]), basename="manager")
router.register("datacenters", _viewset(models.DataCenter, DataCenterSerializer, ["manager"]), basename="datacenter")
router.register("clusters", _viewset(models.Cluster, ClusterSerializer, ["manager", "data_center"]), basename="cluster")
router.register(
    "hosts",
    _viewset(models.Host, HostSerializer, ["manager", "cluster", "status"], ("name", "address")),
    basename="host",
)
router.register(
    "storagedomains",
    _viewset(models.StorageDomain, StorageDomainSerializer, ["manager", "data_center", "type", "storage_kind"]),
    basename="storagedomain",
)
router.register("tags", _viewset(models.Tag, TagSerializer, ["manager"]), basename="tag")
VMViewSet = _viewset(models.VM, VMSerializer, ["manager", "cluster", "host", "status", "guest_agent"])
VMViewSet.queryset = models.VM.objects.prefetch_related("tags").order_by("name", "pk")
router.register("vms", VMViewSet, basename="vm")
router.register(
    "disks",
    _viewset(models.Disk, DiskSerializer, ["manager", "vm", "storage_domain", "format", "incremental_backup"]),
    basename="disk",
)
