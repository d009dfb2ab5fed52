"""The key that encrypts secrets at rest, and the environment's secrets.

Secret values are stored in PostgreSQL sealed with AES-256-GCM (`cryptography`) under a key
that never enters the database: `REFLUX_SECRETS_KEY` (base64 of 32 bytes), else the file
`REFLUX_SECRETS_KEY_FILE`, else `REFLUX_HOME/secrets.key`, made (mode 0600) on first use.
Each value is bound to its kind, namespace and name as associated data, so a row copied
under another name or namespace does not open. The key's id (a hash prefix) is stored
beside each value, so a wrong key is a clear error rather than a decryption failure.

For single-machine use the environment holds secrets too: `REFLUX_SECRET_<NAME>` is a
secret of the default namespace, `REFLUX_WEBHOOK_KEY_<NAME>` a webhook signing key (a
separate kind that `secret()` cannot read).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from infra.errors import SecretError
from infra.settings import Settings

__all__ = [
    "DEFAULT_NAMESPACE",
    "SecretKind",
    "SecretsKey",
    "environment_secret",
    "secrets_key",
]

SecretKind = Literal["secret", "webhook"]
DEFAULT_NAMESPACE = "default"
_ENV_PREFIX: dict[SecretKind, str] = {"secret": "REFLUX_SECRET_", "webhook": "REFLUX_WEBHOOK_KEY_"}


def environment_secret(kind: SecretKind, namespace: str, name: str) -> str | None:
    """A secret from this process's environment: only ever of the default namespace."""
    if namespace != DEFAULT_NAMESPACE:
        return None
    return os.environ.get(_ENV_PREFIX[kind] + name) or None


def environment_variable(kind: SecretKind, name: str) -> str:
    return _ENV_PREFIX[kind] + name


@dataclass(frozen=True)
class SecretsKey:
    """An AES-256-GCM key; `seal`/`open` bind a value to (kind, namespace, name)."""

    key: bytes

    @property
    def id(self) -> str:
        return hashlib.sha256(b"reflux-secrets\0" + self.key).hexdigest()[:16]

    def seal(self, kind: SecretKind, namespace: str, name: str, value: str) -> tuple[bytes, bytes]:
        nonce = os.urandom(12)
        sealed = AESGCM(self.key).encrypt(nonce, value.encode(), _bound(kind, namespace, name))
        return nonce, sealed

    def open(self, kind: SecretKind, namespace: str, name: str, nonce: bytes, sealed: bytes) -> str:
        try:
            return AESGCM(self.key).decrypt(nonce, sealed, _bound(kind, namespace, name)).decode()
        except InvalidTag:
            raise SecretError(
                f"secret '{name}' of namespace '{namespace}' does not open with this key"
            ) from None


def _bound(kind: str, namespace: str, name: str) -> bytes:
    return f"{kind}\0{namespace}\0{name}".encode()


def secrets_key(settings: Settings, *, create: bool = False) -> SecretsKey:
    """The key from settings. `create`: make the key file when none is configured yet."""
    if settings.secrets.key:
        return SecretsKey(_decode(settings.secrets.key, "REFLUX_SECRETS_KEY"))
    path = settings.secrets.key_file or settings.home / "secrets.key"
    if not path.exists():
        if not create:
            raise SecretError(
                "no secrets key: set REFLUX_SECRETS_KEY, or REFLUX_SECRETS_KEY_FILE"
                f" (not found: {path})"
            )
        _make_key_file(path)
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise SecretError(f"cannot read the secrets key {path}: {exc.strerror}") from None
    return SecretsKey(_decode(text, str(path)))


def _make_key_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = base64.b64encode(AESGCM.generate_key(bit_length=256)).decode()
    try:  # O_EXCL: two processes making it at once keep the first one's key
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as out:
        out.write(text + "\n")


def _decode(text: str, where: str) -> bytes:
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SecretError(f"{where}: the secrets key is not base64") from None
    if len(key) != 32:
        raise SecretError(f"{where}: the secrets key must be 32 bytes (base64), not {len(key)}")
    return key
