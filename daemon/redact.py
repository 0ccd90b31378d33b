"""Secrets kept out of what framewatch prints: config values echoed in error lines, and URLs in
log lines and stored errors. Plugins reach `redact_url` through daemon.hookspecs.

Redaction errs on the side of hiding: a value whose key merely looks like a secret's (`token`,
`secret`, `password`, `api_key`, `key`, ... and near misspellings such as `tokn`) is not shown;
a path to a secret (`*_file`) is. A URL is shown without its user name, password, query string
and fragment, which is where credentials ride (`https://user:pw@host/hook?apikey=...`).
"""

from __future__ import annotations

import re
from difflib import get_close_matches
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, SecretBytes, SecretStr


class Redacted:
    """Stands in for a value that is not shown; `repr` is what an error line prints."""

    _instance: Redacted | None = None

    def __new__(cls) -> Redacted:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "<secret, not shown>"

    __str__ = __repr__


SECRET = Redacted()

# Words of a key name that mark its value as secret.
_SECRET_WORDS = frozenset(
    {
        "token",
        "tokens",
        "secret",
        "secrets",
        "password",
        "passwd",
        "passphrase",
        "pass",
        "pwd",
        "pw",
        "key",
        "apikey",
        "credential",
        "credentials",
        "auth",
        "authorization",
        "bearer",
        "cookie",
        "signature",
        "private",
        "dsn",
    }
)
# Inside a longer word ("webtoken", "clientsecret", "api_key" written "apikey").
_SECRET_PARTS = ("token", "secret", "passw", "apikey", "credential")
# Misspellings of these still hide the value ("tokn", "secert", "pasword").
_FUZZY = ("token", "secret", "password", "passwd", "apikey", "credential")


def is_secret_key(name: object) -> bool:
    """Whether a setting called `name` (a key of a config table) may hold a secret. `*_file` keys
    name where a secret is, not the secret: they are shown."""
    words = [w for w in re.split(r"[^a-z0-9]+", str(name).lower()) if w]
    if not words or words[-1] == "file":
        return False
    joined = "".join(words)
    if any(part in joined for part in _SECRET_PARTS):
        return True
    return any(
        w in _SECRET_WORDS or (len(w) >= 4 and get_close_matches(w, _FUZZY, n=1, cutoff=0.8))
        for w in words
    )


def redact_url(url: object) -> str:
    """A URL as it may be shown: scheme, host, port and path; a user name or password becomes
    `…@`, a query string `?…`, a fragment `#…`."""
    text = str(url)
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018  (raises ValueError for a port that is not a number)
    except ValueError:
        return "<a URL that cannot be parsed>"
    if not parts.scheme or not parts.netloc:
        return "<not a URL>" if any(c in text for c in "@?#") else text
    _, at, host = parts.netloc.rpartition("@")
    shown = f"{parts.scheme}://{'…@' if at else ''}{host}{parts.path}"
    if "?" in text.split("#", 1)[0]:  # a query, even an empty one ("?" ends the host part)
        shown += "?…"
    if parts.fragment:
        shown += "#…"
    return shown


def _looks_like_url(text: str) -> bool:
    return "://" in text and not any(c.isspace() for c in text.strip())


def redact_value(value: Any, key: object = None, secret_keys: frozenset[str] = frozenset()) -> Any:
    """`value` (of the setting `key`) as an error line may echo it: SECRET for a secret-looking
    key or one of `secret_keys` (a model's SecretStr fields), tables and lists with their secrets
    replaced the same way at any depth, URLs through redact_url."""
    if isinstance(value, Redacted):
        return value
    if key is not None and (str(key) in secret_keys or is_secret_key(key)):
        return SECRET
    if isinstance(value, SecretStr | SecretBytes):
        return SECRET
    if isinstance(value, dict):
        return {k: redact_value(v, k, secret_keys) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact_value(v, None, secret_keys) for v in value)
    if isinstance(value, str) and _looks_like_url(value):
        return redact_url(value)
    return value


def secret_fields(model: type[BaseModel]) -> frozenset[str]:
    """Names (and aliases) of a settings model's fields typed SecretStr or SecretBytes."""
    out: set[str] = set()
    for name, field in model.model_fields.items():
        if _mentions_secret(field.annotation):
            out.add(name)
            if field.alias:
                out.add(field.alias)
    return frozenset(out)


def _mentions_secret(annotation: Any) -> bool:
    from typing import get_args

    if isinstance(annotation, type) and issubclass(annotation, SecretStr | SecretBytes):
        return True
    return any(_mentions_secret(a) for a in get_args(annotation))
