"""The web view's error pages and token check, on its ASGI app alone (no supervisor)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("starlette")
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.testclient import TestClient

from lattice_workers.errors import LatticeError
from lattice_workers.web._app import WebView


def app_raising(error: LatticeError, tmp_path: Path) -> tuple[TestClient, str]:
    view = WebView(tmp_path, "ipc:///nonexistent", token="t0ken")

    async def fails(request: Request) -> Response:
        raise error

    app = Starlette(routes=[Route("/", view.guarded(fails))])
    return TestClient(app), view.token


@pytest.mark.parametrize(
    ("code", "status", "shown"),
    [("NOT_FOUND", 404, "NOT_FOUND"), ("ALREADY_RUNNING", 409, "ALREADY_RUNNING"),
     ("A_NEW_CODE", 500, "INTERNAL")],  # LatticeError reads an unknown code as INTERNAL
)
def test_an_error_is_a_page_with_its_code_and_a_matching_status(
    code: str, status: int, shown: str, tmp_path: Path
) -> None:
    client, token = app_raising(LatticeError(code, "what went wrong"), tmp_path)
    page = client.get(f"/?token={token}")
    assert page.status_code == status
    assert f"<strong>{shown}</strong>: what went wrong" in page.text


def test_no_token_no_page(tmp_path: Path) -> None:
    client, _ = app_raising(LatticeError("NOT_FOUND", "x"), tmp_path)
    assert client.get("/").status_code == 403
    assert client.get("/?token=wrong").status_code == 403
