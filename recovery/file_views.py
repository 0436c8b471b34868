"""The pages of file-level restore: a backup opened for its files, browsed, downloaded, put back
into its VM, closed. Everything here is presentation over recovery.files."""

from datetime import UTC, datetime
from urllib.parse import parse_qs, quote, unquote, urlencode

from django.conf import settings
from django.contrib import messages
from django.http import StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import content_disposition_header, url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from core import roles
from core.audit import record_request
from jobs.models import Job
from recovery.files import browse, sessions
from recovery.files import tree as trees
from recovery.files.errors import FilesError, NotFound
from recovery.files.putback import request_put_back
from recovery.files.tree import shown
from recovery.models import FileSession
from repository.models import BackupPoint

CLOSED_SHOWN = 50  # closed sessions on the list, newest first


# ----- names and paths from the guest --------------------------------------------------------
# A guest's file names are bytes; Python holds those that are not UTF-8 with surrogate escapes.
# Pages show them with U+FFFD and carry them in URLs and form values percent-encoded, byte for byte,
# so such a file can still be listed, downloaded and put back.


def quoted(path: str) -> str:
    return quote(path, safe="/", errors="surrogateescape")


def unquoted(value: str) -> str:
    return unquote(value, errors="surrogateescape")


def query_path(request) -> str:
    """The `path` parameter, its bytes kept as the guest's (request.GET would replace non-UTF-8 ones);
    the search form sends it percent-encoded as `qpath` (a form would encode its % signs again)."""
    if "qpath" in request.GET:
        return unquoted(request.GET["qpath"])
    raw = request.META.get("QUERY_STRING", "").encode("latin-1", "replace").decode("utf-8", "surrogateescape")
    values = parse_qs(raw, errors="surrogateescape").get("path")
    return values[-1] if values else "/"


def download_response(download: browse.Download) -> StreamingHttpResponse:
    """A file as it is, a folder as its archive: streamed as an attachment (the name in RFC 5987's
    filename* when it is not plain ASCII); a file's length is known, an archive's is not."""
    response = StreamingHttpResponse(download.chunks, content_type=download.content_type)
    response["Content-Disposition"] = content_disposition_header(True, shown(download.filename))
    if download.size is not None:
        response["Content-Length"] = str(download.size)
    response["X-Content-Type-Options"] = "nosniff"
    return response


# ----- opening and closing ------------------------------------------------------------------------


def _back(request, default: str) -> str:
    """Where a form came from (its `next`), if it is this site's; else `default`."""
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(target, {request.get_host()}, require_https=request.is_secure()):
        return target
    return default


@require_POST
@roles.role_required(roles.OPERATE)
def point_files(request, pk):
    """Open the backup for its files (the "Browse files" button), then show them."""
    point = get_object_or_404(BackupPoint.objects.select_related("vm", "destination"), pk=pk)
    try:
        session = sessions.open_session(
            point=point, who=request.user.get_username(), origin=Job.Origin.PAGE, user=request.user
        )
    except FilesError as e:
        messages.error(request, str(e))
        return redirect(_back(request, reverse("point-list")))
    record_request(request, action="files_session_opened", target=point, session=session.pk, node=session.node)
    return redirect("files-session", session.pk)


@require_POST
@roles.role_required(roles.OPERATE)
def session_close(request, pk):
    session = get_object_or_404(FileSession.objects.select_related("point"), pk=pk)
    user = request.user.get_username()
    try:
        closed = sessions.close_session(session, reason=f"closed by {user}")
    except FilesError as e:
        messages.error(request, str(e))
        return redirect(_back(request, reverse("files-sessions")))
    if closed:
        record_request(request, action="files_session_closed", target=session.point, session=session.pk)
        messages.success(request, f"Browsing session {session.pk} closed: nothing of it stays on node {session.node}.")
    else:
        messages.info(request, f"Browsing session {session.pk} was closed already.")
    return redirect(_back(request, reverse("point-list")))


@roles.role_required(roles.OPERATE)
def session_list(request):
    """Open sessions first (oldest first), then the last closed ones."""
    rows = FileSession.objects.select_related("point__vm")
    opened = list(rows.open().order_by("opened"))
    closed = list(rows.exclude(pk__in=[s.pk for s in opened]).order_by("-opened")[:CLOSED_SHOWN])
    return render(
        request,
        "recovery/files_sessions.html",
        {"open_sessions": opened, "closed_sessions": closed, "here": settings.NODE_NAME},
    )


# ----- browsing ---------------------------------------------------------------------------------------


def _link(session: FileSession, disk: dict | None, path: str, **more) -> str:
    query = {"disk": disk["alias"]} if disk else {}
    query["path"] = path
    query.update({k: v for k, v in more.items() if v})
    return f"{reverse('files-session', args=[session.pk])}?{urlencode(query, errors='surrogateescape')}"


def _download_link(session: FileSession, disk: dict, path: str) -> str:
    query = urlencode({"disk": disk["alias"], "path": path}, errors="surrogateescape")
    return f"{reverse('files-download', args=[session.pk])}?{query}"


def _crumbs(session: FileSession, disk: dict, path: str) -> list[tuple[str, str]]:
    parts = trees.split_path(path)
    crumbs = [("/", _link(session, disk, "/"))]
    for n, part in enumerate(parts):
        crumbs.append((shown(part), _link(session, disk, "/" + "/".join(parts[: n + 1]))))
    return crumbs


def _rows(session: FileSession, disk: dict, folder: str, entries: list[trees.Entry]) -> list[dict]:
    rows = []
    for entry in entries:
        path = folder.rstrip("/") + "/" + entry.name
        rows.append(
            {
                "entry": entry,
                "name": shown(entry.name),
                "target": shown(entry.target),
                "value": quoted(path),
                "open": _link(session, disk, path) if entry.kind == "dir" else "",
                "download": _download_link(session, disk, path) if entry.kind in ("file", "dir") else "",
                "modified": datetime.fromtimestamp(entry.mtime, tz=UTC),
                "owner": f"{entry.uid}:{entry.gid}" if entry.uid is not None else "",
            }
        )
    return rows


def _paging(session: FileSession, disk: dict, path: str, listing: trees.Listing, search: str, per_page: int) -> dict:
    """Links to the folder's other pages; `path` is the folder's on the page (filesystem key first)."""

    def at(page: int) -> str:
        return _link(session, disk, path, q=search, page=page if page > 1 else None)

    first = (listing.page - 1) * per_page + 1 if listing.total else 0
    return {
        "first": f"{first:,}",
        "last": f"{min(listing.page * per_page, listing.total):,}",
        "total": f"{listing.total:,}",
        "first_link": at(1) if listing.page > 1 else "",
        "previous_link": at(listing.page - 1) if listing.page > 1 else "",
        "next_link": at(listing.page + 1) if listing.page < listing.pages else "",
        "last_link": at(listing.pages) if listing.page < listing.pages else "",
    }


def _number(value: str | None) -> int:
    try:
        return int(value or 1)
    except ValueError:
        raise FilesError(f"Page {value!r} is not a number.") from None


@roles.role_required(roles.OPERATE)
def session_page(request, pk):
    """/files/ID/?disk=ALIAS&path=/p2/etc&page=N&q=NAME: the disk's filesystems at "/", else a
    folder's page of entries."""
    session = get_object_or_404(FileSession.objects.select_related("point__vm", "point__policy"), pk=pk)
    context = {"session": session, "point": session.point, "disks": session.disks}
    if not session.is_open:
        return render(request, "recovery/files_session.html", context)
    path, search = query_path(request), request.GET.get("q", "").strip()
    context |= {"path": shown(path), "search": search}
    status = 200
    try:
        page = _number(request.GET.get("page"))
        disk = session.disk(request.GET.get("disk") or None)
        context |= {"disk": disk, "crumbs": _crumbs(session, disk, path), "download": ""}
        where, found = browse.list_place(session, disk=disk["alias"], path=path, page=page, search=search)
    except NotFound as e:
        context["error"], status = str(e), 404
    except FilesError as e:
        if context.get("disk") and context["disk"]["problem"] and not trees.split_path(path):
            context["filesystems"] = []  # what the disk holds instead, in the table's words
        else:
            context["error"], status = str(e), 400
    else:
        if where.fs is None:
            context["filesystems"] = [fs | {"link": _link(session, disk, "/" + fs["key"])} for fs in found]
        else:
            context |= {
                "fs": where.fs,
                "listing": found,
                "rows": _rows(session, disk, where.path, found.entries),
                "paging": _paging(session, disk, where.path, found, search, trees.PER_PAGE),
                "folder": quoted(where.path),
                "all_entries": _link(session, disk, where.path),
                "download": _download_link(session, disk, where.path),
            }
    context["here"] = request.get_full_path()
    return render(request, "recovery/files_session.html", context, status=status)


@roles.role_required(roles.OPERATE)
def session_download(request, pk):
    session = get_object_or_404(FileSession.objects.select_related("point"), pk=pk)
    disk, path = request.GET.get("disk") or None, query_path(request)
    try:
        download = browse.download(session, disk=disk, path=path)
    except FilesError as e:
        return render(
            request,
            "recovery/files_session.html",
            {"session": session, "point": session.point, "disks": session.disks, "error": str(e)},
            status=404 if isinstance(e, NotFound) else 400,
        )
    record_request(
        request,
        action="files_downloaded",
        target=session.point,
        session=session.pk,
        disk=session.disk(disk)["alias"],
        path=shown(path),
        guest_path=shown(download.guest_path),
    )
    return download_response(download)


@require_POST
@roles.role_required(roles.OPERATE)
def session_put_back(request, pk):
    """The ticked entries copied back into the backup's VM (a job); its page follows."""
    session = get_object_or_404(FileSession.objects.select_related("point__vm", "point__policy"), pk=pk)
    back = _back(request, reverse("files-session", args=[session.pk]))
    paths = [unquoted(value) for value in request.POST.getlist("path")]
    target, overwrite = request.POST.get("target", "").strip(), bool(request.POST.get("overwrite"))
    if session.point is None:
        messages.error(request, "The backup of this session was deleted: nothing can be put back.")
        return redirect(back)
    try:
        job = request_put_back(
            session=session,
            vm=session.point.vm,
            disk=request.POST.get("disk") or None,
            paths=paths,
            target=target,
            overwrite=overwrite,
            origin=Job.Origin.PAGE,
            owner=request.user,
        )
    except FilesError as e:
        messages.error(request, str(e))
        return redirect(back)
    record_request(
        request,
        action="files_put_back",
        target=session.point,
        session=session.pk,
        vm=session.point.vm.name,
        paths=[shown(p) for p in paths],
        into=target or "their places",
        overwrite=overwrite,
        job=job.pk,
    )
    return redirect("job-detail", job.pk)
