"""Client authentication of /recommend: API keys and OAuth 2.0 bearer JWTs checked against an
issuer's key set (a JWKS file, or a JWKS URL served by the test), through the real app."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from helpers import asgi_client
from pydantic import ValidationError
from test_serving_hardening import Graph, build

from ray_app.config import ConfigError
from ray_app.serving.config import ClientAuth, ClientKey, JwtAuth
from ray_app.serving.ingress import api
from ray_app.serving.security import token_hash

ISSUER = "https://issuer.test"


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def keys() -> dict[str, rsa.RSAPrivateKey]:
    return {"good": _key(), "rogue": _key()}


def _jwks(keys: dict[str, rsa.RSAPrivateKey]) -> str:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(keys["good"].public_key()))
    return json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]})


def token(key: rsa.RSAPrivateKey, **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "sub": "alice", "aud": "reco", "exp": now + 300, "iat": now, **claims}
    return jwt.encode(body, key, algorithm="RS256", headers={"kid": "k1"})


def bearer(tok: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tok}"}


@pytest.fixture
def jwks_file(tmp_path: Path, keys: dict[str, rsa.RSAPrivateKey]) -> Path:
    path = tmp_path / "jwks.json"
    path.write_text(_jwks(keys))
    return path


def auth(jwks: str | None = None, required: bool = False, **more: Any) -> dict[str, Any]:
    jwt_cfg = JwtAuth(issuer=ISSUER, jwks=jwks, audience="reco") if jwks else None
    keys = [ClientKey(name="gateway", sha256=token_hash("gw-key"))]
    return {"client_auth": ClientAuth(required=required, api_keys=keys, jwt=jwt_cfg), **more}


def test_off_by_default_credentials_ignored() -> None:
    with asgi_client(api, build(Graph())) as c:
        assert c.get("/recommend/u1").status_code == 200
        assert c.get("/recommend/u1", headers=bearer("whatever")).status_code == 200


def test_api_keys_optional_but_checked_when_sent() -> None:
    with asgi_client(api, build(Graph(), **auth())) as c:
        assert c.get("/recommend/u1").status_code == 200
        assert c.get("/recommend/u1", headers=bearer("gw-key")).status_code == 200
        r = c.get("/recommend/u1", headers=bearer("stolen?"))
        assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"
        assert c.get("/recommend/u1", headers={"Authorization": "Basic Z3c="}).status_code == 401


def test_required_refuses_anonymous_calls(jwks_file: Path) -> None:
    with asgi_client(api, build(Graph(), **auth(str(jwks_file), required=True))) as c:
        r = c.get("/recommend/u1")
        assert r.status_code == 401 and "credentials required" in r.json()["detail"]
        assert c.get("/recommend/u1", headers=bearer("gw-key")).status_code == 200


def test_jwt_from_a_jwks_file(jwks_file: Path, keys: dict[str, rsa.RSAPrivateKey]) -> None:
    good, rogue = keys["good"], keys["rogue"]
    with asgi_client(api, build(Graph(), **auth(str(jwks_file), required=True))) as c:
        assert c.get("/recommend/u1", headers=bearer(token(good))).status_code == 200
        refused = {
            "expired": token(good, exp=int(time.time()) - 3600),
            "other issuer": token(good, iss="https://evil.test"),
            "other audience": token(good, aud="billing"),
            "no subject": jwt.encode(
                {"iss": ISSUER, "aud": "reco", "exp": int(time.time()) + 60},
                good,
                algorithm="RS256",
                headers={"kid": "k1"},
            ),
            "rogue key": token(rogue),
            "shared secret": jwt.encode(
                {"iss": ISSUER, "sub": "a", "aud": "reco", "exp": int(time.time()) + 60},
                "x" * 32,
                algorithm="HS256",
                headers={"kid": "k1"},
            ),
            "alg none": jwt.encode(
                {"iss": ISSUER, "sub": "a", "aud": "reco", "exp": int(time.time()) + 60},
                None,  # type: ignore[arg-type]
                algorithm="none",
                headers={"kid": "k1"},
            ),
        }
        for why, tok in refused.items():
            r = c.get("/recommend/u1", headers=bearer(tok))
            assert r.status_code == 401, (why, r.text)
            assert "\n" not in r.json()["detail"]


class _Jwks(http.server.BaseHTTPRequestHandler):
    body = b""
    hits = 0

    def do_GET(self) -> None:
        type(self).hits += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def jwks_url(keys: dict[str, rsa.RSAPrivateKey]) -> Iterator[str]:
    _Jwks.body, _Jwks.hits = _jwks(keys).encode(), 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Jwks)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    finally:
        server.shutdown()
        server.server_close()


def test_jwt_from_a_jwks_url_fetched_once(
    jwks_url: str, keys: dict[str, rsa.RSAPrivateKey]
) -> None:
    with asgi_client(api, build(Graph(), **auth(jwks_url, required=True))) as c:
        for _ in range(3):
            assert c.get("/recommend/u1", headers=bearer(token(keys["good"]))).status_code == 200
        assert c.get("/recommend/u1", headers=bearer(token(keys["rogue"]))).status_code == 401
    assert _Jwks.hits == 1  # the key set is cached, not fetched per request


def test_auth_config_mistakes_fail_at_start(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="required: true needs"):
        ClientAuth(required=True)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="jwks"):
        build(Graph(), **auth(str(tmp_path / "bad.json")))
