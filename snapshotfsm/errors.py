"""Every error snapshotfsm raises.

Each error also subclasses the builtin (or library) error a caller already catches, keeps the offending values as
attributes, and prints a message that shows the value and the way out.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING

from transitions import MachineError

if TYPE_CHECKING:
    from collections.abc import Iterable


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return " (did you mean 'x'?)" for the closest choice, or "" when nothing is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class SnapshotFSMError(Exception):
    """Base of every snapshotfsm error."""


class DefinitionError(SnapshotFSMError, ValueError):
    """A state-machine definition is malformed; the message names the file, the machine and the key."""

    def __init__(self, path: str, machine: str | None, key: str, problem: str) -> None:
        self.path = path
        self.machine = machine
        self.key = key
        self.problem = problem
        where = f"machine {machine!r}, " if machine else ""
        super().__init__(f"{path}: {where}{key}: {problem}")


class ScenarioError(SnapshotFSMError, ValueError):
    """An exploration scenario is malformed; the message names the file and the key (``step 2: snapshot``)."""

    def __init__(self, path: str, key: str, problem: str) -> None:
        self.path = path
        self.key = key
        self.problem = problem
        super().__init__(f"{path}: {key}: {problem}")


class MissingExtra(SnapshotFSMError, ImportError):
    """An optional feature's package is not installed; the message names the extra that installs it."""

    def __init__(self, feature: str, package: str, extra: str) -> None:
        self.feature = feature
        self.package = package
        self.extra = extra
        super().__init__(f"{feature} needs the {package} package: pip install 'snapshotfsm[{extra}]'")


class ClusterError(SnapshotFSMError, RuntimeError):
    """A Dask cluster cannot run an exploration; nothing was run on it.

    Unreachable, without a worker, or with workers that would explore other code or scenarios than this machine.
    """

    def __init__(self, address: str, problem: str) -> None:
        self.address = address
        self.problem = problem
        super().__init__(f"Dask scheduler {address}: {problem}")


class UnknownMachine(SnapshotFSMError, KeyError):
    """No machine of that name: a ``KeyError``, as a mapping raises, whose text is not quoted twice."""

    def __init__(self, name: str, known: Iterable[str], *, listed: bool = False) -> None:
        self.name = name
        known = list(known)
        shown = f"; machines: {', '.join(known)}" if listed else ""
        super().__init__(f"no machine named {name!r}{did_you_mean(name, known)}{shown}")

    def __str__(self) -> str:
        return str(self.args[0])


class IllegalTransition(SnapshotFSMError, MachineError):
    """An event the machine refuses; nothing was changed.

    The event is not allowed in the entity's current state, is not an event of the machine, or the entity is in a
    state the machine does not have.
    """

    def __init__(
        self,
        machine: str,
        entity_id: object,
        state: str,
        event: str,
        allowed: tuple[str, ...],
        *,
        reason: str = "not-allowed",
        hint: str = "",
    ) -> None:
        self.machine = machine
        self.entity_id = entity_id
        self.state = state
        self.event = event
        self.allowed = allowed
        self.reason = reason
        if reason == "undeclared-event":
            message = f"{machine} {entity_id}: {event!r} is not an event of machine {machine!r}{hint}"
        elif reason == "unknown-state":
            message = f"{machine} {entity_id} is in {state!r}, which is not a state of machine {machine!r}{hint}"
        else:
            shown = ", ".join(allowed) if allowed else "none"
            message = f"{machine} {entity_id} is {state}; event {event!r} is not allowed there (allowed: {shown})"
        MachineError.__init__(self, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConcurrencyError(SnapshotFSMError, RuntimeError):
    """Someone else moved the row first: the compare-and-swap of a durable transition matched no row."""

    def __init__(
        self,
        machine: str,
        entity_id: int,
        expected_state: str,
        found_state: str | None,
        expected_count: int | None = None,
        found_count: int | None = None,
    ) -> None:
        self.machine = machine
        self.entity_id = entity_id
        self.expected_state = expected_state
        self.found_state = found_state
        self.expected_count = expected_count
        self.found_count = found_count
        if found_state is None:
            found = "the row is gone"
        else:
            found = f"found {found_state}"
            if found_count is not None:
                found += f" (update_count {found_count})"
        expected = expected_state if expected_count is None else f"{expected_state} (update_count {expected_count})"
        super().__init__(f"{machine} {entity_id}: lost a race, expected {expected}, {found}; nothing was written")


class NotFound(SnapshotFSMError, LookupError):
    """An id names no row."""

    def __init__(self, kind: str, entity_id: object, *, where: str = "") -> None:
        self.kind = kind
        self.entity_id = entity_id
        super().__init__(f"no {kind} with id {entity_id!r}" + (f" {where}" if where else ""))


class StoreError(SnapshotFSMError, RuntimeError):
    """The database cannot be used: not a snapshotfsm database, another schema version, or unreadable."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class ServerDown(SnapshotFSMError, RuntimeError):
    """The management server crashed and was not restarted: it takes no API calls."""

    def __init__(self, ms_id: int, where: str | None = None) -> None:
        self.ms_id = ms_id
        self.where = where
        what = f"crashed at {where}" if where else "is down (it crashed)"
        super().__init__(f"management server {ms_id} {what}; restart it before calling it")


class InvalidValue(SnapshotFSMError, TypeError):
    """A value has the wrong type or is outside its domain; the database is left as it was."""

    def __init__(self, what: str, value: object, expected: str, *, message: str | None = None) -> None:
        self.what = what
        self.value = value
        self.expected = expected
        super().__init__(message or f"{what} must be {expected} (got {value!r} that is a {type(value).__name__})")


# --- CloudStack's exceptions, as the model throws them -------------------------------------------------------------
# The model raises what CloudStack raises, under CloudStack's names and with its class hierarchy (which of them extend
# CloudRuntimeException decides what SnapshotManagerImpl's outer catch wraps), because the API's error code depends
# on the class (spec §5.2, appendix B). They are behaviour of the modelled system, not errors of snapshotfsm's own use.


class CloudException(SnapshotFSMError):
    """A CloudStack exception raised inside the model; ``cause`` is Java's ``getCause()``."""

    java_name = "java.lang.Exception"

    def __init__(self, message: str, *, cause: CloudException | None = None) -> None:
        self.message = message
        self.cause = cause
        super().__init__(message)


class CloudRuntimeException(CloudException):
    """``com.cloud.utils.exception.CloudRuntimeException``."""

    java_name = "com.cloud.utils.exception.CloudRuntimeException"


class UnsupportedOperationException(CloudException):
    """``java.lang.UnsupportedOperationException``: mapped to UNSUPPORTED_ACTION_ERROR when it is the cause (§5.2)."""

    java_name = "java.lang.UnsupportedOperationException"


class InvalidParameterValueException(CloudRuntimeException):
    """``com.cloud.exception.InvalidParameterValueException`` (PARAM_ERROR at the API)."""

    java_name = "com.cloud.exception.InvalidParameterValueException"


class PermissionDeniedException(CloudRuntimeException):
    """``com.cloud.exception.PermissionDeniedException`` (ACCOUNT_ERROR at the API)."""

    java_name = "com.cloud.exception.PermissionDeniedException"


class StorageUnavailableException(CloudException):
    """``com.cloud.exception.StorageUnavailableException`` (a ResourceUnavailableException).

    Its message is ``ResourceUnavailableException``'s: "Resource [<scope>:<id>] is unreachable: <msg>".
    """

    java_name = "com.cloud.exception.StorageUnavailableException"

    def __init__(self, message: str, *, scope: str, resource_id: int, cause: CloudException | None = None) -> None:
        self.scope = scope
        self.resource_id = resource_id
        super().__init__(f"Resource [{scope}:{resource_id}] is unreachable: {message}", cause=cause)


class ResourceAllocationException(CloudException):
    """``com.cloud.exception.ResourceAllocationException``: a resource limit would be exceeded."""

    java_name = "com.cloud.exception.ResourceAllocationException"

    def __init__(self, message: str, *, resource_type: str, cause: CloudException | None = None) -> None:
        self.resource_type = resource_type
        super().__init__(message, cause=cause)


class ConcurrentOperationException(CloudRuntimeException):
    """``com.cloud.exception.ConcurrentOperationException``."""

    java_name = "com.cloud.exception.ConcurrentOperationException"


class NullPointerException(CloudException):
    """``java.lang.NullPointerException``: what a null driver answer leads to (spec §5.6 step 6)."""

    java_name = "java.lang.NullPointerException"


class ServerApiException(CloudRuntimeException):
    """``org.apache.cloudstack.api.ServerApiException``: an error with its API code (appendix B)."""

    java_name = "org.apache.cloudstack.api.ServerApiException"

    def __init__(self, code: int, message: str, *, cause: CloudException | None = None) -> None:
        self.code = code
        super().__init__(message, cause=cause)


class ApiError(SnapshotFSMError):
    """An API call refused synchronously (the create phase, spec §5.1): CloudStack's error code and text.

    Nothing is rolled back: what the call committed before the error stays (spec §21.2, §21.4.3). A refusal of
    §5.1 comes before the snapshot's insert and leaves only the ERROR action event of ``allocSnapshot`` (and, for a
    recurring snapshot over its limit, an alert).
    """

    def __init__(self, code: int, text: str, *, exception: CloudException) -> None:
        self.code = code
        self.text = text
        self.exception = exception
        super().__init__(f"{code} {exception.java_name.rsplit('.', 1)[-1]}: {text}")


class NoTransitionException(CloudException):
    """``com.cloud.utils.fsm.NoTransitionException``: CloudStack's StateMachine2 refusing an event (spec §1.2)."""

    java_name = "com.cloud.utils.fsm.NoTransitionException"


class DriverContractError(SnapshotFSMError, RuntimeError):
    """A driver or a strategy broke the contract the workflows rely on (an undeclared operation, a second answer)."""


class NeverAnswered(BaseException):
    """A blocking driver call that is never answered (a ``no_answer`` fault): the calling thread waits for good.

    Not one of CloudStack's exceptions, and a ``BaseException`` so that no catch block of the modelled code on the
    way sees it: a blocked thread runs none of them. It unwinds the caller's open transaction (which a thread that
    never returns never commits) to the step that made the call, which then waits with nothing pending: its job
    never ends.
    """

    def __init__(self, operation: str) -> None:
        self.operation = operation
        super().__init__(f"{operation} was never answered: the calling thread waits for good")


class StepWithoutErrorTransition(SnapshotFSMError, RuntimeError):
    """A step raised, but its transition names no ``on_error``: the definition misses an error transition."""


class StepOrderError(SnapshotFSMError, RuntimeError):
    """A step read what an earlier step of its workflow should have set: the definition runs steps out of order."""

    def __init__(self, machine: str, field: str, setter: str) -> None:
        self.machine = machine
        self.field = field
        super().__init__(f"{machine}: {field!r} is read before step {setter} sets it")


class MsCrash(BaseException):
    """Raised to stop a management server at a named point (fault plan ``crash``); unwinds to the engine.

    A ``BaseException``, so that no ``except Exception`` on the way catches it: a crash is not an error the model
    handles, it ends the server.
    """

    def __init__(self, ms_id: int, where: str) -> None:
        self.ms_id = ms_id
        self.where = where
        super().__init__(f"management server {ms_id} crashed at {where}")
