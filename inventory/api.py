import django_filters
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import OuterRef, Subquery
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, routers, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from core import roles
from core.api import Conflict, ErrorSerializer, accepted, accepted_schema
from core.audit import AuditedModelViewSet, record_request
from core.ssh import fingerprint, normalize_private_key
from inventory import models
from inventory.proxies import ProxyError, mark_proxy
from inventory.ssh import test_ssh, uses_site_key
from inventory.sync import SYNC, request_sync
from jobs.errors import JobError
from jobs.models import Job
from ovirt.connection import describe_certificate, fetch_ca_certificate, normalize_api_url
from ovirt.errors import EngineError

READ_ONLY = {"read": roles.VIEW, "write": roles.ADMINISTER}


class ManagerSerializer(serializers.ModelSerializer):
    password = serializers.CharField(write_only=True, required=False, style={"input_type": "password"})
    api_url = serializers.CharField(max_length=300, help_text="Host name or https://ENGINE/ovirt-engine/api")
    api_url_note = serializers.SerializerMethodField()
    sync_job = serializers.SerializerMethodField(
        help_text="The inventory sync queued or running now (the one a POST that adds a manager starts: follow it at "
        "/api/v1/jobs/{id}/ before backing its VMs up); null when none is"
    )

    class Meta:
        model = models.Manager
        fields = [
            "id",
            "name",
            "api_url",
            "api_url_note",
            "username",
            "password",
            "verify_tls",
            "ca_certificate",
            "sync_interval_minutes",
            "status",
            "engine_version",
            "last_sync",
            "last_error",
            "sync_job",
            "created",
        ]
        read_only_fields = ["status", "engine_version", "last_sync", "last_error", "created"]

    def validate_api_url(self, value):
        try:
            url, self._url_note = normalize_api_url(value)
        except ValueError as e:
            raise serializers.ValidationError(str(e)) from None
        return url

    def validate_ca_certificate(self, value):
        if value.strip():
            try:
                describe_certificate(value.strip())
            except EngineError as e:
                raise serializers.ValidationError(str(e)) from None
            return value.strip() + "\n"
        return ""

    def validate(self, attrs):
        if self.instance is None and not attrs.get("password"):
            raise serializers.ValidationError({"password": ["The engine user's password is required."]})
        verify = attrs.get("verify_tls", self.instance.verify_tls if self.instance else True)
        ca = attrs.get("ca_certificate", self.instance.ca_certificate if self.instance else "")
        if verify and not ca:
            raise serializers.ValidationError(
                {
                    "ca_certificate": [
                        "Give the engine's CA certificate (see /api/v1/managers/fetch-ca/), or set verify_tls to false."
                    ]
                }
            )
        return attrs

    def get_api_url_note(self, manager) -> str:
        return getattr(self, "_url_note", "")

    def get_sync_job(self, manager) -> int | None:
        if hasattr(manager, "active_sync_job"):  # the list's annotation (ManagerViewSet.get_queryset)
            return manager.active_sync_job
        return active_syncs().filter(manager=manager).values_list("pk", flat=True).first()


def active_syncs():
    return Job.objects.active().filter(kind=SYNC).order_by("-pk")


class ConnectionStepSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="connect, tls, authentication, permissions, version, hosts or permits")
    ok = serializers.BooleanField()
    message = serializers.CharField()
    warning = serializers.BooleanField(help_text="ok, but worth knowing (a host too old for a strategy)")


class ConnectionReportSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    error = serializers.CharField(help_text="the first failed step's message; empty when ok")
    version = serializers.CharField(help_text="the engine's version; empty until it was read")
    strategies = serializers.ListField(child=serializers.CharField(), help_text="what this engine's API allows")
    steps = ConnectionStepSerializer(many=True, help_text="each layer checked, in order, up to the first failure")


class FetchCARequestSerializer(serializers.Serializer):
    api_url = serializers.CharField(help_text="Host name or https://ENGINE/ovirt-engine/api")


class CertificateSerializer(serializers.Serializer):
    api_url = serializers.CharField()
    ca_certificate = serializers.CharField(help_text="PEM")
    subject = serializers.CharField()
    fingerprint_sha256 = serializers.CharField(help_text="compare it with the engine's before storing the certificate")


class SSHTestSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    message = serializers.CharField()


class DataCenterSerializer(serializers.ModelSerializer):
    class Meta:
        model = models.DataCenter
        fields = ["id", "manager", "engine_id", "name", "missing_since", "synced"]


class ClusterSerializer(serializers.ModelSerializer):
    class Meta:
        model = models.Cluster
        fields = ["id", "manager", "engine_id", "name", "data_center", "cpu_type", "missing_since", "synced"]


class HostKeyField(serializers.CharField):
    """An SSH host key as known_hosts has it after the name; empty means: learn it at the next login."""

    def __init__(self, **kwargs):
        super().__init__(required=False, allow_blank=True, **kwargs)

    def to_internal_value(self, data):
        value = " ".join(super().to_internal_value(data).split()[:2])
        if value:
            try:
                fingerprint(value)
            except ValueError:
                raise serializers.ValidationError(
                    'Expected a key as known_hosts shows it: "ssh-ed25519 AAAA...".'
                ) from None
        return value


class HostSerializer(serializers.ModelSerializer):
    ssh_host_key = HostKeyField()
    has_ssh_key = serializers.SerializerMethodField()
    has_ssh_password = serializers.SerializerMethodField()
    uses_site_key = serializers.SerializerMethodField()
    ssh_private_key = serializers.CharField(write_only=True, required=False, allow_blank=True, trim_whitespace=False)
    ssh_password = serializers.CharField(write_only=True, required=False, allow_blank=True, trim_whitespace=False)

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
            "vdsm_version",
            "libvirt_version",
            "ssh_port",
            "ssh_user",
            "ssh_private_key",
            "ssh_password",
            "has_ssh_key",
            "has_ssh_password",
            "uses_site_key",
            "ssh_host_key",
            "missing_since",
            "synced",
        ]
        read_only_fields = [
            "manager",
            "engine_id",
            "name",
            "cluster",
            "address",
            "status",
            "vdsm_version",
            "libvirt_version",
            "missing_since",
            "synced",
        ]

    def validate_ssh_private_key(self, value):
        try:
            return normalize_private_key(value)
        except ValueError as e:
            raise serializers.ValidationError(str(e)) from None

    def validate_ssh_port(self, value):
        if not 1 <= value <= 65535:
            raise serializers.ValidationError("A port is a number from 1 to 65535.")
        return value

    def get_has_ssh_key(self, host) -> bool:
        return bool(host.ssh_private_key)

    def get_has_ssh_password(self, host) -> bool:
        return bool(host.ssh_password)

    def get_uses_site_key(self, host) -> bool:
        return uses_site_key(host)


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


class DiskFilter(django_filters.FilterSet):
    # ?format= is DRF's (the answer's: json, api), so the disk's own format is ?disk_format=.
    disk_format = django_filters.ChoiceFilter(field_name="format", choices=models.Disk.Format.choices)

    class Meta:
        model = models.Disk
        fields = ["name", "manager", "vm", "storage_domain", "incremental_backup", "status"]


def _viewset(model, serializer, filters, search=("name",), related=()):
    """A read-only endpoint of the inventory; `filters`: field names (with name), or a FilterSet."""
    filtering = {"filterset_class": filters} if isinstance(filters, type) else {"filterset_fields": ["name", *filters]}
    return type(
        f"{model.__name__}ViewSet",
        (viewsets.ReadOnlyModelViewSet,),
        {
            "queryset": model.objects.select_related(*related).order_by("name", "pk"),
            "serializer_class": serializer,
            "role_rules": READ_ONLY,
            **filtering,
            "search_fields": list(search),
            "ordering_fields": ["name", "id"],
        },
    )


class ManagerViewSet(AuditedModelViewSet, viewsets.ModelViewSet):
    audit_name = "manager"
    queryset = models.Manager.objects.order_by("name")
    serializer_class = ManagerSerializer
    role_rules = {
        "read": roles.VIEW,
        "write": roles.ADMINISTER,
        "test": roles.ADMINISTER,
        "sync": roles.OPERATE,
        "fetch_ca": roles.ADMINISTER,
    }
    filterset_fields = ["name", "status"]
    search_fields = ["name", "api_url"]

    def get_queryset(self):
        syncing = active_syncs().filter(manager=OuterRef("pk")).values("pk")[:1]
        return super().get_queryset().annotate(active_sync_job=Subquery(syncing))

    def perform_create(self, serializer):
        manager = serializer.save()
        report = manager.check_connection()
        if report.ok:
            request_sync(manager, origin=Job.Origin.API, owner=self.request.user)

    @extend_schema(request=None, responses=ConnectionReportSerializer)
    @action(detail=True, methods=["post"])
    def test(self, request, pk=None):
        report = self.get_object().check_connection()
        return Response(
            {
                "ok": report.ok,
                "error": report.error,
                "version": report.version,
                "strategies": report.strategies,
                "steps": [vars(s) for s in report.steps],
            }
        )

    @accepted_schema(request=None, responses={409: ErrorSerializer})
    @action(detail=True, methods=["post"])
    def sync(self, request, pk=None):
        try:
            job = request_sync(self.get_object(), origin=Job.Origin.API, owner=request.user)
        except JobError as e:
            raise Conflict(str(e)) from None
        return accepted(job)

    @extend_schema(request=FetchCARequestSerializer, responses=CertificateSerializer)
    @action(detail=False, methods=["post"], url_path="fetch-ca")
    def fetch_ca(self, request):
        """Fetch an engine's CA without verifying it: show the fingerprint to a person before storing it."""
        if not isinstance(request.data, dict) or not isinstance(request.data.get("api_url", ""), str):
            raise serializers.ValidationError({"api_url": ['Send an object: {"api_url": "engine.example.com"}.']})
        try:
            url, _ = normalize_api_url(request.data.get("api_url", ""))
            cert = fetch_ca_certificate(url)
        except ValueError as e:
            raise serializers.ValidationError({"api_url": [str(e)]}) from None
        except EngineError as e:
            raise serializers.ValidationError({"api_url": [str(e)]}) from None
        return Response(
            {
                "api_url": url,
                "ca_certificate": cert.pem,
                "subject": cert.subject,
                "fingerprint_sha256": cert.fingerprint,
            }
        )


class HostViewSet(mixins.UpdateModelMixin, viewsets.ReadOnlyModelViewSet):
    queryset = models.Host.objects.select_related("cluster").order_by("name", "pk")
    serializer_class = HostSerializer
    role_rules = {"read": roles.VIEW, "write": roles.ADMINISTER, "test_ssh": roles.ADMINISTER}
    filterset_fields = ["name", "manager", "cluster", "status"]
    search_fields = ["name", "address"]

    def perform_update(self, serializer):
        # Write-only secrets: an omitted or empty value keeps what is stored.
        for secret in ("ssh_private_key", "ssh_password"):
            if not serializer.validated_data.get(secret):
                serializer.validated_data.pop(secret, None)
        host = serializer.save()
        record_request(self.request, action="host_changed", target=host, fields=sorted(serializer.validated_data))
        if serializer.validated_data.get("ssh_host_key") == "":
            record_request(self.request, action="host_key_forgotten", target=host)

    @extend_schema(request=None, responses=SSHTestSerializer)
    @action(detail=True, methods=["post"], url_path="test-ssh")
    def test_ssh(self, request, pk=None):
        result = test_ssh(self.get_object())
        return Response({"ok": result.ok, "message": result.message})


class ProxyVMSerializer(serializers.ModelSerializer):
    vm = serializers.PrimaryKeyRelatedField(queryset=models.VM.objects.all(), help_text="the VM's id in this inventory")
    vm_name = serializers.CharField(source="vm.name", read_only=True)
    cluster = serializers.CharField(source="vm.cluster.name", read_only=True, allow_null=True, default=None)
    node = serializers.CharField(
        source="node_id",
        required=False,
        allow_blank=True,
        help_text="the node inside it; default: the one that says so",
    )

    class Meta:
        model = models.ProxyVM
        fields = [
            "id",
            "vm",
            "vm_name",
            "cluster",
            "node",
            "device_dir",
            "interface",
            "max_attached",
            "enabled",
            "created",
        ]
        read_only_fields = ["created"]

    def create(self, validated_data):
        node = validated_data.pop("node_id", "")
        try:
            return mark_proxy(node=node, **validated_data)
        except ProxyError as e:
            raise serializers.ValidationError(e.fields) from None

    def update(self, proxy, validated_data):
        if "vm" in validated_data and validated_data["vm"] != proxy.vm or "node_id" in validated_data:
            raise serializers.ValidationError(
                {"vm": "A proxy VM's VM and node stay as marked: remove it and mark the other VM."}
            )
        for name, value in validated_data.items():
            setattr(proxy, name, value)
        try:
            proxy.full_clean(validate_unique=False)
        except DjangoValidationError as e:
            raise serializers.ValidationError(e.message_dict) from None
        proxy.save()
        return proxy


class ProxyVMViewSet(AuditedModelViewSet, viewsets.ModelViewSet):
    """Proxy VMs of disk attachment backups: a VM with one of our nodes inside, per cluster."""

    audit_name = "proxy"
    queryset = models.ProxyVM.objects.select_related("vm__cluster").order_by("vm__name")
    serializer_class = ProxyVMSerializer
    role_rules = READ_ONLY
    filterset_fields = ["vm", "node", "enabled"]


router = routers.SimpleRouter()
router.register("managers", ManagerViewSet, basename="manager")
router.register("proxies", ProxyVMViewSet, basename="proxy")
router.register("datacenters", _viewset(models.DataCenter, DataCenterSerializer, ["manager"]), basename="datacenter")
router.register("clusters", _viewset(models.Cluster, ClusterSerializer, ["manager", "data_center"]), basename="cluster")
router.register("hosts", HostViewSet, basename="host")
router.register(
    "storagedomains",
    _viewset(models.StorageDomain, StorageDomainSerializer, ["manager", "data_center", "type", "storage_kind"]),
    basename="storagedomain",
)
router.register("tags", _viewset(models.Tag, TagSerializer, ["manager"]), basename="tag")
router.register(
    "disks",
    _viewset(models.Disk, DiskSerializer, DiskFilter),
    basename="disk",
)
