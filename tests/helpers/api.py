"""What the HTTP API tests share: the one error shape they check."""

from __future__ import annotations


def error_of(response) -> dict:
    """The one error shape: {"error": {"code", "message"}}."""
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert "Traceback" not in body["error"]["message"]
    return body["error"]
