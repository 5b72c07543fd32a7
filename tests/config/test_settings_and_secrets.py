"""Settings validation, secret encryption and log redaction."""

from __future__ import annotations

import json
import logging

import pytest
import structlog

from config.crypto import SecretDecryptError, decrypt_secret, encrypt_secret, mask
from config.logging import configure_logging
from config.settings import Environment, MissingSecretKeyError, Settings


def test_production_refuses_a_missing_or_placeholder_secret_key(monkeypatch):
    monkeypatch.delenv("SECRET_KEY", raising=False)
    with pytest.raises(MissingSecretKeyError, match="SECRET_KEY is not set"):
        Settings(environment=Environment.PRODUCTION, _env_file=None)
    with pytest.raises(MissingSecretKeyError):
        Settings(environment=Environment.PRODUCTION, secret_key="changeme", _env_file=None)


def test_dev_generates_and_keeps_a_secret_key(monkeypatch, tmp_path):
    monkeypatch.delenv("SECRET_KEY", raising=False)
    monkeypatch.chdir(tmp_path)
    first = Settings(environment=Environment.DEV, _env_file=None).secret
    second = Settings(environment=Environment.DEV, _env_file=None).secret
    assert first == second and len(first) > 40
    assert (tmp_path / "var" / "secret_key").stat().st_mode & 0o077 == 0


def test_secrets_roundtrip_and_fail_clearly_under_another_key():
    token = encrypt_secret("key-one", "pk_live_abcdef123456")
    assert "pk_live" not in token
    assert decrypt_secret("key-one", token) == "pk_live_abcdef123456"
    with pytest.raises(SecretDecryptError, match="SECRET_KEY changed"):
        decrypt_secret("key-two", token)
    assert mask("pk_live_abcdef123456") == "••••••••3456"


def test_logs_redact_keys_and_passwords(capsys):
    configure_logging("INFO", json=True)
    log = structlog.get_logger("t")
    log.info(
        "saving", password="hunter2", api_key="pk_abcdefghijkl", note="header Klaviyo-API-Key pk_secret123"
    )
    logging.getLogger("plain").warning("key pk_abcdefghijklmnop leaked?")
    err = capsys.readouterr().err
    assert "hunter2" not in err and "pk_abcdefghijkl" not in err and "pk_secret123" not in err
    first = json.loads(err.splitlines()[0])
    assert first["password"] == "[redacted]" and "[redacted]" in first["note"]
