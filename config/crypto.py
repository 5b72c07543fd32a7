"""Encryption of secrets at rest (Fernet keyed from SECRET_KEY) and masking for display."""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken


class SecretDecryptError(RuntimeError):
    """A stored secret cannot be decrypted, usually because SECRET_KEY changed."""


def _fernet(secret_key: str) -> Fernet:
    # A dedicated derivation keeps the Fernet key distinct from the cookie-signing key.
    digest = hashlib.sha256(b"klaviyo-sync-console/fernet:" + secret_key.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def encrypt_secret(secret_key: str, plaintext: str) -> str:
    """Encrypt a secret for storage."""
    return _fernet(secret_key).encrypt(plaintext.encode()).decode()


def decrypt_secret(secret_key: str, token: str) -> str:
    """Decrypt a stored secret."""
    try:
        return _fernet(secret_key).decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise SecretDecryptError(
            "The stored Klaviyo key cannot be decrypted: SECRET_KEY changed since it was saved. "
            "Enter the key again on the Connection page."
        ) from exc


def mask(secret: str, keep: int = 4) -> str:
    """Show only the last few characters of a secret."""
    if len(secret) <= keep:
        return "•" * len(secret)
    return "•" * 8 + secret[-keep:]
