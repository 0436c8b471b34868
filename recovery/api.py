"""Restores through the API: `POST /api/v1/backups/{id}/restore/` beside the repository's backups;
a backup opened for its files (`POST /api/v1/backups/{id}/files/`), then browsed, downloaded and put
back through `/api/v1/file-sessions/`; a backup booted as a VM from the backup itself
(`POST /api/v1/backups/{id}/instant-restore/`, or proven to boot with `.../prove/`), then migrated or
discarded through `/api/v1/instant-restores/` (recovery/instant_api.py)."""

from drf_spectacular.utils import extend_schema
from rest_framework import routers, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from core import roles
from core.api import accepted, accepted_schema
from core.audit import record_request
from jobs.models import Job
from ovirt.errors import EngineError
from ovirt.vms import VM_NAME_RULE, vm_name_problem
from recovery import instant_api
from recovery.file_api import FileSessionSerializer, FileSessionViewSet, refused
from recovery.files import sessions
from recovery.files.errors import FilesError
from recovery.instant.errors import InstantError
from recovery.instant.workflow import proof_name, request_instant_restore
from recovery.models import InstantRestore
from recovery.restore import NameTaken, check_new_vm_name, new_vm_name, request_restore
from recovery.ssh_restore import TRANSFERS
from repository.models import BackupPoint


def cannot_ask(error: EngineError) -> serializers.ValidationError:
    """The engine did not answer whether the name is free: 400 as the wizard says it (not a field's
    fault), as the API answers every engine that cannot be asked (the managers' fetch-ca)."""
    return serializers.ValidationError({"non_field_errors": [str(error)]})


class RestoreRequestSerializer(serializers.Serializer):
    name = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        help_text=f"name of the new VM (whole-VM restore, or import_vm): {VM_NAME_RULE}; no VM on the engine may "
        "have it, unless replace (checked before anything is queued: 400 when one has)",
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
    role_rules = {
        "read": roles.VIEW,
        "write": roles.OPERATE,
        "restore": roles.OPERATE,
        "files": roles.OPERATE,
        "instant_restore": roles.OPERATE,
        "prove": roles.OPERATE,
    }

    @accepted_schema()
    @action(detail=True, methods=["post"], serializer_class=RestoreRequestSerializer)
    def restore(self, request, pk=None):
        data = RestoreRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        asked = data.validated_data
        point = self.get_object()
        self._check_new_name(point, asked)
        try:
            job = request_restore(point=point, origin=Job.Origin.API, owner=request.user, **asked)
        except ValueError as e:
            raise serializers.ValidationError({"non_field_errors": [str(e)]}) from None
        record_request(request, action="restore_requested", target=point, job=job.pk)
        return accepted(job)

    @staticmethod
    def _check_new_name(point: BackupPoint, asked: dict) -> None:
        """The name of the VM the restore makes, as the restore wizard checks it: one the engine takes,
        and free on the engine unless replace (the VM down). An import from an export domain replaces
        no VM of the engine (its replace is the domain's copy)."""
        named = new_vm_name(
            name=asked["name"],
            attach_to=asked["attach_to"],
            floating=asked["floating"],
            export_domain=asked["export_domain"],
            import_vm=asked["import_vm"],
        )
        if not named:
            return
        problem = vm_name_problem(named)
        if problem:
            raise serializers.ValidationError({"name": [problem]})
        how_to_replace = "" if asked["export_domain"] else 'send "replace": true'
        try:
            check_new_vm_name(point.vm.manager, named, replace=asked["replace"], how_to_replace=how_to_replace)
        except NameTaken as e:
            raise serializers.ValidationError({"name": [str(e)]}) from None
        except EngineError as e:
            raise cannot_ask(e) from None

    @extend_schema(request=None, responses={201: FileSessionSerializer})
    @action(detail=True, methods=["post"], serializer_class=FileSessionSerializer)
    def files(self, request, pk=None):
        """Open the backup for its files on this node: a browsing session (its disks and filesystems),
        closed with DELETE /api/v1/file-sessions/{id}/ or when unused for FILES_IDLE_TIMEOUT."""
        point = self.get_object()
        try:
            session = sessions.open_session(
                point=point, who=request.user.get_username(), origin=Job.Origin.API, user=request.user
            )
        except FilesError as e:
            raise refused(e) from None
        record_request(request, action="files_session_opened", target=point, session=session.pk, node=session.node)
        return Response(FileSessionSerializer(session).data, status=status.HTTP_201_CREATED)

    @instant_api.accepted_schema(request=instant_api.InstantRequestSerializer)
    @action(
        detail=True,
        methods=["post"],
        url_path="instant-restore",
        serializer_class=instant_api.InstantRequestSerializer,
    )
    def instant_restore(self, request, pk=None):
        """Boot the backup as a VM straight from the backup (an instant restore job): served to the
        engine over NFS by the node holding it, running within minutes whatever its size. The backup
        is pinned (not deleted, not pruned) until the VM is migrated or discarded."""
        point = self.get_object()
        data = instant_api.InstantRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        # The name free on the engine, as the restore wizard checks it: before a share is served and a
        # storage domain made for a VM the engine would refuse to register.
        try:
            check_new_vm_name(point.vm.manager, data.validated_data["name"])
        except NameTaken as e:
            raise serializers.ValidationError({"name": [str(e)]}) from None
        except EngineError as e:
            raise cannot_ask(e) from None
        return self._boot(request, point, **data.validated_data)

    @instant_api.accepted_schema(request=instant_api.ProveRequestSerializer)
    @action(detail=True, methods=["post"], serializer_class=instant_api.ProveRequestSerializer)
    def prove(self, request, pk=None):
        """Prove the backup boots (a restore proof job): booted without network, waited for until up and
        for its guest agent's answer, then discarded; the answer and the time to boot are recorded."""
        point = self.get_object()
        data = instant_api.ProveRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return self._boot(
            request,
            point,
            name=proof_name(point),
            cluster=data.validated_data["cluster"],
            purpose=InstantRestore.Purpose.PROOF,
        )

    @staticmethod
    def _boot(request, point: BackupPoint, **asked):
        try:
            instant, job = request_instant_restore(
                point=point, origin=Job.Origin.API, owner=request.user, who=request.user.get_username(), **asked
            )
        except InstantError as e:
            raise instant_api.refused(e) from None
        proof = instant.purpose == InstantRestore.Purpose.PROOF
        action = "restore_proof_requested" if proof else "instant_restore_requested"
        record_request(request, action=action, target=point, job=job.pk, instant=instant.pk)
        return instant_api.accepted_instant(request, job, instant)


router = routers.SimpleRouter()
# Same basename as the backups themselves, so the route is named as an action of theirs: "backup-restore".
router.register("backups", RestoreViewSet, basename="backup")
router.register("file-sessions", FileSessionViewSet, basename="file-session")
router.register("instant-restores", instant_api.InstantRestoreViewSet, basename="instant-restore")
