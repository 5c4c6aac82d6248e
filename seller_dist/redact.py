"""The one secret scrubber: what a config or results dict looks like before it is logged (stdout,
wandb) or written to a report (seller_dist.train.metrics, seller_dist.eval.report), with the rule in
docs/training.md ("One step", logging) and its cases in tests/unit/test_secrets.py. Not named
`secrets.py`: that would shadow the standard library's `secrets` module.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

REDACTED = "***"

# A key is a secret when, split into lowercased words (`_words`: at non-alphanumerics and camelCase
# humps), one word is in _SECRET_WORDS (db_password, gcp_credentials, auth_mode), two adjacent words
# are a _SECRET_PAIRS pair (WANDB_API_KEY, aws_access_key_id) or the LAST word is token (hf_token).
# So max_new_tokens and tokens_per_s ("tokens"), token_count (not last), tokenizer and author are kept.
_SECRET_WORDS = frozenset(
    {"secret", "secrets", "password", "passwd", "passphrase", "credential", "credentials", "auth", "apikey"}
)
_SECRET_PAIRS = frozenset(
    {("api", "key"), ("access", "key"), ("private", "key"), ("session", "key"), ("secret", "key")}
)
_LAST_WORD = frozenset({"token"})
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")  # snake_case, kebab-case, camelCase, UPPER_CASE
_ACCESS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")
_URL_USERINFO = re.compile(r"(://)[^/\s:@]+:[^/\s@]+@")


def _words(key: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(key)]


def is_secret_key(key: str) -> bool:
    """True for keys whose value is a credential (the rule: the comment above _SECRET_WORDS)."""
    words = _words(key)
    if not words:
        return False
    return (
        bool(_SECRET_WORDS.intersection(words))
        or bool(_SECRET_PAIRS.intersection(zip(words, words[1:], strict=False)))
        or words[-1] in _LAST_WORD
    )


def scrub_value(value: str) -> str:
    """`value` with access key ids and URL user:password parts replaced by "***"."""
    value = _URL_USERINFO.sub(rf"\g<1>{REDACTED}@", value)
    return _ACCESS_KEY_ID.sub(REDACTED, value)


def _unset(v: Any) -> bool:
    return v is None or (isinstance(v, str) and v == "")


def scrub(obj: Any) -> Any:
    """A copy of `obj` (nested mappings, lists, tuples) with secrets replaced by "***"; the input
    is not modified."""
    if isinstance(obj, Mapping):
        return {k: REDACTED if is_secret_key(str(k)) and not _unset(v) else scrub(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(scrub(v) for v in obj)
    if isinstance(obj, str):
        return scrub_value(obj)
    return obj
