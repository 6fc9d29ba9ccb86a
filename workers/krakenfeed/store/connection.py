"""Connecting to PostgreSQL without ever showing the password.

The connection string is a URL, a ``key=value`` string, or empty: libpq then
reads PGHOST, PGPORT, PGDATABASE, PGUSER and PGPASSWORD, the keys of the
CloudNativePG ``<cluster>-app`` secret. libpq quotes a malformed URL whole in its
error, password included, so no error of psycopg leaves this module as it is.
"""

from __future__ import annotations

import contextlib
import os
import re
from typing import Any, Final
from urllib.parse import unquote

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

_MASK: Final = "***"

# option: (environment variable that also sets it, krakenfeed's default)
_DEFAULTS: Final = {
    "connect_timeout": ("PGCONNECT_TIMEOUT", "10"),
    "application_name": ("PGAPPNAME", "krakenfeed"),
}
_SHOWN: Final = (
    ("host", "PGHOST"),
    ("port", "PGPORT"),
    ("dbname", "PGDATABASE"),
    ("user", "PGUSER"),
)
_URL_PASSWORD: Final = re.compile(r"(://[^:/?#@\s]*:)([^@/?#\s]*)@")
_OPTION_PASSWORD: Final = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'?|[^\s&]+)", re.I)


class StoreConnectionError(Exception):
    """PostgreSQL could not be reached or refused the login. The message never
    contains the password; ``sqlstate`` is the server's code when it answered."""

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


def connect(conninfo: str = "") -> psycopg.Connection[tuple[Any, ...]]:
    """An autocommit connection, with a connect timeout and an application name
    unless the connection string or the environment chooses its own."""
    try:
        given = conninfo_to_dict(conninfo)
        extra = {
            option: default
            for option, (variable, default) in _DEFAULTS.items()
            if option not in given and not os.environ.get(variable)
        }
        return psycopg.connect(make_conninfo(conninfo, **extra), autocommit=True)
    except psycopg.Error as exc:
        detail = " ".join(_mask_password(str(exc), conninfo).split())
        failure = StoreConnectionError(
            f"cannot connect to PostgreSQL at {describe_conninfo(conninfo)}: {detail}."
            " Check the connection string, or PGHOST, PGPORT, PGDATABASE, PGUSER and"
            " PGPASSWORD (the keys of the CloudNativePG <cluster>-app secret)",
            exc.sqlstate,
        )
    # Raised outside the except block, so the error does not carry psycopg's
    # unmasked one as its context into tracebacks and logs.
    raise failure


def describe_conninfo(conninfo: str) -> str:
    """Host, port, database and user, from the string or else the environment,
    with any password shown as ``***``."""
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.Error:
        return "a malformed connection string"
    shown = [
        f"{option}={value}"
        for option, variable in _SHOWN
        if (value := params.get(option) or os.environ.get(variable))
    ]
    if params.get("password") or os.environ.get("PGPASSWORD"):
        shown.append(f"password={_MASK}")
    return " ".join(shown) or "the libpq defaults"


def _mask_password(text: str, conninfo: str) -> str:
    """``text`` with every password that ``conninfo`` or PGPASSWORD carries, and
    anything shaped like a password in a URL or a ``password=`` option, masked."""
    for secret in sorted(_passwords(conninfo), key=len, reverse=True):
        text = text.replace(secret, _MASK)
    text = _URL_PASSWORD.sub(rf"\g<1>{_MASK}@", text)
    return _OPTION_PASSWORD.sub(rf"\g<1>{_MASK}", text)


def _passwords(conninfo: str) -> set[str]:
    """Every spelling of the password, even when the string is too malformed to parse."""
    found = {match[2] for match in _URL_PASSWORD.finditer(conninfo)}
    found |= {match[2].strip("'") for match in _OPTION_PASSWORD.finditer(conninfo)}
    with contextlib.suppress(psycopg.Error):
        found.add(str(conninfo_to_dict(conninfo).get("password") or ""))
    found.add(os.environ.get("PGPASSWORD", ""))
    found |= {unquote(secret) for secret in found}
    return {secret for secret in found if secret}
