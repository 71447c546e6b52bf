"""The one place where SQLAlchemy and driver exceptions become :mod:`cairn.errors`."""

from __future__ import annotations

from sqlalchemy import exc as sa_exc

from cairn.errors import StoreError, StoreNotWritableError
from cairn.store.sql.engine import NOT_WRITABLE_HINT

_NOT_WRITABLE = ("readonly", "read-only", "unable to open", "permission denied")


def translate_error(exc: sa_exc.SQLAlchemyError, *, dialect: str, where: str) -> Exception:
    """The cairn error to raise for ``exc`` (raised on the store at ``where``)."""
    orig = getattr(exc, "orig", None)
    if isinstance(exc, sa_exc.StatementError) and isinstance(orig, (ValueError, TypeError)):
        return orig  # a bad argument (e.g. a naive datetime) caught while binding it
    detail = str(orig if orig is not None else exc).strip()
    detail = detail.splitlines()[0] if detail else type(exc).__name__
    lowered = detail.lower()
    if isinstance(exc, sa_exc.IntegrityError):
        return StoreError(
            f"the metadata store refused a conflicting write: {detail}",
            hint="this is a bug in the caller or a clash with a concurrent writer; retry",
        )
    if dialect == "sqlite":
        if any(marker in lowered for marker in _NOT_WRITABLE):
            return StoreNotWritableError(
                f"cannot write the cairn store at {where}: {detail}", hint=NOT_WRITABLE_HINT
            )
        if "locked" in lowered or "busy" in lowered:
            return StoreError(
                f"the cairn database at {where} stayed locked by another process: {detail}",
                hint="another cairn process is holding the database; retry, or stop it",
            )
        if "full" in lowered:
            return StoreError(
                f"the disk holding {where} is full: {detail}",
                hint="free some disk space and retry",
            )
    elif isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)):
        if "password authentication failed" in lowered or (
                "role" in lowered and "does not exist" in lowered):
            return StoreError(
                f"the database server at {where} refused the login: {detail}",
                hint="check the user name and password in database_url (CAIRN_DATABASE_URL)",
            )
        if "database" in lowered and "does not exist" in lowered:
            return StoreError(
                f"no such database at {where}: {detail}",
                hint="create it (e.g. `createdb NAME`) or fix the database name in database_url",
            )
        if any(m in lowered for m in ("connection refused", "could not connect", "timeout",
                                      "timed out", "name or service not known",
                                      "could not translate host name", "no route")):
            return StoreError(
                f"cannot reach the database server of {where}: {detail}",
                hint="check that the server is running and the host and port in "
                     "database_url (CAIRN_DATABASE_URL)",
            )
        return StoreError(
            f"cannot use the metadata database at {where}: {detail}",
            hint="check that the database server is running and the store URL is right",
        )
    return StoreError(f"metadata store error ({where}): {detail}")
