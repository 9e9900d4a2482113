"""Secrets stay out of the records: values whose key looks like a token, key, secret or password are replaced.

Applied to everything specsweep writes about a job (result.json, the tables' rows, the W&B config and run names all
come from `Result.to_dict()`), never to what the engine receives. A key is secret when one of its words (split on
`_`, `-`, `.`) is token, secret, password, passwd, credential(s), auth or apikey, or when `key` follows api, access,
private or secret; only string values are replaced (a secret is a string: `token_delay_s=0.5` is not one). Counts
such as `max_new_tokens` (plural) are not secrets.
"""

from __future__ import annotations

import re
from typing import Any, List

REDACTED = "<redacted>"
SECRET_WORDS = {"token", "secret", "password", "passwd", "credential", "credentials", "auth", "apikey"}
KEY_QUALIFIERS = {"api", "access", "private", "secret"}


def is_secret(key: str) -> bool:
    words = [w for w in re.split(r"[_\-.\s]+", str(key).lower()) if w]
    if SECRET_WORDS.intersection(words):
        return True
    return any(w == "key" and i > 0 and words[i - 1] in KEY_QUALIFIERS for i, w in enumerate(words))


def redact(value: Any) -> Any:
    """A copy of a JSON-like value with every secret-looking key's value replaced."""
    if isinstance(value, dict):
        return {k: REDACTED if is_secret(k) and isinstance(v, str) and v else redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def redact_overrides(overrides: List[str]) -> List[str]:
    """`backend.engine_overrides.hf_token=abc` -> `backend.engine_overrides.hf_token=<redacted>` (numbers kept)."""
    out = []
    for item in overrides:
        key, sep, value = item.partition("=")
        secret = sep and value and is_secret(key.split(".")[-1].lstrip("+~")) and not _is_number(value)
        out.append(f"{key}{sep}{REDACTED}" if secret else item)
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
