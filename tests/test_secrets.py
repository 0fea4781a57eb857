"""Signing secrets: placeholders and guessable secrets stop a service at start-up with a
way to generate a good one; generated ones (and `darkroom dev`'s own) are accepted."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from services.cli import main as darkroom
from services.dev import dev_secret
from shared import secrets
from shared.settings import Settings
from tests.conftest import make_settings

ROOT = Path(__file__).resolve().parent.parent

WEAK_JWT = {
    "k8s-example": "CHANGE-ME-TO-32-OR-MORE-RANDOM-CHARACTERS",
    "changeme-padded": "changeme" + secrets.jwt_secret(),
    "repeated": "x" * 64,
    "word-and-padding": "test-secret-" + "x" * 40,
    "sequence": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
    "short-random": secrets.jwt_secret()[:40],
    "16-bytes-hex": os.urandom(16).hex(),
}
WEAK_WEBHOOK = {
    "k8s-example": "whsec_CHANGEME",
    "six-bytes": "whsec_" + base64.b64encode(os.urandom(6)).decode(),
    "23-bytes": "whsec_" + base64.b64encode(os.urandom(23)).decode(),
    "zeros": "whsec_" + base64.b64encode(bytes(32)).decode(),
    "not-base64": "whsec_!!!!",
    "plain-word": "my-webhook-secret-for-production",
}


@pytest.mark.parametrize("secret", WEAK_JWT.values(), ids=WEAK_JWT.keys())
def test_weak_jwt_secrets_are_refused_with_how_to_generate_one(secret: str) -> None:
    with pytest.raises(ValidationError) as refused:
        make_settings(auth_jwt_secret=SecretStr(secret))
    message = str(refused.value)
    assert "auth_jwt_secret" in message and "32 random bytes" in message
    assert "secrets.token_urlsafe(48)" in message


@pytest.mark.parametrize("secret", WEAK_WEBHOOK.values(), ids=WEAK_WEBHOOK.keys())
def test_weak_webhook_secrets_are_refused_with_how_to_generate_one(secret: str) -> None:
    with pytest.raises(ValidationError) as refused:
        make_settings(webhook_secret=SecretStr(secret))
    assert "webhook_secret" in str(refused.value)
    assert "whsec_" in str(refused.value) and "generate one with" in str(refused.value)


def test_the_example_jwt_secret_stops_a_service_at_start_up(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DARKROOM_AUTH_JWT_SECRET", WEAK_JWT["k8s-example"])
    with pytest.raises(SystemExit) as stopped:
        darkroom(["token", "--user", "anyone"])
    assert stopped.value.code == 2
    assert "DARKROOM_AUTH_JWT_SECRET" in capsys.readouterr().err


@pytest.mark.parametrize(
    "make",
    [
        secrets.jwt_secret,
        lambda: base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode(),
        lambda: os.urandom(32).hex(),
        lambda: base64.b64encode(os.urandom(32)).decode(),
    ],
    ids=["generated", "token_urlsafe-32", "token_hex-32", "openssl-rand-base64-32"],
)
def test_random_jwt_secrets_of_32_bytes_are_accepted(make: object) -> None:
    for _ in range(200):
        secret = make()  # type: ignore[operator]
        assert secrets.jwt_secret_problem(secret) is None, secret


def test_random_webhook_secrets_of_24_bytes_are_accepted() -> None:
    for _ in range(200):
        assert secrets.webhook_secret_problem(secrets.webhook_secret()) is None
        raw = "whsec_" + base64.b64encode(os.urandom(24)).decode()
        assert secrets.webhook_secret_problem(raw) is None


def test_the_generator_prints_settings_a_service_accepts() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "shared.secrets"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    ).stdout
    env = dict(line.split("=", 1) for line in out.splitlines())
    assert set(env) == {"DARKROOM_AUTH_JWT_SECRET", "DARKROOM_WEBHOOK_SECRET"}
    settings = Settings(
        auth_jwt_secret=SecretStr(env["DARKROOM_AUTH_JWT_SECRET"]),
        webhook_secret=SecretStr(env["DARKROOM_WEBHOOK_SECRET"]),
    )
    assert settings.webhook_secret.get_secret_value().startswith("whsec_")


def test_dev_makes_a_secret_that_passes_validation(tmp_path: Path) -> None:
    secret = dev_secret(make_settings(data_dir=tmp_path, auth_jwt_secret=SecretStr("")))
    assert secrets.jwt_secret_problem(secret) is None
    assert dev_secret(make_settings(data_dir=tmp_path)) != secret, "a set secret wins"
