"""Browsing sessions through the API (`/api/v1/file-sessions/`): list and read them, list a folder,
download a file or a folder, put files back into a VM, close. Guest files are sensitive: reading
them needs the operate role, as restoring does."""

import uuid
from datetime import UTC, datetime

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions, mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from core import roles
from core.api import accepted, accepted_schema
from core.audit import record_request
from inventory.models import VM
from jobs.models import Job
from recovery.file_views import download_response, query_path, shown
from recovery.files import browse, sessions
from recovery.files import tree as trees
from recovery.files.errors import FilesError, NotFound
from recovery.files.putback import request_put_back
from recovery.models import FileSession


def refused(error: FilesError) -> exceptions.APIException:
    """The API's answer to what recovery.files refused: 404 for a path that is not there, else 400,
    with its message (the one error body, core.api)."""
    if isinstance(error, NotFound):
        return exceptions.NotFound(str(error))
    return serializers.ValidationError({"non_field_errors": [str(error)]})


class FilesystemSerializer(serializers.Serializer):
    key = serializers.CharField(help_text='its first component in paths: "disk" (the whole disk), "p2", "vg_db01-root"')
    where = serializers.CharField(help_text='in words: "partition 2", "logical volume root of volume group ..."')
    type = serializers.CharField(help_text="ext4, xfs, btrfs, vfat, ntfs...; empty when none is recognized")
    label = serializers.CharField(default="")
    uuid = serializers.CharField(default="")
    bytes = serializers.IntegerField(allow_null=True, help_text="its size; null when it cannot be opened")
    used = serializers.IntegerField(allow_null=True, help_text="bytes in use; null when it cannot be opened")
    problem = serializers.CharField(default="", help_text="why it cannot be browsed; empty when it can")


class SessionDiskSerializer(serializers.Serializer):
    alias = serializers.CharField()
    disk_id = serializers.CharField(help_text="the engine's disk id")
    size = serializers.IntegerField(help_text="virtual size in bytes")
    problem = serializers.CharField(default="", help_text="why nothing on it can be browsed; empty otherwise")
    filesystems = FilesystemSerializer(many=True)


class FileSessionSerializer(serializers.ModelSerializer):
    vm = serializers.CharField(source="point.vm.name", read_only=True, allow_null=True, help_text="the backup's VM")
    closes_at = serializers.DateTimeField(
        read_only=True, allow_null=True, help_text="when it closes if nobody uses it (open), or when it closed"
    )
    disks = SessionDiskSerializer(many=True, read_only=True)

    class Meta:
        model = FileSession
        fields = [
            "id",
            "point",
            "vm",
            "node",
            "status",
            "who",
            "origin",
            "opened",
            "last_used",
            "closes_at",
            "closed",
            "close_reason",
            "error",
            "disks",
        ]
        read_only_fields = fields


class PlaceQuerySerializer(serializers.Serializer):
    disk = serializers.CharField(
        required=False, allow_blank=True, default="", help_text="alias or engine id; default the first (boot) disk"
    )
    path = serializers.CharField(
        required=False,
        default="/",
        help_text='"/" lists the disk\'s filesystems; "/p2/etc" is /etc of the filesystem whose key is p2',
    )


class LsQuerySerializer(PlaceQuerySerializer):
    page = serializers.IntegerField(required=False, min_value=1, default=1)
    per_page = serializers.IntegerField(
        required=False, min_value=1, max_value=trees.MAX_PER_PAGE, default=trees.PER_PAGE
    )
    search = serializers.CharField(
        required=False, allow_blank=True, default="", help_text="only names holding this (any case)"
    )


class EntrySerializer(serializers.Serializer):
    name = serializers.CharField(help_text="as the guest wrote it (bytes that are not UTF-8 shown as U+FFFD)")
    kind = serializers.ChoiceField(choices=["file", "dir", "symlink", "other"])
    size = serializers.IntegerField(help_text="bytes, for files; 0 otherwise")
    mtime = serializers.DateTimeField(help_text="its modification time")
    mode = serializers.IntegerField(allow_null=True, help_text="permission bits (420 is 0644); null on FAT")
    mode_text = serializers.CharField(help_text='as ls -l shows it: "-rw-r--r--"; empty on FAT')
    uid = serializers.IntegerField(allow_null=True)
    gid = serializers.IntegerField(allow_null=True)
    target = serializers.CharField(help_text="a symbolic link's target (links are never followed); empty otherwise")


class ListingSerializer(serializers.Serializer):
    disk = serializers.CharField(help_text="the disk's alias")
    path = serializers.CharField()
    filesystems = FilesystemSerializer(many=True, help_text='at "/": the disk\'s filesystems (entries is empty)')
    entries = EntrySerializer(many=True, help_text="a page of the folder's entries, by name")
    total = serializers.IntegerField(help_text="entries of the folder (that hold `search`)")
    page = serializers.IntegerField()
    pages = serializers.IntegerField()


class PutBackSerializer(serializers.Serializer):
    disk = serializers.CharField(required=False, allow_blank=True, default="", help_text="alias or engine id")
    paths = serializers.ListField(
        child=serializers.CharField(),
        min_length=1,
        help_text='files or folders of the disk, as ls names them: "/p2/etc"',
    )
    vm = serializers.CharField(
        required=False, allow_blank=True, default="", help_text="name or engine id of the VM; default the backup's own"
    )
    target = serializers.CharField(
        required=False, allow_blank=True, default="", help_text="a folder in the VM; empty: each to its original place"
    )
    overwrite = serializers.BooleanField(default=False, help_text="overwrite files that exist in the VM")


def _entry(entry: trees.Entry) -> dict:
    return {
        "name": shown(entry.name),
        "kind": entry.kind,
        "size": entry.size,
        "mtime": datetime.fromtimestamp(entry.mtime, tz=UTC),
        "mode": entry.mode,
        "mode_text": entry.mode_text,
        "uid": entry.uid,
        "gid": entry.gid,
        "target": shown(entry.target),
    }


BINARY = OpenApiResponse(
    OpenApiTypes.BINARY, description="the file as it is, or the folder as a tar (a zip on NTFS and FAT)"
)


class FileSessionViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Browsing sessions: backups opened on a node for their files (open one with POST
    /api/v1/backups/{id}/files/). A session is served by the node that holds it open."""

    queryset = FileSession.objects.select_related("point__vm").order_by("-opened")
    serializer_class = FileSessionSerializer
    role_rules = {"read": roles.OPERATE, "write": roles.OPERATE}
    filterset_fields = ["status", "node", "point"]

    def _place_query(self, serializer_class):
        query = serializer_class(data=self.request.query_params)
        query.is_valid(raise_exception=True)
        data = dict(query.validated_data)
        if "path" in self.request.query_params:
            data["path"] = query_path(self.request)  # the guest's bytes kept (see recovery.file_views)
        return data

    @extend_schema(parameters=[LsQuerySerializer], responses={200: ListingSerializer})
    @action(detail=True, methods=["get"], filter_backends=[], pagination_class=None)
    def ls(self, request, pk=None):
        """A folder's page of entries, or at "/" the disk's filesystems."""
        session = self.get_object()
        query = self._place_query(LsQuerySerializer)
        try:
            where, found = browse.list_place(
                session,
                disk=query["disk"] or None,
                path=query["path"],
                page=query["page"],
                per_page=query["per_page"],
                search=query["search"],
            )
        except FilesError as e:
            raise refused(e) from None
        body = {"disk": where.disk["alias"], "path": shown(where.path), "filesystems": [], "entries": []}
        if where.fs is None:
            body |= {"filesystems": found, "total": len(found), "page": 1, "pages": 1}
        else:
            body |= {
                "entries": [_entry(e) for e in found.entries],
                "total": found.total,
                "page": found.page,
                "pages": found.pages,
            }
        return Response(ListingSerializer(body).data)

    @extend_schema(
        parameters=[PlaceQuerySerializer],
        responses={
            (200, "application/octet-stream"): BINARY,
            (200, "application/x-tar"): BINARY,
            (200, "application/zip"): BINARY,
        },
    )
    @action(detail=True, methods=["get"], filter_backends=[], pagination_class=None)
    def download(self, request, pk=None):
        """A file as it is, or a folder as an archive whose members keep their paths in the guest;
        streamed."""
        session = self.get_object()
        query = self._place_query(PlaceQuerySerializer)
        try:
            found = browse.download(session, disk=query["disk"] or None, path=query["path"])
        except FilesError as e:
            raise refused(e) from None
        record_request(
            request,
            action="files_downloaded",
            target=session.point,
            session=session.pk,
            disk=session.disk(query["disk"] or None)["alias"],
            path=shown(query["path"]),
            guest_path=shown(found.guest_path),
        )
        return download_response(found)

    @accepted_schema(request=PutBackSerializer)
    @action(detail=True, methods=["post"], serializer_class=PutBackSerializer, filter_backends=[])
    def put(self, request, pk=None):
        """Copy files or folders back into a running VM over its policy's guest SSH (a job)."""
        session = self.get_object()
        data = PutBackSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        asked = data.validated_data
        try:
            vm = self._vm(session, asked["vm"])
            job = request_put_back(
                session=session,
                vm=vm,
                disk=asked["disk"] or None,
                paths=asked["paths"],
                target=asked["target"],
                overwrite=asked["overwrite"],
                origin=Job.Origin.API,
                owner=request.user,
            )
        except FilesError as e:
            raise refused(e) from None
        record_request(
            request,
            action="files_put_back",
            target=session.point,
            session=session.pk,
            vm=vm.name,
            paths=[shown(path) for path in asked["paths"]],
            into=asked["target"] or "their places",
            overwrite=asked["overwrite"],
            job=job.pk,
        )
        return accepted(job)

    @staticmethod
    def _vm(session: FileSession, name: str) -> VM:
        if session.point is None:
            raise FilesError(f"The backup of browsing session {session.pk} was deleted: nothing can be put back.")
        own = session.point.vm
        if not name or name in (own.name, str(own.engine_id)):
            return own
        vms = VM.objects.filter(manager=own.manager_id)
        try:
            found = vms.filter(engine_id=uuid.UUID(name)).first()
        except ValueError:
            found = vms.filter(name=name).first()
        if found is None:
            raise FilesError(f"Manager {own.manager} has no VM {name}.")
        return found

    @extend_schema(responses={204: None})
    def destroy(self, request, pk=None):
        """Close the session: its mounts, devices and processes go, the backup is no longer held."""
        session = self.get_object()
        try:
            closed = sessions.close_session(session, reason=f"closed by {request.user.get_username()}")
        except FilesError as e:
            raise refused(e) from None
        if closed:
            record_request(request, action="files_session_closed", target=session.point, session=session.pk)
        return Response(status=status.HTTP_204_NO_CONTENT)
