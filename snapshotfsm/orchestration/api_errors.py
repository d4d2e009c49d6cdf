"""The error codes the API layer gives CloudStack's exceptions, and the text it answers with (spec §5.2, appendix B).

The create phase runs in the caller's thread: ``ApiServer`` maps what ``create()`` throws. The execute phase runs
in the async job; ``CreateSnapshotCmd.execute`` turns any exception into a ServerApiException, UNSUPPORTED_ACTION_ERROR
when its *cause* is an UnsupportedOperationException and INTERNAL_ERROR otherwise.
"""

from __future__ import annotations

from snapshotfsm.errors import (
    ApiError,
    CloudException,
    ConcurrentOperationException,
    InvalidParameterValueException,
    PermissionDeniedException,
    ResourceAllocationException,
    ServerApiException,
    UnsupportedOperationException,
)
from snapshotfsm.store.records import Account

PARAM_ERROR = 431
UNSUPPORTED_ACTION_ERROR = 432
INTERNAL_ERROR = 530
ACCOUNT_ERROR = 531
ACCOUNT_RESOURCE_LIMIT_ERROR = 532
RESOURCE_UNAVAILABLE_ERROR = 534
RESOURCE_ALLOCATION_ERROR = 535
USER_ERROR_MESSAGE = "Internal error executing command, please contact your system administrator"
PARAM_LENGTH = 255
"""``@Parameter``'s ``length()`` default: every string parameter the model takes keeps it (``ParamProcessWorker``)."""


def refusal(exc: CloudException) -> ApiError:
    """An API call refused before its command runs: the exception, and the code ``ApiServer`` answers it with."""
    code, text = create_phase_error(exc, None)
    return ApiError(code, text, exception=exc)


def check_length(param: str, value: str | None, limit: int = PARAM_LENGTH) -> None:
    """``ParamProcessWorker``'s check of a string parameter, before the command runs (nothing is written).

    ``param`` is the command's Java field name, which CloudStack's message names (``snapshotName``, not ``name``).

    Raises:
        ApiError: 431, ``Value greater than max allowed length 255 for param: <param>``.
    """
    if value is not None and len(value) > limit:
        raise refusal(
            InvalidParameterValueException(f"Value greater than max allowed length {limit} for param: {param}")
        )


def create_phase_error(exc: CloudException, caller: Account | None) -> tuple[int, str]:
    """``ApiServer``'s mapping of an exception thrown by ``create()`` (appendix B): code and text.

    Internal errors hide their message from callers that are not root admins.
    """
    if isinstance(exc, ServerApiException):
        return exc.code, exc.message
    if isinstance(exc, InvalidParameterValueException):
        return PARAM_ERROR, exc.message
    if isinstance(exc, PermissionDeniedException):
        return ACCOUNT_ERROR, exc.message
    if isinstance(exc, ResourceAllocationException):
        return RESOURCE_ALLOCATION_ERROR, exc.message
    admin = caller is not None and caller.type == 1
    return INTERNAL_ERROR, exc.message if admin else USER_ERROR_MESSAGE


def execute_error(exc: CloudException, volume_uuid: str) -> tuple[int, str]:
    """``CreateSnapshotCmd.execute``'s catch: UNSUPPORTED_ACTION_ERROR when the cause is an UOE (spec §5.2)."""
    if isinstance(exc.cause, UnsupportedOperationException):
        return UNSUPPORTED_ACTION_ERROR, f"Failed to create Snapshot due to unsupported operation: {exc.cause.message}"
    return (
        INTERNAL_ERROR,
        f"Failed to create Snapshot due to an internal error creating Snapshot for volume {volume_uuid}",
    )


def through_work_job(exc: CloudException) -> CloudException:
    """How ``takeSnapshotInternal`` rethrows a work job's exception (spec §4.3).

    ConcurrentOperationException and ResourceAllocationException are rethrown as they are; anything else is
    wrapped in ``RuntimeException("Unexpected exception")`` whose cause is the original.
    """
    if isinstance(exc, (ConcurrentOperationException, ResourceAllocationException)):
        return exc
    return CloudException("Unexpected exception", cause=exc)
