"""One way list pages paginate: a page of rows and the query string its links keep."""

from django.core.paginator import Page, Paginator
from django.http import Http404, HttpRequest

PAGE_SIZE = 100


class NoSuchPage(Http404):
    """A list page that does not exist; the 404 page says why (core.api.not_found)."""


def paginate(request: HttpRequest, rows, *, per_page: int = PAGE_SIZE) -> tuple[Page, str]:
    """The page `?page=` names, and the request's other parameters for the page links
    (templates/partials/pages.html). A page that is not a number from 1, or past the last, is a 404
    saying so (the API's lists answer the same), never another page shown in its place."""
    paginator = Paginator(rows, per_page)
    asked = request.GET.get("page", "1")
    if not asked.isascii() or not asked.isdigit() or int(asked) < 1:
        raise NoSuchPage(f"There is no page {asked!r}: pages are numbered from 1.")
    if int(asked) > paginator.num_pages:
        last = paginator.num_pages
        raise NoSuchPage(f"There is no page {asked}: this list has {last} {'page' if last == 1 else 'pages'}.")
    query = request.GET.copy()
    query.pop("page", None)
    return paginator.page(int(asked)), query.urlencode()
