"""API plumbing every app shares: the one error body, and a schema that documents it."""

from collections.abc import Callable

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import ProtectedError
from django.http import HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.defaults import page_not_found, permission_denied, server_error
from drf_spectacular import openapi
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from core.pages import NoSuchPage


def exception_handler(exc, context):
    """Every API error has one body: {"error": {"status", "code", "message", "fields"}}.

    `fields` maps a field name to its messages for validation errors, so a client can show
    each message next to the field it names.
    """
    if isinstance(exc, DjangoValidationError):
        exc = ValidationError(detail=getattr(exc, "message_dict", None) or {"non_field_errors": exc.messages})
    if isinstance(exc, ProtectedError):
        exc = Conflict(protected_message(exc))
    if any(is_failure(exc) for _, is_failure in QUEUE_CHECKS):
        # A job's hand-over to a broker that does not answer: the job is saved, and queued later.
        problem = queue_problem() or f"Jobs cannot be queued: the task broker did not answer ({exc})."
        return Response(error_body(503, "broker_unavailable", problem), status=status.HTTP_503_SERVICE_UNAVAILABLE)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    detail = response.data
    fields = {}
    if isinstance(detail, dict) and "detail" in detail and len(detail) == 1:
        message = str(detail["detail"])
        code = getattr(detail["detail"], "code", "error")
    else:
        fields = detail if isinstance(detail, dict) else {"non_field_errors": detail}
        first_field, first_errors = next(iter(fields.items()), ("", [""]))
        first = first_errors[0] if isinstance(first_errors, list) and first_errors else first_errors
        message = f"{first_field}: {first}" if first_field != "non_field_errors" else str(first)
        code = "invalid"
    response.data = error_body(response.status_code, code, message, fields)
    return response


def error_body(status_code: int, code: str, message: str, fields: dict | None = None) -> dict:
    return {"error": {"status": status_code, "code": code, "message": message, "fields": fields or {}}}


def not_found(request, exception=None) -> HttpResponse:
    """The site's 404 (handler404): under /api/ it is the API's error body, not a page.

    A URL no route matches never reaches DRF, e.g. /api/v1/vms/1.5e-3/ (an id is digits)."""
    if request.path.startswith("/api/"):
        return JsonResponse(error_body(404, "not_found", "Not found."), status=404)
    if isinstance(exception, NoSuchPage):
        context = {"request_path": request.path, "reason": str(exception)}
        return render(request, "404.html", context, status=404)
    return page_not_found(request, exception)


def forbidden(request, exception=None) -> HttpResponse:
    """The site's 403 (handler403) for a PermissionDenied raised outside DRF: the API's body under /api/."""
    if request.path.startswith("/api/"):
        return JsonResponse(error_body(403, "permission_denied", str(exception or "") or "Not allowed."), status=403)
    return permission_denied(request, exception)


def failed(request) -> HttpResponse:
    """The site's 500 (handler500): the API's body under /api/, else templates/500.html, which needs
    neither the database nor a request context (the failure may be the database's)."""
    if request.path.startswith("/api/"):
        return JsonResponse(error_body(500, "server_error", "The server failed; the error is in its log."), status=500)
    return server_error(request)


class ErrorDetailSerializer(serializers.Serializer):
    status = serializers.IntegerField(help_text="the HTTP status, repeated")
    code = serializers.CharField(help_text='"invalid" for validation errors, else e.g. "not_found", "conflict"')
    message = serializers.CharField(help_text="the first problem, in words for people")
    fields = serializers.DictField(
        child=serializers.JSONField(),
        help_text="field name: its messages (a list; nested objects for list or nested fields); empty otherwise",
    )


class ErrorSerializer(serializers.Serializer):
    """The body of every 4xx answer (exception_handler above)."""

    error = ErrorDetailSerializer()


class AcceptedJobSerializer(serializers.Serializer):
    """The body of a 202: a job was queued (or one already queued or running answers the request)."""

    job = serializers.IntegerField(help_text="the job's id: follow it at /api/v1/jobs/{job}/")
    status = serializers.CharField(help_text="the job's status: queued or running")


ERROR_DESCRIPTIONS = {
    400: "The request is invalid: the error body names the fields and why.",
    401: "No credentials, or a token or session that is not valid.",
    403: "Your role may not do this.",
    404: "No such object (or a page past the last).",
    409: "It cannot be done in the current state, e.g. backups still refer to it.",
    415: "The body is not in a media type the API takes (JSON, or a form).",
}


class AutoSchema(openapi.AutoSchema):
    """drf-spectacular's schema, with the error answers each operation can give, all with one body."""

    def error_statuses(self) -> list[int]:
        codes = [400, 401, 403]  # any input may be refused; every endpoint needs a login and a role
        if "{" in self.path or (self.method == "GET" and self._is_list_view()):
            codes.append(404)  # an unknown id; a page past the last
        if self.method == "DELETE":
            codes.append(409)  # what backups still refer to (ProtectedError)
        if self.method in ("POST", "PUT", "PATCH"):
            codes.append(415)  # a body that is not JSON (or a form)
        return codes

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        for code in self.error_statuses():
            error = OpenApiResponse(ErrorSerializer, description=ERROR_DESCRIPTIONS[code])
            responses.setdefault(str(code), self._get_response_for_code(error, str(code), direction=direction))
        return responses


# The job queue registers here (jobs.apps) why jobs cannot be queued now ("" when they can), and
# which errors of a job's hand-over to its broker mean that.
QUEUE_CHECKS: list[tuple[Callable[[], str], Callable[[BaseException], bool]]] = []


def register_queue_check(problem: Callable[[], str], *, is_failure: Callable[[BaseException], bool]) -> None:
    if (problem, is_failure) not in QUEUE_CHECKS:
        QUEUE_CHECKS.append((problem, is_failure))


def queue_problem() -> str:
    return next((text for problem, _ in QUEUE_CHECKS if (text := problem())), "")


def job_url(job) -> str:
    """Where the API shows a job: /api/v1/jobs/{id}/ (the route the jobs app registers)."""
    return reverse("api:job-detail", args=[job.pk])


def accepted(job, body: dict | None = None, *, location: str = "") -> Response:
    """The answer to a request that queued a job: 202 with the job to follow in Location (and in the
    body); 503 when the job is kept but its task cannot reach a worker now (the broker is down),
    saying so and naming the job. `body` replaces the default {"job", "status"}; `location` the job's URL."""
    if problem := queue_problem():
        message = f"{problem} Job {job.pk} is kept ({job.status}): follow it at {job_url(job)}."
        return Response(error_body(503, "broker_unavailable", message), status=status.HTTP_503_SERVICE_UNAVAILABLE)
    body = {"job": job.pk, "status": job.status} if body is None else body
    return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": location or job_url(job)})


LOCATION = OpenApiParameter(
    "Location",
    str,
    location=OpenApiParameter.HEADER,
    response=[202],
    description="the queued job's URL, /api/v1/jobs/{job}/: GET it until its status is final",
)


def accepted_schema(body=AcceptedJobSerializer, *, location: OpenApiParameter = LOCATION, responses=None, **more):
    """extend_schema for an action that queues a job: 202 with `body`, and the job's URL in the
    Location header (`location` for an action whose 202 points elsewhere)."""
    answers = {202: OpenApiResponse(body, description="Queued: follow the job at the URL in Location.")}
    return extend_schema(
        parameters=[location, *more.pop("parameters", [])], responses=answers | (responses or {}), **more
    )


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"


def protected_message(error: ProtectedError) -> str:
    """Why a row cannot be deleted, in words: what still refers to it."""
    objects = list(error.protected_objects)
    kind = objects[0]._meta.verbose_name_plural if len(objects) != 1 else objects[0]._meta.verbose_name
    return (
        f"It cannot be deleted: {len(objects)} {kind} still refer to it (for example {objects[0]}). "
        "Remove those first; backups are never removed as a side effect."
    )
