"""Credentials inside URIs, masked before anything is printed or put in an error message.

A tracking URI such as ``postgresql://user:s3cret@db:5432/mlflow`` or a store URL with a signed
query carries its secret in clear. ``mask_uri`` keeps what a person needs to recognise the
place (scheme, user name, host, port, path) and replaces the secret with ``***``:

- the password of ``scheme://user:password@host`` (also ``scheme://:password@host``), found at
  the *last* ``@`` before the host, so a password with a raw ``/``, ``?``, ``#`` or ``@`` in it
  is masked whole rather than split into a "path" shown in clear;
- the value of any query parameter whose name holds ``pass``, ``pwd``, ``token``, ``secret``,
  ``key``, ``sig``, ``credential`` or ``auth`` (``password=``, ``X-Amz-Signature=``,
  ``api_key=``...).

A user name alone (``scheme://user@host``) is shown: it names an account, it does not open it.
When in doubt the rules mask more, never less: ``http://host:5000/a@b`` reads as a password.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote

MASK = "***"

# scheme://user:password@host[:port][/path?query#fragment]; the password runs to the last "@"
# that is followed by a host (no "@", "/", "?", "#" or space in it) and then the rest or the end.
_USERINFO = re.compile(
    r"^(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/?#@\s]*:)(?P<password>.*)"
    r"(?P<tail>@[^@/?#\s]*(?:[/?#].*)?)$",
    re.DOTALL,
)
_SECRET_PARAM = re.compile(
    r"(?P<name>(?<=[?&;])[^=&;#\s]*(?:pass|pwd|token|secret|key|sig|credential|auth)"
    r"[^=&;#\s]*=)(?P<value>[^&;#\s]*)",
    re.IGNORECASE,
)
# A URI as it appears inside a longer text (an exception's message): up to a space or a quote.
_URI_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")
_MIN_SECRET = 4  # shorter strings are not replaced on their own: they would mangle the text


def mask_uri(uri: str) -> str:
    """``uri`` with its password and secret query values replaced by ``***``.

    ``postgresql://user:s3cret@db:5432/mlflow`` -> ``postgresql://user:***@db:5432/mlflow``;
    ``s3://bucket/k?X-Amz-Signature=abc`` -> ``s3://bucket/k?X-Amz-Signature=***``. A URI with
    no credentials comes back unchanged.
    """
    m = _USERINFO.match(uri)
    if m and m.group("password"):
        uri = f"{m.group('head')}{MASK}{m.group('tail')}"
    return _SECRET_PARAM.sub(
        lambda q: f"{q.group('name')}{MASK}" if q.group("value") else q[0], uri
    )


def uri_secrets(uri: str) -> list[str]:
    """The secret strings inside ``uri`` (as written and percent-decoded), longest first."""
    found: set[str] = set()
    m = _USERINFO.match(uri)
    if m and m.group("password"):
        found.add(m.group("password"))
    found.update(q.group("value") for q in _SECRET_PARAM.finditer(uri) if q.group("value"))
    found |= {unquote(s) for s in found}
    return sorted((s for s in found if len(s) >= _MIN_SECRET), key=len, reverse=True)


def mask_secrets_in(text: str, uris: Iterable[str | None] = ()) -> str:
    """``text`` with every URI in it masked, and the secrets of ``uris`` wherever they appear.

    Args:
        text: a message, typically an exception's from a client library that echoes the URL
            it was given (MLflow does: ``API request to http://user:pw@host/... failed``).
        uris: the URIs the process was configured with; their passwords are also masked where
            the text carries them without the rest of the URI (decoded, or in another form).
    """
    for uri in uris:
        if not uri:
            continue
        text = text.replace(uri, mask_uri(uri))
        for secret in uri_secrets(uri):
            text = text.replace(secret, MASK)
    return _URI_IN_TEXT.sub(lambda m: mask_uri(m[0]), text)
