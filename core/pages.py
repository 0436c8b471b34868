"""One way list pages paginate: a page of rows and the query string its links keep."""

from django.core.paginator import Page, Paginator
from django.http import HttpRequest

PAGE_SIZE = 100


def paginate(request: HttpRequest, rows, *, per_page: int = PAGE_SIZE) -> tuple[Page, str]:
    """The page `?page=` names (the last for a number past it, the first for anything else), and
    the request's other parameters for the page links (templates/partials/pages.html)."""
    page = Paginator(rows, per_page).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return page, query.urlencode()
