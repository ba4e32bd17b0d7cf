"""How dbops keeps secrets out of text: every command's output, log line, health response,
admin page and ping body goes through here.

A password is masked by shape wherever it stands in a URL or a libpq DSN, however malformed
(`mask_url`, `mask_text`), and every secret dbops knows of (`known_secrets`) is masked by
value, in the forms a URL may hold it. It is imported by a project's settings module (through
dbops.envinfo), so only `known_secrets` and `safe_error`, called later, read settings.
"""

from __future__ import annotations

import re
from urllib.parse import quote, quote_plus

MASK = "********"

# Where a URL's user-info starts: after `scheme:/`, however many slashes were typed.
_URL_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:/+")


def mask_userinfo(token: str) -> str:
    """Mask the password of a URL-like token, however malformed the rest of it is.

    The user-info ends at the *last* `@` (an unencoded `@`, `/`, `#` or `?` in a password
    makes URL parsers split elsewhere), and the password starts at the first `:` after the
    scheme. A token with no `@`, or no `:` before it, has no password to hide.
    """
    head, at, host_and_rest = token.rpartition("@")
    if not at:
        return token
    scheme = _URL_SCHEME.search(head)
    start = scheme.end() if scheme else 0
    user, colon, _password = head[start:].partition(":")
    if not colon:
        return token
    return f"{head[:start]}{user}:{MASK}@{host_and_rest}"


def mask_url(url: str) -> str:
    """A URL (or libpq DSN) with its password replaced by a fixed mask (never its length).

    The whole string is one URL here, so a password holding spaces is masked too, and so is
    one whose `@host` was forgotten (`postgres://user:password/name`).
    """
    if not url:
        return url
    if "@" not in url:
        url = _mask_port_that_is_not_a_number(url)
    masked = _mask_query(mask_userinfo(url))
    return masked if _URL_SCHEME.match(masked) else mask_dsn(masked)


def _mask_port_that_is_not_a_number(url: str) -> str:
    """`scheme://user:password/...` without an `@`: what stands where the port would is no
    port (not a number), and may be a password."""
    scheme = _URL_SCHEME.match(url)
    if scheme is None:
        return url
    start = scheme.end()
    authority = re.split(r"[/?#]", url[start:], maxsplit=1)[0]
    host = authority.rsplit("]", 1)[-1]  # an IPv6 host's own colons are in brackets
    _, colon, port = host.rpartition(":")
    if not colon or port.isdigit() or not port:
        return url
    end = start + len(authority)
    return f"{url[: end - len(port)]}{MASK}{url[end:]}"


def _mask_query(query: str) -> str:
    return re.sub(r"(?i)(password|passwd|pwd|secret|token)=[^&\s]*", rf"\1={MASK}", query)


_DSN_PASSWORD = re.compile(r"""(?i)\b(password|passwd|pwd)\s*=\s*('(?:[^'\\]|\\.)*'|\S+)""")


def mask_dsn(dsn: str) -> str:
    """Mask the password in a libpq keyword DSN (``host=... password=...``)."""
    return _DSN_PASSWORD.sub(rf"\1={MASK}", dsn)


def mask_text(text: str, secrets: list[str] | tuple[str, ...] = ()) -> str:
    """Remove every known secret, and anything shaped like a URL or DSN password, from text.

    Used on exception messages before they reach a log or a terminal: psycopg2 and libpq put
    the DSN or parts of it into some of their messages. A URL holds a secret percent-encoded
    ("p%40ss"): those forms go too, longest first. Under 3 characters is too short to mask.
    """
    forms = {
        form
        for s in secrets
        if len(s or "") >= 3
        for form in (s, quote(s), quote(s, safe=""), quote_plus(s, safe=""))
    }
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, MASK)
    text = re.sub(r"\S*@\S*", lambda match: mask_userinfo(match.group(0)), text)
    text = _SPACED_PASSWORD.sub(rf"\1:{MASK}@", text)
    return mask_dsn(_mask_query(text))


# A URL whose password holds a space spans two tokens: mask up to the line's last `@`.
_SPACED_PASSWORD = re.compile(r"([A-Za-z][\w+.\-]*:/+[^:/@\s]*):[^@\n]*\s[^@\n]*@")


def known_secrets() -> list[str]:
    """Every secret dbops knows of, the one list that anything masking text uses (safe_error,
    the dead man's switch's bodies): every database's password (the default, the direct and
    the standby's, which libpq and pg_dump may echo in a URL; a connection's own, which may
    differ from its settings), SECRET_KEY, DBOPS_HEALTH_TOKEN, DBOPS_METRICS_TOKEN, the ping
    URLs (their path is a healthchecks.io check's secret) and the off-site storage's password
    or keys."""
    from django.conf import settings
    from django.db import connections

    from dbops import conf

    return [
        *(connections[alias].settings_dict.get("PASSWORD") or "" for alias in connections),
        *(database.get("PASSWORD") or "" for database in settings.DATABASES.values()),
        settings.SECRET_KEY,
        conf.HEALTH_TOKEN,
        conf.METRICS_TOKEN,
        conf.BACKUP_PING_URL,
        conf.CONSISTENCY_PING_URL,
        *conf.remote_storage_secrets(),
    ]


def safe_error(exc: BaseException, *, limit: int = 500, password: str | None = None) -> str:
    """A failure's text on one line with every known secret masked (known_secrets), whichever
    connection it came from. The one way dbops turns an exception into words for a terminal,
    a log or a record. `password` is masked too: the checks probe through a temporary
    connection that is not one of settings.DATABASES."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return mask_text(text, [password or "", *known_secrets()])[:limit]
