"""API endpoints that span apps: users and their roles, and VMs with their protection, RPO status and
last backup."""

import django_filters
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import mixins, routers, serializers, status, viewsets
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from core import roles
from core.audit import AuditedModelViewSet, record_request
from core.models import ApiToken, AuditEvent
from core.tokens import MAX_DAYS, issue_token, revoke_token
from dashboard.audit import AuditEventFilter
from inventory.api import HostKeyField
from inventory.models import VM
from policies import rpo
from policies.coverage import with_last_backup
from policies.models import Policy

User = get_user_model()


class RoleField(serializers.ChoiceField):
    """Written as a role; read as the role the user holds: null for none, or for a deactivated user."""

    def __init__(self, **kwargs):
        super().__init__(choices=roles.ROLE_CHOICES, allow_null=True, **kwargs)

    def get_attribute(self, user):
        return roles.role_of(user)


class UserSerializer(serializers.ModelSerializer):
    # Not required: a new user gets the least role unless asked (a forgotten field grants no admin).
    role = RoleField(required=False, help_text="viewer, operator or admin; a new user is a viewer unless given one")
    password = serializers.CharField(write_only=True, required=False, style={"input_type": "password"})

    class Meta:
        model = User
        fields = [
            "id",
            "username",
            "email",
            "first_name",
            "last_name",
            "is_active",
            "role",
            "password",
            "date_joined",
            "last_login",
        ]
        read_only_fields = ["id", "date_joined", "last_login"]

    def validate_role(self, value):
        if value is None:  # null is only how a user without access reads
            raise ValidationError(f"Choose a role: {', '.join(roles.ROLES)}.")
        return value

    def validate_password(self, value):
        try:
            validate_password(value)
        except DjangoValidationError as e:
            raise ValidationError(list(e.messages)) from None
        return value

    def validate(self, attrs):
        if self.instance is None and not attrs.get("password"):
            raise ValidationError({"password": ["A new user needs a password."]})
        if self.instance is not None and roles.removes_last_admin(
            self.instance,
            role=attrs.get("role", roles.role_of(self.instance)),
            is_active=attrs.get("is_active", self.instance.is_active),
        ):
            raise ValidationError({"non_field_errors": [roles.LAST_ADMIN]})
        return attrs

    @transaction.atomic
    def create(self, validated_data):
        role = validated_data.pop("role", roles.VIEWER)
        password = validated_data.pop("password")
        user = User.objects.create_user(password=password, **validated_data)
        roles.set_role(user, role)
        return user

    @transaction.atomic
    def update(self, instance, validated_data):
        role = validated_data.pop("role", None)
        password = validated_data.pop("password", None)
        for name, value in validated_data.items():
            setattr(instance, name, value)
        if password:
            instance.set_password(password)
        instance.save()
        if role:
            roles.set_role(instance, role)
        return instance


class UserViewSet(AuditedModelViewSet, viewsets.ModelViewSet):
    audit_name = "user"
    queryset = User.objects.order_by("username").prefetch_related("groups")
    serializer_class = UserSerializer
    role_rules = {"read": roles.ADMINISTER, "write": roles.ADMINISTER}
    filterset_fields = ["is_active", "username"]
    search_fields = ["username", "email", "first_name", "last_name"]

    @transaction.atomic  # the last-admin check and the change, one after another across requests
    def update(self, request, *args, **kwargs):
        return super().update(request, *args, **kwargs)

    @transaction.atomic
    def destroy(self, request, *args, **kwargs):
        # Deactivate instead of deleting: jobs and points keep their owner.
        user = self.get_object()
        if user == request.user:
            raise ValidationError({"non_field_errors": ["You cannot deactivate yourself."]})
        if roles.removes_last_admin(user, role=roles.role_of(user), is_active=False):
            raise ValidationError({"non_field_errors": [roles.LAST_ADMIN]})
        user.is_active = False
        user.save(update_fields=["is_active"])
        record_request(request, action="user_deactivated", target=user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ApiTokenSerializer(serializers.ModelSerializer):
    user = serializers.SlugRelatedField(slug_field="username", read_only=True)
    days = serializers.IntegerField(
        write_only=True,
        required=False,
        min_value=1,
        max_value=MAX_DAYS,
        help_text="How long the token lasts; API_TOKEN_DAYS when not given.",
    )

    class Meta:
        model = ApiToken
        fields = ["id", "user", "name", "prefix", "created", "expires", "last_used", "revoked", "state", "days"]
        read_only_fields = ["prefix", "created", "expires", "last_used", "revoked", "state"]


class NewApiTokenSerializer(ApiTokenSerializer):
    key = serializers.CharField(read_only=True, help_text="The token's key: shown in this answer only, never again.")

    class Meta(ApiTokenSerializer.Meta):
        fields = [*ApiTokenSerializer.Meta.fields, "key"]


class ApiTokenViewSet(
    mixins.CreateModelMixin, mixins.DestroyModelMixin, mixins.ListModelMixin, viewsets.GenericViewSet
):
    """A user's own API tokens (an admin sees everyone's). The key is in the answer to its creation only;
    DELETE revokes the token and keeps it listed."""

    serializer_class = ApiTokenSerializer
    role_rules = {"read": roles.VIEW, "write": roles.VIEW}
    filterset_fields = ["name", "user__username"]

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # the schema is made without a user
            return ApiToken.objects.none()
        tokens = ApiToken.objects.select_related("user")
        if roles.can(self.request.user, roles.ADMINISTER):
            return tokens
        return tokens.filter(user=self.request.user)

    @extend_schema(request=ApiTokenSerializer, responses={201: NewApiTokenSerializer})
    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        token, key = issue_token(
            user=request.user, name=serializer.validated_data["name"], days=serializer.validated_data.get("days")
        )
        record_request(request, action="token_created", target=token)
        # The only time the key is anywhere but in the client's hands: only its hash is stored.
        return Response(self.get_serializer(token).data | {"key": key}, status=status.HTTP_201_CREATED)

    def perform_destroy(self, instance):
        revoke_token(token=instance)
        record_request(self.request, action="token_revoked", target=instance, user=instance.user.username)


class CoverageSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    reason = serializers.CharField(help_text='"listed explicitly", or the rules that match, e.g. "tag production"')


class VMSerializer(serializers.ModelSerializer):
    guest_host_key = HostKeyField()
    tags = serializers.SlugRelatedField(many=True, read_only=True, slug_field="name")
    protected = serializers.BooleanField(read_only=True)
    policy = serializers.SerializerMethodField(
        help_text="The enabled policy that covers the VM (the higher priority one when several do), and why."
    )
    last_backup_status = serializers.CharField(
        read_only=True, allow_null=True, help_text="The newest backup point's status, whatever it is (running...)"
    )
    last_backup_time = serializers.DateTimeField(read_only=True, allow_null=True)
    # What the dashboard and the inventory page say (policies.rpo), so the API and the pages agree.
    rpo_status = serializers.ChoiceField(
        choices=list(rpo.LABELS.items()),
        read_only=True,
        help_text="ok: a good backup within the covering policy's RPO; stale: none that recent; failing: the last "
        "backup attempt failed; uncovered: no enabled policy covers the VM",
    )
    rpo_status_label = serializers.SerializerMethodField(help_text="rpo_status for people, as the pages say it")
    last_good_backup = serializers.DateTimeField(
        read_only=True, allow_null=True, help_text="When the newest complete backup point was taken"
    )
    last_attempt_status = serializers.CharField(
        read_only=True, allow_null=True, help_text="The newest backup job that ended succeeded or failed: which"
    )
    last_attempt_job = serializers.IntegerField(read_only=True, allow_null=True, help_text="That job's id")

    class Meta:
        model = VM
        fields = [
            "id",
            "manager",
            "engine_id",
            "name",
            "cluster",
            "host",
            "status",
            "guest_agent",
            "fqdn",
            "guest_address",
            "guest_host_key",
            "os_type",
            "memory_bytes",
            "cpu_cores",
            "tags",
            "protected",
            "policy",
            "last_backup_status",
            "last_backup_time",
            "rpo_status",
            "rpo_status_label",
            "last_good_backup",
            "last_attempt_status",
            "last_attempt_job",
            "missing_since",
            "synced",
        ]
        # Everything else is what the engine reports; only where to reach the guest is ours to set.
        read_only_fields = [f for f in fields if f not in ("guest_address", "guest_host_key")]

    def get_rpo_status_label(self, vm) -> str:
        return rpo.LABELS[vm.rpo_status]

    @extend_schema_field(CoverageSerializer(allow_null=True))
    def get_policy(self, vm) -> dict | None:
        if vm.covering_policy_id is None:
            return None
        names = self.context.get("policy_names")
        if names is None:
            names = self.context["policy_names"] = dict(Policy.objects.values_list("pk", "name"))
        return {"id": vm.covering_policy_id, "name": names.get(vm.covering_policy_id, ""), "reason": vm.coverage_reason}


class VMFilter(django_filters.FilterSet):
    tag = django_filters.CharFilter(field_name="tags__name")
    datacenter = django_filters.NumberFilter(field_name="cluster__data_center")
    protected = django_filters.BooleanFilter()
    last_backup_status = django_filters.CharFilter()
    rpo_status = django_filters.ChoiceFilter(choices=list(rpo.LABELS.items()), help_text="As the inventory's ?rpo=")
    missing = django_filters.BooleanFilter(field_name="missing_since", lookup_expr="isnull", exclude=True)

    class Meta:
        model = VM
        fields = ["name", "manager", "cluster", "host", "status", "guest_agent"]


class VMViewSet(mixins.UpdateModelMixin, viewsets.ReadOnlyModelViewSet):
    queryset = VM.objects.all()
    serializer_class = VMSerializer
    role_rules = {"read": roles.VIEW, "write": roles.ADMINISTER}

    filterset_class = VMFilter
    search_fields = ["name"]
    ordering_fields = ["name", "id"]

    def perform_update(self, serializer):
        vm = serializer.save()
        record_request(self.request, action="vm_changed", target=vm, fields=sorted(serializer.validated_data))
        if serializer.validated_data.get("guest_host_key") == "":
            record_request(self.request, action="host_key_forgotten", target=vm)

    def get_queryset(self):
        # Built per request: the protection rules come from the policies as they are now.
        return with_last_backup(rpo.rpo_status_of_vms(VM.objects.all())).prefetch_related("tags").order_by("name", "pk")


class AuditEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditEvent
        fields = [
            "id",
            "time",
            "actor",
            "actor_name",
            "source",
            "action",
            "target_type",
            "target_id",
            "target_name",
            "details",
            "remote_address",
        ]
        read_only_fields = fields


class AuditEventViewSet(viewsets.ReadOnlyModelViewSet):
    """The audit log, newest first: admins only, and read-only (no one edits or deletes it)."""

    queryset = AuditEvent.objects.order_by("-time", "-pk")
    serializer_class = AuditEventSerializer
    role_rules = {"read": roles.ADMINISTER, "write": roles.ADMINISTER}
    filterset_class = AuditEventFilter
    search_fields = ["actor_name", "target_name", "action"]
    ordering_fields = ["time", "id"]


router = routers.SimpleRouter()
router.register("users", UserViewSet, basename="user")
router.register("audit", AuditEventViewSet, basename="audit")
router.register("tokens", ApiTokenViewSet, basename="token")
router.register("vms", VMViewSet, basename="vm")
