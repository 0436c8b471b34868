"""Back up a VM now through the API: `POST /api/v1/vms/{id}/backup/` beside the inventory's VMs."""

from rest_framework import routers, serializers, viewsets
from rest_framework.decorators import action

from core import roles
from core.api import Conflict, ErrorSerializer, accepted, accepted_schema
from core.audit import record_request
from inventory.models import VM
from jobs.errors import AlreadyActive
from jobs.models import Job
from repository.models import BackupDestination
from strategies.backup import request_backup
from strategies.registry import options_help


class BackupRequestSerializer(serializers.Serializer):
    strategy = serializers.CharField(required=False, allow_blank=True)
    type = serializers.ChoiceField(choices=["auto", "full", "incremental"], default="auto")
    destination = serializers.CharField(required=False, allow_blank=True, help_text="destination id or name")
    exclude = serializers.ListField(child=serializers.CharField(), required=False, default=list)
    options = serializers.DictField(
        child=serializers.JSONField(),
        required=False,
        default=dict,
        help_text="The strategy's own options by name (each strategy declares its own; another's is refused). "
        + options_help(),
    )

    def to_internal_value(self, data):
        # A field this request does not have is refused, not ignored: a strategy's option given beside
        # the fields (the old `netcat`) would otherwise be dropped without a word.
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError(
                    {
                        name: [
                            f"Unknown field; the fields are {', '.join(self.fields)}. A strategy's options "
                            f'go in options: {{"{name}": ...}}.'
                        ]
                        for name in unknown
                    }
                )
        return super().to_internal_value(data)


class VMBackupViewSet(viewsets.GenericViewSet):
    """Only the detail action below: the VMs themselves are listed by the dashboard's API."""

    queryset = VM.objects.all()
    serializer_class = BackupRequestSerializer
    role_rules = {"read": roles.VIEW, "write": roles.ADMINISTER, "backup": roles.OPERATE}

    @accepted_schema(responses={409: ErrorSerializer})
    @action(detail=True, methods=["post"], serializer_class=BackupRequestSerializer)
    def backup(self, request, pk=None):
        vm = self.get_object()
        data = BackupRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        destination = None
        if data.validated_data.get("destination"):
            ref = data.validated_data["destination"]
            destination = BackupDestination.objects.filter(**({"pk": ref} if ref.isdigit() else {"name": ref})).first()
            if destination is None:
                raise serializers.ValidationError({"destination": [f"No destination {ref!r}."]})
        try:
            job = request_backup(
                vm=vm,
                origin=Job.Origin.API,
                owner=request.user,
                strategy=data.validated_data.get("strategy") or None,
                type=data.validated_data["type"],
                destination=destination,
                exclude=data.validated_data["exclude"],
                options=data.validated_data["options"] or None,  # none: the policy's, with its strategy
            )
        except AlreadyActive as e:
            raise Conflict(str(e)) from None
        except ValueError as e:
            raise serializers.ValidationError({"non_field_errors": [str(e)]}) from None
        record_request(request, action="backup_requested", target=vm, job=job.pk, type=data.validated_data["type"])
        return accepted(job)


router = routers.SimpleRouter()
# Same basename as the VMs themselves, so the route is named as an action of theirs: "vm-backup".
router.register("vms", VMBackupViewSet, basename="vm")
