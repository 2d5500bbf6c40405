"""JSON logs on request: one line per request (id, method, route, status, duration), the id
in the ``X-Request-Id`` header, in problem documents and in error pages."""

from __future__ import annotations

import json
import logging
import re

import pytest

from datapass import create_app
from datapass.config import ConfigError
from datapass.operations.requestlog import JsonFormatter
from tests.conftest import base_config

HEX_ID = re.compile(r"[0-9a-f]{32}")


@pytest.fixture(autouse=True)
def loggers_enabled():
    """Alembic's ``fileConfig`` (tests/test_migrations.py, in this process) disables the
    loggers that existed then: the request log of a real server has no migration run before
    it."""
    for name in ("datapass", "datapass.requests"):
        logging.getLogger(name).disabled = False


@pytest.fixture
def json_app(backend, app_for_backend):
    url = app_for_backend(backend).config["DATABASE_URL"]
    return create_app(base_config(url, LOG_FORMAT="json"))


def _lines(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "datapass.requests"]


def test_one_json_line_per_request(json_app, caplog):
    caplog.set_level(logging.INFO, logger="datapass.requests")
    response = json_app.test_client().get("/healthz")
    [record] = _lines(caplog)
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "requête" and line["level"] == "INFO"
    assert line["method"] == "GET" and line["route"] == "/healthz" and line["status"] == 200
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    assert HEX_ID.fullmatch(line["request_id"])
    assert response.headers["X-Request-Id"] == line["request_id"]


def test_the_route_is_the_url_rule_not_the_path(json_app, caplog):
    caplog.set_level(logging.INFO, logger="datapass.requests")
    client = json_app.test_client()
    assert client.get("/jetons/987654").status_code == 302  # to the sign-in page
    assert client.get("/nulle-part/987654").status_code == 404
    routes = [r.route for r in _lines(caplog)]
    assert routes[0].startswith("/jetons/<") and "987654" not in routes[0]
    assert routes[1] is None


def test_the_request_id_of_a_trusted_proxy(json_app, caplog):
    caplog.set_level(logging.INFO, logger="datapass.requests")
    client = json_app.test_client()
    given = {"X-Request-Id": "lb-7f3a9c2e-0001"}
    # Without a trusted proxy, the header is anybody's: a new id.
    assert client.get("/healthz", headers=given).headers["X-Request-Id"] != "lb-7f3a9c2e-0001"
    json_app.config["TRUSTED_PROXIES"] = 1
    assert client.get("/healthz", headers=given).headers["X-Request-Id"] == "lb-7f3a9c2e-0001"
    for malformed in (
        "short",
        "a b c d e f g h",
        "x" * 129,
        "id\u00e9-0123456789",
        "-leading-dash",
    ):
        answered = client.get("/healthz", headers={"X-Request-Id": malformed})
        assert HEX_ID.fullmatch(answered.headers["X-Request-Id"])
    assert [r.request_id for r in _lines(caplog)][1] == "lb-7f3a9c2e-0001"


def test_request_id_in_problem_documents_and_the_log(json_app, caplog):
    caplog.set_level(logging.INFO, logger="datapass.requests")
    response = json_app.test_client().post("/api/v1/introspect", data={"token": "x"})
    assert response.status_code == 401
    body = response.get_json()
    assert body["request_id"] == response.headers["X-Request-Id"]
    [record] = _lines(caplog)
    assert record.request_id == body["request_id"] and record.status == 401
    assert record.route == "/api/v1/introspect"


def test_text_mode_adds_nothing_to_a_normal_response(client):
    assert "X-Request-Id" not in client.get("/healthz").headers


def test_request_id_in_problems_and_error_pages_in_text_mode(client):
    problem = client.get("/api/v1/nulle-part")
    assert problem.status_code == 404
    assert problem.get_json()["request_id"] == problem.headers["X-Request-Id"]
    assert HEX_ID.fullmatch(problem.headers["X-Request-Id"])
    page = client.get("/nulle-part")
    assert page.status_code == 404
    rid = page.headers["X-Request-Id"]
    assert HEX_ID.fullmatch(rid) and rid != problem.headers["X-Request-Id"]
    assert f"<code>{rid}</code>" in page.get_data(as_text=True)


def test_unexpected_error_page_and_log_carry_the_id(json_app, caplog):
    @json_app.route("/test-boom")
    def boom():
        raise RuntimeError("boom")

    from datapass import access

    access.public(boom)
    caplog.set_level(logging.INFO)
    page = json_app.test_client().get("/test-boom")
    assert page.status_code == 500
    rid = page.headers["X-Request-Id"]
    assert f"<code>{rid}</code>" in page.get_data(as_text=True)
    error = next(r for r in caplog.records if r.levelno == logging.ERROR)
    line = json.loads(JsonFormatter().format(error))
    assert line["request_id"] == rid and "RuntimeError: boom" in line["exception"]
    [request_line] = _lines(caplog)
    assert request_line.status == 500 and request_line.request_id == rid


def test_json_mode_formats_every_handler_and_refuses_an_unknown_format():
    create_app(base_config("sqlite://", LOG_FORMAT="json"))
    root = logging.getLogger()
    assert root.handlers and all(isinstance(h.formatter, JsonFormatter) for h in root.handlers)
    for handler in root.handlers:
        handler.setFormatter(logging.Formatter())
    with pytest.raises(ConfigError, match="DATAPASS_LOG_FORMAT"):
        create_app(base_config("sqlite://", LOG_FORMAT="xml"))
