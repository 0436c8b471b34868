"""The filter backend every list of the API starts with (REST_FRAMEWORK's DEFAULT_FILTER_BACKENDS).

Apart from core.api: DRF's generic views read the backends when first imported, and core.api
imports them (through drf-spectacular)."""

from rest_framework import filters
from rest_framework.exceptions import ValidationError


class KnownQueryParams(filters.BaseFilterBackend):
    """A list's query parameter that nothing reads is refused (400), naming it and the known ones: a
    misspelt or missing filter (`?nmae=web01`) would otherwise answer the whole list as if filtered.
    First of the filter backends; only lists are checked (a detail answers one object)."""

    ALWAYS = ("format",)  # DRF's own: ?format=json, ?format=api

    def filter_queryset(self, request, queryset, view):
        if getattr(view, "action", None) != "list":
            return queryset
        known = known_query_params(request, queryset, view)
        unknown = sorted(set(request.query_params) - set(known))
        if unknown:
            names = ", ".join(sorted(known))
            raise ValidationError({name: [f"This list has no filter {name!r}; it takes: {names}."] for name in unknown})
        return queryset


def known_query_params(request, queryset, view) -> list[str]:
    """What the view's filter backends and pager read from a list's query string."""
    known = list(KnownQueryParams.ALWAYS)
    pager = getattr(view, "paginator", None)
    for attribute in ("page_query_param", "page_size_query_param", "limit_query_param", "offset_query_param"):
        if name := getattr(pager, attribute, None):
            known.append(name)
    for backend_class in getattr(view, "filter_backends", ()):
        backend = backend_class()
        if isinstance(backend, filters.SearchFilter):
            if backend.get_search_fields(view, request):
                known.append(backend.search_param)
        elif isinstance(backend, filters.OrderingFilter):
            known.append(backend.ordering_param)
        elif hasattr(backend, "get_filterset_class"):  # django-filter's
            filterset = backend.get_filterset_class(view, queryset)
            for name, found in (filterset.base_filters if filterset else {}).items():
                # A range filter reads name_min and name_max (name_after, name_before for dates).
                suffixes = getattr(found.field_class.widget, "suffixes", None) or [""]
                known += ["_".join(filter(None, (name, suffix))) for suffix in suffixes]
    return known


class SearchFilter(filters.SearchFilter):
    """DRF's ?search=, documented only where the view searches (has search_fields): elsewhere it is
    refused like any parameter the list does not read."""

    def get_schema_operation_parameters(self, view):
        return super().get_schema_operation_parameters(view) if getattr(view, "search_fields", None) else []
