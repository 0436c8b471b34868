"""API plumbing every app shares: the one error body."""

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import ProtectedError
from django.http import HttpResponse, JsonResponse
from django.views.defaults import page_not_found
from rest_framework import status
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


def exception_handler(exc, context):
    """Every API error has one body: {"error": {"status", "code", "message", "fields"}}.

    `fields` maps a field name to its messages for validation errors, so a client can show
    each message next to the field it names.
    """
    if isinstance(exc, DjangoValidationError):
        exc = ValidationError(detail=getattr(exc, "message_dict", None) or {"non_field_errors": exc.messages})
    if isinstance(exc, ProtectedError):
        exc = Conflict(protected_message(exc))
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
    return page_not_found(request, exception)


def accepted(job) -> Response:
    """The answer to a request that queued a job: 202 with the job to follow."""
    return Response({"job": job.pk, "status": job.status}, status=status.HTTP_202_ACCEPTED)


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
