"""The retraining loop's admin-API client: every failure a user can fix is one clear line."""

from __future__ import annotations

import httpx
import pytest

from ray_app.broker.embedded import free_port
from ray_app.errors import UserError
from ray_app.retraining.control import (
    AdminAuthError,
    HttpServiceControl,
    MissingSlot,
    ServiceUnreachable,
    SwitchRefused,
)

URL = "http://serving.test:8000"


def _control(status: int, body: object) -> HttpServiceControl:
    return HttpServiceControl(
        URL, "token", transport=httpx.MockTransport(lambda _: httpx.Response(status, json=body))
    )


def _one_line(err: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(err.value)
    assert isinstance(err.value, UserError) and "\n" not in message
    return message


def test_wrong_token_names_the_setting() -> None:
    with pytest.raises(AdminAuthError) as err:
        _control(401, {"detail": "unknown bearer token"}).variants()
    message = _one_line(err)
    assert f"{URL} rejected the admin token (401)" in message
    assert "RAY_APP_ADMIN_TOKEN or --admin-token" in message


def test_reader_token_asks_for_an_admin_key() -> None:
    with pytest.raises(AdminAuthError) as err:
        _control(403, {"detail": "'dash' has role 'reader'"}).set_weights({"A": 1.0})
    assert "403: not an admin key" in _one_line(err)


def test_missing_token_fails_before_any_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_APP_ADMIN_TOKEN", raising=False)
    with pytest.raises(AdminAuthError) as err:
        HttpServiceControl(URL)
    assert "set RAY_APP_ADMIN_TOKEN" in _one_line(err)


def test_unreachable_service_names_the_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with pytest.raises(ServiceUnreachable) as err:
        HttpServiceControl(url, "token", timeout_s=5).variants()
    message = _one_line(err)
    assert f"cannot reach the serving app at {url}" in message
    assert "--serve-url" in message


def test_switching_an_unknown_slot_names_the_serve_config() -> None:
    with pytest.raises(MissingSlot) as err:
        _control(404, {"detail": "unknown variant 'canary'"}).switch("canary", "ease", "v1")
    assert "no variant 'canary'" in _one_line(err)


def test_refused_version_carries_the_services_reason() -> None:
    body = {"detail": {"reason": "manifest.json: HMAC mismatch", "still_serving": {}}}
    with pytest.raises(SwitchRefused, match=r"^manifest\.json: HMAC mismatch$"):
        _control(409, body).switch("canary", "ease", "v1")


def test_retrain_command_ends_in_one_line_when_the_service_is_down() -> None:
    from typer.testing import CliRunner

    from ray_app.cli import app

    url = f"http://127.0.0.1:{free_port()}"
    args = ["retrain", "--serve-url", url, "--admin-token", "t"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach the serving app at ")
    assert "--serve-url" in lines[0] and "Traceback" not in result.output
