"""Engine errors in words: what ovirtsdk4 says when the engine's web server answers for it."""

import ovirtsdk4 as sdk

from ovirt.errors import engine_trouble, failure_words


def test_it_words_an_html_error_page_in_place_of_the_api():
    # ovirtsdk4's own message for Apache's 503 page (as the simulator's fail_requests serves it).
    error = sdk.Error("The response content type 'text/html; charset=iso-8859-1' isn't the expected XML")
    assert failure_words(error) == (
        "the engine's web server answered with an error page, not the API (is the engine restarting?)"
    )
    assert engine_trouble(error) == "failed"
