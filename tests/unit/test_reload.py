"""The import path a running previous release loads on reload (flowforge.app)."""

from __future__ import annotations


def test_the_import_path_a_previous_release_reloads_from_still_works() -> None:
    """A running API of the previous release loads ``flowforge.app.create_app`` (and its
    gunicorn error page the envelope's helpers) from the new package on reload."""
    import flowforge.app as old_path
    from flowforge.api import app, envelope

    assert old_path.create_app is app.create_app
    for name in ("ERROR_CODES", "REQUEST_ID_HEADER", "error_body", "request_id_from"):
        assert getattr(old_path, name) is getattr(envelope, name)
