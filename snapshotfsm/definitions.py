"""Load the state-machine definitions of ``states/*.toml`` into frozen records, and find what is odd about them.

The TOML files are the only place where state, event and step names are written; Python reaches them through the
records loaded here (``definition.state("Ready")``), so that a misspelt name fails when the module that uses it is
imported, not deep inside a job. The format is documented in ``states/README.md``.
"""

from __future__ import annotations

import functools
import tomllib
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import attrs

from snapshotfsm.errors import DefinitionError, UnknownMachine, did_you_mean
from snapshotfsm.profiles import PROFILES

TAGS = frozenset({"transitional", "terminal", "error", "waiting"})
KINDS = ("entity", "workflow")

_TOP_KEYS = frozenset({"machine", "states", "events", "transitions"})
_MACHINE_KEYS = frozenset({"name", "kind", "title", "spec", "source", "table", "column", "initial", "note"})
_STATE_KEYS = frozenset({"name", "tags", "note", "spec", "ordinal"})
_EVENT_KEYS = frozenset({"name", "note", "spec", "failure"})
_TRANSITION_KEYS = frozenset(
    {"source", "event", "dest", "spec", "note", "usage", "calls", "on_error", "never_fired", "profiles"}
)


@attrs.frozen
class StateDef:
    """One state: its name, its tags and, for ``async_job``, the ordinal CloudStack stores."""

    name: str
    tags: frozenset[str] = frozenset()
    note: str = ""
    spec: str = ""
    ordinal: int | None = None

    @property
    def transitional(self) -> bool:
        """An operation is under way (volume: CloudStack's own flag)."""
        return "transitional" in self.tags

    @property
    def terminal(self) -> bool:
        """Nothing leaves it for another state."""
        return "terminal" in self.tags

    @property
    def error(self) -> bool:
        """A failure ends here; transitions into it are error edges."""
        return "error" in self.tags

    @property
    def waiting(self) -> bool:
        """A workflow job parks here until a driver answer, a queue slot or the clock moves it on."""
        return "waiting" in self.tags


@attrs.frozen
class EventDef:
    """One declared event."""

    name: str
    note: str = ""
    spec: str = ""
    failure: bool = False


@attrs.frozen
class TransitionDef:
    """One ``(source, event)`` pair of a transition table, with the number of its row.

    Rows are numbered from 1 in file order (CloudStack's registration order). A workflow row whose ``source`` is a
    list gives one record per source, in list order, all carrying that row's number and the rest of the row.
    """

    number: int
    source: str
    event: str
    dest: str
    spec: str = ""
    note: str = ""
    usage: bool = False
    calls: str | None = None
    on_error: str | None = None
    never_fired: bool = False
    profiles: tuple[str, ...] = ()
    """The profiles the transition exists under (workflow machines only); empty: every profile.

    A fix of the ``hardened`` profile may add a step to a workflow (a timeout, a restart's resumption); the row
    says so, and a machine built for another profile does not have it (:meth:`Definition.for_profile`).
    """

    def under(self, profile: str) -> bool:
        """Whether the transition exists under ``profile``."""
        return not self.profiles or profile in self.profiles


@attrs.frozen
class Finding:
    """A static observation about a definition that is legal but worth a look (``snapshotfsm check`` prints them)."""

    machine: str
    kind: Literal["unreachable", "dead-end", "unused-event"]
    subject: str
    message: str


@attrs.frozen
class Definition:
    """A whole machine: states, events and transitions in file order, with the lookups the layers above need."""

    path: str
    name: str
    kind: str
    initial: str
    states: tuple[StateDef, ...]
    events: tuple[EventDef, ...]
    transitions: tuple[TransitionDef, ...]
    title: str = ""
    spec: str = ""
    source: str = ""
    table: str = ""
    column: str = ""
    note: str = ""
    _by_state: Mapping[str, StateDef] = attrs.field(init=False, repr=False, eq=False)
    _table: Mapping[tuple[str, str], TransitionDef] = attrs.field(init=False, repr=False, eq=False)
    _exits: Mapping[str, tuple[TransitionDef, ...]] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        exits: dict[str, list[TransitionDef]] = {s.name: [] for s in self.states}
        for t in self.transitions:
            exits[t.source].append(t)
        object.__setattr__(self, "_by_state", {s.name: s for s in self.states})
        object.__setattr__(self, "_table", {(t.source, t.event): t for t in self.transitions})
        object.__setattr__(self, "_exits", {name: tuple(ts) for name, ts in exits.items()})

    @property
    def profiled(self) -> bool:
        """Whether some transition exists only under some profiles."""
        return any(t.profiles for t in self.transitions)

    def for_profile(self, profile: str) -> Definition:
        """The machine as ``profile`` runs it: without the transitions of other profiles (itself when none is).

        States and events stay declared: a profile adds moves to a workflow, never names.
        """
        if not self.profiled:
            return self
        return attrs.evolve(self, transitions=tuple(t for t in self.transitions if t.under(profile)))

    @property
    def state_names(self) -> tuple[str, ...]:
        """State names in declaration order."""
        return tuple(s.name for s in self.states)

    def has_state(self, name: str) -> bool:
        """Whether ``name`` is one of the machine's states (a lookup, for the store's hot path)."""
        return name in self._by_state

    @property
    def event_names(self) -> tuple[str, ...]:
        """Event names in declaration order."""
        return tuple(e.name for e in self.events)

    @property
    def row_count(self) -> int:
        """How many ``[[transitions]]`` rows the file writes; ``len(transitions)`` counts ``(source, event)`` pairs."""
        return len({t.number for t in self.transitions})

    def state(self, name: str) -> str:
        """Return ``name`` if it is a state of this machine; the way code names a state."""
        if name not in self._by_state:
            raise DefinitionError(
                self.path, self.name, f"state {name!r}", "is not a state" + did_you_mean(name, self._by_state)
            )
        return name

    def event(self, name: str) -> str:
        """Return ``name`` if it is a declared event of this machine; the way code names an event."""
        if name not in self.event_names:
            problem = "is not a declared event" + did_you_mean(name, self.event_names)
            raise DefinitionError(self.path, self.name, f"event {name!r}", problem)
        return name

    def state_def(self, name: str) -> StateDef:
        """The record of state ``name``."""
        return self._by_state[self.state(name)]

    def transition(self, source: str, event: str) -> TransitionDef | None:
        """The row for ``(source, event)``, or None when the pair is illegal."""
        return self._table.get((source, event))

    def exits(self, source: str) -> tuple[TransitionDef, ...]:
        """Transitions leaving ``source``, in table order."""
        return self._exits.get(source, ())

    def allowed(self, source: str) -> tuple[str, ...]:
        """Events allowed in ``source``, in table order."""
        return tuple(t.event for t in self.exits(source))

    def error_transition(self, row: TransitionDef) -> TransitionDef | None:
        """The transition taken when ``row``'s step callback raises: ``(row.source, row.on_error)``."""
        return None if row.on_error is None else self._table[(row.source, row.on_error)]

    @functools.cached_property
    def error_events(self) -> frozenset[str]:
        """Failure events: declared ``failure = true``, or named by some transition as its ``on_error``."""
        named = {t.on_error for t in self.transitions if t.on_error}
        return frozenset(named | {e.name for e in self.events if e.failure})

    def is_error_transition(self, row: TransitionDef) -> bool:
        """Drawn apart in diagrams: the rollback path of a step, or a move into an error-tagged state."""
        return row.event in self.error_events or self._by_state[row.dest].error

    def reachable(self, *, in_practice: bool = False) -> frozenset[str]:
        """States reachable from ``initial``; ``in_practice`` skips the rows CloudStack's code never fires."""
        seen = {self.initial}
        todo = [self.initial]
        while todo:
            for t in self.exits(todo.pop()):
                if in_practice and t.never_fired:
                    continue
                if t.dest not in seen:
                    seen.add(t.dest)
                    todo.append(t.dest)
        return frozenset(seen)

    def findings(self) -> list[Finding]:
        """Static observations: unreachable states, dead ends not tagged terminal, declared events never used."""
        out: list[Finding] = []
        reachable = self.reachable()
        out.extend(
            Finding(self.name, "unreachable", s.name, f"state {s.name!r} cannot be reached from {self.initial!r}")
            for s in self.states
            if s.name not in reachable
        )
        in_practice = self.reachable(in_practice=True)
        for s in self.states:
            if s.name in reachable and s.name not in in_practice:
                numbers = dict.fromkeys(t.number for t in self.transitions if t.never_fired and t.dest == s.name)
                rows = ", ".join(f"#{n}" for n in numbers)
                out.append(
                    Finding(
                        self.name,
                        "unreachable",
                        s.name,
                        f"state {s.name!r} can be reached only through transitions that are never fired ({rows})",
                    )
                )
        for s in self.states:
            leaves = [t for t in self.exits(s.name) if t.dest != s.name]
            if not leaves and not s.terminal:
                out.append(
                    Finding(
                        self.name,
                        "dead-end",
                        s.name,
                        f"state {s.name!r} has no exit to another state and is not tagged terminal",
                    )
                )
        used = {t.event for t in self.transitions}
        out.extend(
            Finding(self.name, "unused-event", e.name, f"event {e.name!r} is declared but no transition uses it")
            for e in self.events
            if e.name not in used
        )
        return out


def unresolved_calls(definition: Definition, known: Collection[str]) -> list[DefinitionError]:
    """The rows whose ``calls`` names no known step, one error per row in file order (empty when all resolve).

    The loader cannot tell a misspelt step on its own: steps are registered by the orchestration layer, above this
    one, so the caller passes their names in (``snapshotfsm check`` passes every registered step).

    Args:
        definition: a loaded machine; entity machines have no ``calls`` and give no errors.
        known: the step names a ``calls`` may use.

    Returns:
        A :class:`DefinitionError` per row with an unknown step, keyed ``transition N: calls``, with the nearest
        known name: "'api.alocate' is not a step (did you mean 'api.allocate'?)".
    """
    out: list[DefinitionError] = []
    done: set[int] = set()
    for t in definition.transitions:
        if t.calls is None or t.calls in known or t.number in done:
            continue
        done.add(t.number)  # a row with several sources is one mistake, reported once
        problem = f"{t.calls!r} is not a step" + did_you_mean(t.calls, known)
        out.append(DefinitionError(definition.path, definition.name, f"transition {t.number}: calls", problem))
    return out


def default_states_dir() -> Path:
    """``states/`` of a source checkout, else the copy a wheel carries inside the package."""
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "states", here / "states"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"no states/ directory next to {here}")


@attrs.frozen
class Definitions(Mapping[str, Definition]):
    """All machines of one ``states/`` directory, by name, in file-name order."""

    directory: str
    machines: Mapping[str, Definition]

    def __getitem__(self, name: str) -> Definition:
        try:
            return self.machines[name]
        except KeyError:
            raise UnknownMachine(name, self.machines) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.machines)

    def __len__(self) -> int:
        return len(self.machines)

    def for_profile(self, profile: str) -> Definitions:
        """Every machine as ``profile`` runs it (:meth:`Definition.for_profile`), made once per profile.

        The same object for the same profile, and ``self`` when no transition is profile-specific: engines cache
        what they build from definitions by identity (``engine_machines``, ``engine_catalogue``).
        """
        if not any(d.profiled for d in self.machines.values()):
            return self
        key = (id(self), profile)
        cached = _PROFILED.get(key)
        if cached is not None and cached[0] is self:
            return cached[1]
        made = Definitions(self.directory, {name: d.for_profile(profile) for name, d in self.machines.items()})
        _PROFILED[key] = (self, made)
        return made


_PROFILED: dict[tuple[int, str], tuple[Definitions, Definitions]] = {}
"""``Definitions.for_profile``'s results, keyed by the identity of the full set (kept alive with it) and profile."""


def load_directory(directory: Path | str | None = None) -> Definitions:
    """Load and validate every ``*.toml`` of ``directory`` (default: the project's ``states/``).

    Raises:
        DefinitionError: the first problem found, naming the file, the machine and the key.
    """
    root = Path(directory) if directory is not None else default_states_dir()
    if not root.is_dir():
        raise DefinitionError(str(root), None, "directory", "does not exist or is not a directory")
    machines: dict[str, Definition] = {}
    for path in sorted(root.glob("*.toml")):
        definition = load_file(path)
        if definition.name in machines:
            raise DefinitionError(
                str(path), definition.name, "machine.name", f"is also defined in {machines[definition.name].path}"
            )
        machines[definition.name] = definition
    if not machines:
        raise DefinitionError(str(root), None, "directory", "holds no *.toml definitions")
    return Definitions(str(root), machines)


@functools.cache
def project_definitions() -> Definitions:
    """The project's own definitions, loaded once per process."""
    return load_directory()


def load_file(path: Path | str) -> Definition:
    """Load and validate one definition file.

    Raises:
        DefinitionError: naming the file, the machine and the key at fault.
    """
    path = Path(path)
    where = str(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise DefinitionError(where, None, "TOML", f"syntax error: {exc}") from exc
    except UnicodeDecodeError as exc:
        problem = f"is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); save it as UTF-8"
        raise DefinitionError(where, None, "file", problem) from exc
    except OSError as exc:
        raise DefinitionError(where, None, "file", f"cannot be read: {exc.strerror}") from exc
    return _Parser(where, raw).definition()


def load_path(path: Path | str | None = None) -> Definitions:
    """Load a directory of definitions, or one definition file (what ``snapshotfsm check PATH`` takes).

    Raises:
        DefinitionError: ``path`` does not exist, is neither a directory nor a ``.toml`` file, or holds a problem.
    """
    if path is None or Path(path).is_dir():
        return load_directory(path)
    where = Path(path)
    if not where.exists():
        raise DefinitionError(str(where), None, "path", "does not exist (give a directory of *.toml or one .toml file)")
    if not where.is_file() or where.suffix != ".toml":
        raise DefinitionError(str(where), None, "path", "is neither a directory nor a .toml definition file")
    definition = load_file(where)
    return Definitions(str(where), {definition.name: definition})


class _Parser:
    """Validates one parsed TOML document; every error names the file, the machine and the key."""

    def __init__(self, path: str, raw: dict[str, Any]) -> None:
        self.path = path
        self.raw = raw
        self.machine: str | None = None

    def fail(self, key: str, problem: str) -> DefinitionError:
        return DefinitionError(self.path, self.machine, key, problem)

    def check_keys(self, table: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
        for key in table:
            if key not in allowed:
                raise self.fail(f"{where}{key}", "unknown field" + did_you_mean(key, allowed))

    def text(self, table: Mapping[str, Any], key: str, where: str, *, required: bool = False) -> str:
        value = table.get(key)
        if value is None:
            if required:
                raise self.fail(f"{where}{key}", "is missing")
            return ""
        if not isinstance(value, str) or (required and not value.strip()):
            raise self.fail(f"{where}{key}", f"must be a non-empty string (got {value!r})")
        return value

    def flag(self, table: Mapping[str, Any], key: str, where: str) -> bool:
        value = table.get(key, False)
        if not isinstance(value, bool):
            raise self.fail(f"{where}{key}", f"must be true or false (got {value!r})")
        return value

    def table_list(self, key: str) -> list[dict[str, Any]]:
        value = self.raw.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self.fail(key, f"must be an array of tables ([[{key}]])")
        return value

    def definition(self) -> Definition:
        machine = self.raw.get("machine")
        declared = machine.get("name") if isinstance(machine, dict) else None
        if isinstance(declared, str) and declared.strip():
            self.machine = declared  # so that errors found before the name is validated still name the machine
        self.check_keys(self.raw, _TOP_KEYS, "")
        if not isinstance(machine, dict):
            raise self.fail("machine", "the [machine] table is missing")
        self.check_keys(machine, _MACHINE_KEYS, "machine.")
        self.machine = self.text(machine, "name", "machine.", required=True)
        stem = Path(self.path).stem
        if self.machine != stem:
            raise self.fail("machine.name", f"must match the file name {stem!r} so that a machine is easy to find")
        kind = machine.get("kind", "entity")
        if kind not in KINDS:
            raise self.fail("machine.kind", f"must be one of {', '.join(KINDS)} (got {kind!r})")
        states = self.states()
        names = {s.name for s in states}
        initial = machine.get("initial")
        if initial is None:
            raise self.fail("machine.initial", "is missing")
        if initial not in names:
            raise self.fail("machine.initial", f"{initial!r} is not a state" + did_you_mean(str(initial), names))
        events = self.events()
        transitions = self.transitions(kind, names, [e.name for e in events])
        return Definition(
            path=self.path,
            name=self.machine,
            kind=kind,
            initial=initial,
            states=tuple(states),
            events=tuple(events),
            transitions=tuple(transitions),
            title=self.text(machine, "title", "machine."),
            spec=self.text(machine, "spec", "machine."),
            source=self.text(machine, "source", "machine."),
            table=self.text(machine, "table", "machine."),
            column=self.text(machine, "column", "machine."),
            note=self.text(machine, "note", "machine."),
        )

    def states(self) -> list[StateDef]:
        rows = self.table_list("states")
        if not rows:
            raise self.fail("states", "a machine needs at least one [[states]] entry")
        out: list[StateDef] = []
        seen: set[str] = set()
        with_ordinal = 0
        for i, row in enumerate(rows, 1):
            where = f"state {i}: "
            self.check_keys(row, _STATE_KEYS, where)
            name = self.text(row, "name", where, required=True)
            if name in seen:
                raise self.fail(f"state {i}: name", f"{name!r} is declared twice")
            seen.add(name)
            tags = row.get("tags", [])
            if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
                raise self.fail(f"state {name!r}: tags", f"must be a list of strings (got {tags!r})")
            for tag in tags:
                if tag not in TAGS:
                    raise self.fail(
                        f"state {name!r}: tags",
                        f"unknown tag {tag!r} (known: {', '.join(sorted(TAGS))})" + did_you_mean(tag, TAGS),
                    )
            ordinal = row.get("ordinal")
            if ordinal is not None:
                if not isinstance(ordinal, int) or isinstance(ordinal, bool) or ordinal < 0:
                    raise self.fail(f"state {name!r}: ordinal", f"must be a non-negative integer (got {ordinal!r})")
                if any(s.ordinal == ordinal for s in out):
                    raise self.fail(f"state {name!r}: ordinal", f"{ordinal} is already used")
                with_ordinal += 1
            out.append(
                StateDef(
                    name=name,
                    tags=frozenset(tags),
                    note=self.text(row, "note", where),
                    spec=self.text(row, "spec", where),
                    ordinal=ordinal,
                )
            )
        if with_ordinal not in (0, len(out)):
            missing = next(s.name for s in out if s.ordinal is None)
            raise self.fail(f"state {missing!r}: ordinal", "is missing; give every state an ordinal or none")
        return out

    def events(self) -> list[EventDef]:
        out: list[EventDef] = []
        for i, row in enumerate(self.table_list("events"), 1):
            where = f"event {i}: "
            self.check_keys(row, _EVENT_KEYS, where)
            name = self.text(row, "name", where, required=True)
            if any(e.name == name for e in out):
                raise self.fail(f"event {i}: name", f"{name!r} is declared twice")
            failure = self.flag(row, "failure", f"event {name!r}: ")
            out.append(EventDef(name, self.text(row, "note", where), self.text(row, "spec", where), failure))
        return out

    def sources(self, row: Mapping[str, Any], kind: str, where: str) -> list[str]:
        """A row's ``source``: one state name, or (workflow machines) a list of distinct names, one pair each.

        Only the shape is checked here; the names are checked against the states together with ``dest``.
        """
        value = row.get("source")
        if not isinstance(value, list):
            if kind == "workflow" and value is not None and not isinstance(value, str):
                raise self.fail(f"{where}source", f"must be a state name or a non-empty list of them (got {value!r})")
            return [self.text(row, "source", where, required=True)]
        if kind == "entity":
            raise self.fail(
                f"{where}source",
                "a list of sources is for workflow machines; an entity machine is CloudStack's table verbatim, "
                "one row per registration as the spec numbers them: write one row per source",
            )
        if not value:
            raise self.fail(f"{where}source", "must be a state name or a non-empty list of them (got [])")
        names: list[str] = []
        for i, name in enumerate(value, 1):
            if not isinstance(name, str) or not name.strip():
                raise self.fail(f"{where}source", f"element {i} must be a non-empty string (got {name!r})")
            if name in names:
                raise self.fail(
                    f"{where}source",
                    f"{name!r} (element {i}) is already element {names.index(name) + 1}; list a source once",
                )
            names.append(name)
        return names

    def steps(self, row: Mapping[str, Any], kind: str, events: list[str], where: str) -> tuple[str | None, str | None]:
        """A row's ``calls`` and ``on_error``: workflow machines only; ``on_error`` needs a step and names an event."""
        calls = row.get("calls")
        on_error = row.get("on_error")
        if kind == "entity" and (calls is not None or on_error is not None):
            key = "calls" if calls is not None else "on_error"
            raise self.fail(f"{where}{key}", "only workflow machines run step callbacks (set machine.kind)")
        if calls is not None:
            calls = self.text(row, "calls", where, required=True)
        if on_error is not None:
            on_error = self.text(row, "on_error", where, required=True)
            if calls is None:
                raise self.fail(f"{where}on_error", "needs a step (calls) whose failure it handles")
            if on_error not in events:
                raise self.fail(
                    f"{where}on_error", f"{on_error!r} is not a declared event" + did_you_mean(on_error, events)
                )
        return calls, on_error

    def profiles(self, row: Mapping[str, Any], kind: str, where: str) -> tuple[str, ...]:
        """A row's ``profiles``: workflow machines only, a non-empty list of distinct known profile names."""
        value = row.get("profiles")
        if value is None:
            return ()
        key = f"{where}profiles"
        if kind == "entity":
            raise self.fail(
                key,
                "an entity machine is CloudStack's table verbatim and no profile changes it; "
                "a fix adds its transitions to a workflow machine",
            )
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise self.fail(key, f"must be a non-empty list of profile names (got {value!r})")
        for name in value:
            if name not in PROFILES:
                raise self.fail(
                    key,
                    f"{name!r} is not a profile (known: {', '.join(sorted(PROFILES))})" + did_you_mean(name, PROFILES),
                )
        if len(set(value)) != len(value):
            raise self.fail(key, f"lists a profile twice (got {value!r})")
        return tuple(value)

    def transitions(self, kind: str, states: set[str], events: list[str]) -> list[TransitionDef]:
        out: list[TransitionDef] = []
        seen: dict[tuple[str, str], int] = {}
        for number, row in enumerate(self.table_list("transitions"), 1):
            where = f"transition {number}: "
            self.check_keys(row, _TRANSITION_KEYS, where)
            sources = self.sources(row, kind, where)
            event = self.text(row, "event", where, required=True)
            dest = self.text(row, "dest", where, required=True)
            for i, source in enumerate(sources, 1):
                if source not in states:
                    element = f" (element {i})" if isinstance(row["source"], list) else ""
                    problem = f"{source!r}{element} is not a state" + did_you_mean(source, states)
                    raise self.fail(f"{where}source", problem)
            if dest not in states:
                raise self.fail(f"{where}dest", f"{dest!r} is not a state" + did_you_mean(dest, states))
            if event not in events:
                raise self.fail(f"{where}event", f"{event!r} is not a declared event" + did_you_mean(event, events))
            for source in sources:
                if (source, event) in seen:
                    earlier = seen[(source, event)]
                    problem = f"({source}, {event}) is already transition {earlier}; a pair has one destination"
                    raise self.fail(f"{where}event", problem)
                seen[(source, event)] = number
            usage = self.flag(row, "usage", where)
            never_fired = self.flag(row, "never_fired", where)
            calls, on_error = self.steps(row, kind, events, where)
            profiles = self.profiles(row, kind, where)
            spec = self.text(row, "spec", where)
            note = self.text(row, "note", where)
            out.extend(
                TransitionDef(
                    number=number,
                    source=source,
                    event=event,
                    dest=dest,
                    spec=spec,
                    note=note,
                    usage=usage,
                    calls=calls,
                    on_error=on_error,
                    never_fired=never_fired,
                    profiles=profiles,
                )
                for source in sources
            )
        by_pair = {(t.source, t.event): t for t in out}
        for t in out:
            if t.on_error is not None and (t.source, t.on_error) not in seen:
                raise self.fail(
                    f"transition {t.number}: on_error",
                    f"no transition ({t.source}, {t.on_error}) exists to take when step {t.calls!r} fails",
                )
            handler = by_pair.get((t.source, t.on_error)) if t.on_error is not None else None
            if handler is not None and handler.profiles:
                missing = [p for p in (t.profiles or tuple(PROFILES)) if not handler.under(p)]
                if missing:
                    raise self.fail(
                        f"transition {t.number}: on_error",
                        f"its error transition {handler.number} ({t.source}, {t.on_error}) exists only under "
                        f"{', '.join(handler.profiles)}, so under {', '.join(missing)} a failure of {t.calls!r} "
                        "would have nowhere to go",
                    )
        by_name = {s: [t for t in out if t.source == s and t.dest != s] for s in states}
        for s in self.raw["states"]:
            if "terminal" in s.get("tags", []) and by_name[s["name"]]:
                first = by_name[s["name"]][0]
                raise self.fail(
                    f"state {s['name']!r}: tags",
                    f"is tagged terminal but transition {first.number} leaves it for {first.dest!r}",
                )
        return out
