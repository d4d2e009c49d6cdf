"""The scenario format and the instances the explorer runs: what a scenario author sees when a file is wrong.

A scenario file is written by hand, so every mistake in it must stop the explorer before anything runs, with a
message that names the file and the key (and the nearest right spelling where there is one): a typo found after an
hour of exploration, or a silently ignored key, wastes the hour. The instances chosen from the scenarios are what the
exploration covers, so the pairwise choice is checked as a general rule (Hypothesis) and the default set for the cloud
shapes a user expects to be explored.
"""

from __future__ import annotations

import itertools
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from snapshotfsm.errors import ScenarioError
from snapshotfsm.explore.scenarios import (
    DIMENSIONS,
    POOLS,
    Instance,
    Scenario,
    choose,
    default_scenarios,
    default_scenarios_dir,
    load_scenario,
    load_scenarios,
    parse_scenario,
    select,
)

Write = Callable[..., Path]
TAKE = [{"call": "createSnapshot"}, {"run": True}]
SCENARIO_FILES = sorted(default_scenarios_dir().glob("*.toml"))


def scenario(**keys: Any) -> dict[str, Any]:
    """A valid scenario document (take a snapshot, run until idle) with ``keys`` replaced or added."""
    return {"description": "a test scenario", "step": TAKE, **keys}


def error_of(write: Write, doc: dict[str, Any] | str) -> tuple[Path, ScenarioError]:
    """Write ``doc`` as bad.toml, load it, and return the path with the error it must raise."""
    path = write(doc, "bad.toml")
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    return path, caught.value


def assert_error(error: ScenarioError, path: Path | str, key: str, problem: str) -> None:
    """The message is ``<file>: <key>: <problem>``, and the error keeps each part for a caller."""
    assert str(error) == f"{path}: {key}: {problem}"
    assert (error.path, error.key, error.problem) == (str(path), key, problem)


# --- the top level ------------------------------------------------------------------------------------------------


class TestTopLevel:
    def test_unknown_key_suggests_the_nearest(self, write_definition: Write) -> None:
        """A misspelt top-level key is refused, not ignored, and the right spelling is offered."""
        path, error = error_of(write_definition, scenario(descripton="typo"))
        assert_error(error, path, "descripton", "is not a scenario key (did you mean 'description'?)")

    def test_unknown_key_far_from_any_has_no_suggestion(self, write_definition: Write) -> None:
        """A key unlike any of the format's gets no made-up suggestion."""
        path, error = error_of(write_definition, scenario(zzz=1))
        assert_error(error, path, "zzz", "is not a scenario key")

    @pytest.mark.parametrize("description", [None, "", 7], ids=["missing", "empty", "not-a-string"])
    def test_description_is_required(self, write_definition: Write, description: object) -> None:
        """Every scenario says what it exercises: the report shows it next to what broke."""
        doc = scenario(description=description)
        if description is None:
            del doc["description"]
        path, error = error_of(write_definition, doc)
        assert_error(error, path, "description", "must be a non-empty string (what the scenario exercises)")

    @pytest.mark.parametrize("doc", [{"description": "no steps"}, scenario(step=[])], ids=["missing", "empty"])
    def test_steps_are_required(self, write_definition: Write, doc: dict[str, Any]) -> None:
        """A scenario without a program explores nothing, so it is refused."""
        path, error = error_of(write_definition, doc)
        assert_error(error, path, "step", "must be a non-empty array of tables ([[step]])")

    def test_non_utf8_file(self, tmp_path: Path) -> None:
        """A file in another encoding is refused as unreadable, naming the file, rather than crashing the run."""
        path = tmp_path / "latin1.toml"
        path.write_bytes('description = "café"\n'.encode("latin-1"))
        with pytest.raises(ScenarioError) as caught:
            load_scenario(path)
        assert caught.value.path == str(path)
        assert caught.value.key == "file"
        assert str(caught.value).startswith(f"{path}: file: cannot be read (")
        assert "utf-8" in str(caught.value)

    def test_invalid_toml(self, write_definition: Write) -> None:
        """TOML syntax errors name the file and keep the parser's line and column."""
        path, error = error_of(write_definition, 'description = "unterminated\n')
        assert (error.path, error.key) == (str(path), "file")
        assert str(error).startswith(f"{path}: file: is not valid TOML (")
        assert "line 1" in str(error)

    def test_a_valid_file_loads_under_its_stem(self, write_definition: Write) -> None:
        """The scenario's name is its file's stem: what ``--scenario`` patterns and instance names use."""
        path = write_definition(scenario(), "my-take.toml")
        loaded = load_scenario(path)
        assert (loaded.name, loaded.path, loaded.description) == ("my-take", str(path), "a test scenario")
        assert [s.kind for s in loaded.steps] == ["createSnapshot", "run"]

    def test_unknown_config_key(self, write_definition: Write) -> None:
        """A misspelt configuration key must stop the load, naming the file and the key."""
        path, error = error_of(write_definition, scenario(config={"snapshot.pol.interval": 900}))
        assert error.key == "config.snapshot.pol.interval"
        assert "did you mean 'snapshot.poll.interval'?" in str(error)
        assert str(error).startswith(f"{path}: ")

    def test_config_value_of_the_wrong_type(self, write_definition: Write) -> None:
        """A configuration value must have its key's type: a flag is not a number."""
        path, error = error_of(write_definition, scenario(config={"snapshot.poll.interval": True}))
        assert error.key == "config.snapshot.poll.interval"
        assert str(error) == f"{path}: config.snapshot.poll.interval: must be a int, not True"

    def test_unknown_limit(self, write_definition: Write) -> None:
        """A limit on a resource that does not exist must stop the load, naming the file and the key."""
        path, error = error_of(write_definition, scenario(limits={"snapshots": 3}))
        assert error.key == "limits.snapshots"
        assert "did you mean 'snapshot'?" in str(error)
        assert str(error).startswith(f"{path}: ")

    def test_limit_must_be_an_integer(self, write_definition: Write) -> None:
        """A boolean is not a count, even though Python would take it for one."""
        path, error = error_of(write_definition, scenario(limits={"snapshot": True}))
        assert_error(error, path, "limits.snapshot", "must be an integer (-1: no limit), not True")


# --- dimensions ---------------------------------------------------------------------------------------------------


class TestDimensions:
    def test_unknown_dimension_suggests_the_nearest(self, write_definition: Write) -> None:
        """A misspelt dimension would otherwise leave the scenario explored over every value of the real one."""
        path, error = error_of(write_definition, scenario(dimensions={"pools": ["rbd"]}))
        assert_error(error, path, "dimensions.pools", "is not a dimension (did you mean 'pool'?)")

    def test_unknown_value_lists_the_values_and_suggests_the_nearest(self, write_definition: Write) -> None:
        """The message lists every value the dimension has, so the author can pick one."""
        path, error = error_of(write_definition, scenario(dimensions={"pool": ["rbd", "storpol"]}))
        assert_error(
            error,
            path,
            "dimensions.pool",
            "'storpol' is not one of nfs-xenserver, nfs-kvm, nfs-vmware, rbd, clvm, storpool, powerflex, solidfire, "
            "ontap, solidfire-xenserver (did you mean 'storpool'?)",
        )

    @pytest.mark.parametrize("values", [[], "running"], ids=["empty", "not-a-list"])
    def test_values_are_a_non_empty_list(self, write_definition: Write, values: object) -> None:
        """A dimension with no value would leave no instance; a bare string is a common slip for a list."""
        path, error = error_of(write_definition, scenario(dimensions={"vm": values}))
        assert_error(error, path, "dimensions.vm", "must be a non-empty list of running, stopped, detached")

    @pytest.mark.parametrize(
        "dimensions",
        [
            {"pool": ["rbd"], "copies": ["pool-copy"]},
            {"copies": ["zone-copy"], "backup": ["no-backup"]},
        ],
        ids=["pool-copy-off-storpool", "copy-without-backup"],
    )
    def test_no_valid_combination(self, write_definition: Write, dimensions: dict[str, list[str]]) -> None:
        """Values that no cloud can have together are refused, rather than exploring nothing."""
        path, error = error_of(write_definition, scenario(dimensions=dimensions))
        assert_error(error, path, "dimensions", "leave no combination of values a cloud can have")

    def test_unlisted_dimensions_take_every_value(self) -> None:
        """A dimension a scenario does not name is explored over all its values, in the documented order."""
        parsed = parse_scenario(scenario(dimensions={"pool": ["storpool", "rbd", "rbd"]}), name="s")
        assert parsed.dimensions["pool"] == ("rbd", "storpool")
        assert {d: v for d, v in parsed.dimensions.items() if d != "pool"} == {
            d: v for d, v in DIMENSIONS.items() if d != "pool"
        }


# --- steps --------------------------------------------------------------------------------------------------------


class TestSteps:
    @pytest.mark.parametrize(
        "step",
        [{"call": "createSnapshot", "run": True}, {"run": True, "advance": 10}, {"ms": 1}],
        ids=["call-and-run", "run-and-advance", "none"],
    )
    def test_exactly_one_kind(self, write_definition: Write, step: dict[str, Any]) -> None:
        """A step is one thing: a call or a move of the clock or the servers."""
        path, error = error_of(write_definition, scenario(step=[*TAKE, step]))
        assert_error(error, path, "step 3", "must have exactly one of call, run, advance, poll, background, restart")

    def test_unknown_call_suggests_the_nearest(self, write_definition: Write) -> None:
        """A misspelt API call is refused with the calls a step may make."""
        path, error = error_of(write_definition, scenario(step=[{"call": "createSnapshots"}]))
        assert_error(
            error,
            path,
            "step 1: call",
            "'createSnapshots' is not one of createSnapshot, deleteSnapshot, copySnapshot, createSnapshotPolicy "
            "(did you mean 'createSnapshot'?)",
        )

    @pytest.mark.parametrize("kind", ["run", "advance", "poll", "background"])
    def test_a_step_kind_is_not_a_call(self, write_definition: Write, kind: str) -> None:
        """``call = "run"`` names no API call: the message must say so and list the calls, as for any other."""
        path, error = error_of(write_definition, scenario(step=[{"call": kind}]))
        assert_error(
            error,
            path,
            "step 1: call",
            f"{kind!r} is not one of createSnapshot, deleteSnapshot, copySnapshot, createSnapshotPolicy",
        )

    def test_unknown_key_suggests_the_nearest(self, write_definition: Write) -> None:
        """A key the step's kind does not have is refused, with the nearest key that kind has."""
        steps = [*TAKE, {"call": "deleteSnapshot", "snapshots": 1}]
        path, error = error_of(write_definition, scenario(step=steps))
        assert_error(
            error, path, "step 3: snapshots", "is not a key of a deleteSnapshot step (did you mean 'snapshot'?)"
        )

    def test_a_key_of_another_kind_is_refused(self, write_definition: Write) -> None:
        """``to_zone`` belongs to copySnapshot; on a createSnapshot it would be silently meaningless."""
        path, error = error_of(write_definition, scenario(step=[{"call": "createSnapshot", "to_zone": 2}]))
        assert_error(error, path, "step 1: to_zone", "is not a key of a createSnapshot step")

    @pytest.mark.parametrize(
        ("steps", "key", "problem"),
        [
            ([{"call": "deleteSnapshot", "snapshot": 1}, *TAKE], "step 1: snapshot", "is #1, but only 0"),
            ([*TAKE, {"call": "copySnapshot", "snapshot": 2, "to_zone": 2}], "step 3: snapshot", "is #2, but only 1"),
        ],
        ids=["before-any", "after-fewer"],
    )
    def test_snapshot_must_come_before(self, write_definition: Write, steps: list[Any], key: str, problem: str) -> None:
        """A step can only refer to a snapshot a createSnapshot earlier in the program made."""
        path, error = error_of(write_definition, scenario(step=steps))
        assert_error(error, path, key, f"{problem} createSnapshot come before it")

    def test_delete_needs_a_snapshot(self, write_definition: Write) -> None:
        """deleteSnapshot without ``snapshot`` would delete nothing; the message says what the number counts."""
        path, error = error_of(write_definition, scenario(step=[*TAKE, {"call": "deleteSnapshot"}]))
        assert_error(error, path, "step 3: snapshot", "is required by deleteSnapshot (which createSnapshot, from 1)")

    def test_copy_needs_a_destination(self, write_definition: Write) -> None:
        """copySnapshot without ``to_zone`` has nowhere to copy to."""
        path, error = error_of(write_definition, scenario(step=[*TAKE, {"call": "copySnapshot", "snapshot": 1}]))
        assert_error(error, path, "step 3: to_zone", "is required by copySnapshot (2: the second zone)")

    @pytest.mark.parametrize("servers", [None, ["one-server", "two-servers"]], ids=["default", "both"])
    def test_second_server_needs_two_servers(self, write_definition: Write, servers: list[str] | None) -> None:
        """A step on ms2 cannot run on an instance with one server, so every instance must have two."""
        doc = scenario(step=[{"call": "createSnapshot", "ms": 2}, {"run": True}])
        if servers is not None:
            doc["dimensions"] = {"servers": servers}
        path, error = error_of(write_definition, doc)
        assert_error(error, path, "step 1: ms", "is 2, so dimensions.servers must be ['two-servers']")

    def test_second_server_with_two_servers_loads(self, write_definition: Write) -> None:
        """With ``servers = ["two-servers"]`` the same program is accepted: the rule above is not a blanket ban."""
        doc = scenario(
            step=[{"call": "createSnapshot", "ms": 2}, {"run": True}], dimensions={"servers": ["two-servers"]}
        )
        loaded = load_scenario(write_definition(doc, "ms2.toml"))
        assert [str(s) for s in loaded.steps] == ["createSnapshot on ms2", "run until idle"]
        assert {i.servers for i in loaded.instances()} == {2}

    @pytest.mark.parametrize(
        ("step", "key", "shown"),
        [
            ({"call": "createSnapshot", "ms": 3}, "ms", "3"),
            ({"call": "createSnapshot", "ms": True}, "ms", "True"),
            ({"call": "deleteSnapshot", "snapshot": 0}, "snapshot", "0"),
            ({"call": "deleteSnapshot", "snapshot": 1, "zone": 3}, "zone", "3"),
            ({"call": "copySnapshot", "snapshot": 1, "to_zone": 1}, "to_zone", "1"),
            ({"call": "createSnapshotPolicy", "interval": "YEARLY"}, "interval", "'YEARLY'"),
            ({"call": "createSnapshotPolicy", "keep": 0}, "keep", "0"),
            ({"call": "createSnapshot", "name": ""}, "name", "''"),
            ({"advance": 0}, "advance", "0"),
        ],
    )
    def test_invalid_value_is_shown(self, write_definition: Write, step: dict[str, Any], key: str, shown: str) -> None:
        """A value out of its domain is refused showing the value, as the file wrote it."""
        path, error = error_of(write_definition, scenario(step=[*TAKE, step]))
        assert_error(error, path, f"step 3: {key}", f"{shown} is not a valid {key}")

    @pytest.mark.parametrize("kind", ["run", "poll", "background"])
    def test_flag_steps_must_be_true(self, write_definition: Write, kind: str) -> None:
        """``run = false`` reads as "do not run", which is no step at all: refused rather than guessed."""
        path, error = error_of(write_definition, scenario(step=[*TAKE, {kind: False}]))
        assert_error(error, path, f"step 3: {kind}", "must be true")


# --- loading directories and selecting instances ------------------------------------------------------------------


class TestLoadScenarios:
    def test_missing_directory(self, tmp_path: Path) -> None:
        """A wrong ``--scenario-dir`` is named, not taken for an empty exploration."""
        missing = tmp_path / "nowhere"
        with pytest.raises(ScenarioError) as caught:
            load_scenarios(missing)
        assert_error(caught.value, missing, "directory", "does not exist or is not a directory")

    def test_empty_directory(self, tmp_path: Path) -> None:
        """A directory without scenarios would explore nothing and report success; it is refused."""
        (tmp_path / "notes.txt").write_text("not a scenario", encoding="utf-8")
        with pytest.raises(ScenarioError) as caught:
            load_scenarios(tmp_path)
        assert_error(caught.value, tmp_path, "directory", "holds no *.toml scenarios")

    def test_in_file_name_order(self, write_definition: Write) -> None:
        """Scenarios come in file-name order, so that instance order (and the report) does not depend on the disk."""
        for name in ("b", "c", "a"):
            write_definition(scenario(), f"{name}.toml")
        assert [s.name for s in load_scenarios(write_definition(scenario(), "0.toml").parent)] == ["0", "a", "b", "c"]

    def test_one_bad_file_stops_the_load(self, write_definition: Write) -> None:
        """A malformed file among good ones is reported, not skipped."""
        write_definition(scenario(), "a.toml")
        bad = write_definition(scenario(step=[]), "b.toml")
        with pytest.raises(ScenarioError) as caught:
            load_scenarios(bad.parent)
        assert caught.value.path == str(bad)


class TestDefaultScenarios:
    @pytest.mark.parametrize("path", SCENARIO_FILES, ids=[p.stem for p in SCENARIO_FILES])
    def test_each_file_loads_and_says_what_it_exercises(self, path: Path) -> None:
        """Every shipped scenario is valid and carries a description written in the file itself."""
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
        assert isinstance(raw.get("description"), str)
        assert raw["description"].strip()
        loaded = load_scenario(path)
        assert (loaded.name, loaded.description) == (path.stem, raw["description"])
        assert loaded.instances()

    def test_default_set_is_every_file(self) -> None:
        """``default_scenarios`` is the directory's files, none dropped."""
        assert [s.name for s in default_scenarios()] == [p.stem for p in SCENARIO_FILES]
        assert {"take", "take-delete"} <= {p.stem for p in SCENARIO_FILES}

    @pytest.mark.parametrize(
        ("dimension", "expected"),
        [
            ("pool", set(POOLS)),
            ("vm", {"running", "stopped", "detached"}),
            ("encryption", {"plain", "encrypted"}),
            ("backup", {"sync", "async", "no-backup"}),
            ("copies", {"no-copies", "zone-copy", "pool-copy"}),
            ("servers", {"one-server", "two-servers"}),
        ],
    )
    def test_default_instances_cover_every_value(self, dimension: str, expected: set[str]) -> None:
        """The default (pairwise) exploration reaches every pool shape, attachment, encryption, backup, copy, server
        count: a value no instance has is a part of CloudStack the explorer never looks at."""
        assert {i.values[dimension] for i in choose(default_scenarios())} == expected

    def test_default_set_is_much_smaller_than_the_product(self) -> None:
        """Pairwise is worth having: it is a fraction of every instance, and a subset of them."""
        every = choose(default_scenarios(), full=True)
        chosen = choose(default_scenarios())
        assert len(chosen) * 10 < len(every)
        names = [i.name for i in every]
        assert {i.name for i in chosen} <= set(names)
        assert len({i.name for i in chosen}) == len(chosen)


class TestSelect:
    @pytest.fixture
    def instances(self) -> list[Instance]:
        return choose(default_scenarios())

    def test_no_pattern_selects_everything(self, instances: list[Instance]) -> None:
        """Without ``--scenario`` the whole default set is explored."""
        assert select(instances, []) == instances

    def test_scenario_name(self, instances: list[Instance]) -> None:
        """A scenario's name selects its instances and no other scenario's (take is not take-delete)."""
        chosen = select(instances, ["take"])
        assert chosen
        assert {i.scenario.name for i in chosen} == {"take"}
        assert chosen == [i for i in instances if i.scenario.name == "take"]

    def test_glob_on_scenario_names(self, instances: list[Instance]) -> None:
        """Shell patterns match scenario names."""
        assert {i.scenario.name for i in select(instances, ["take*"])} == {"take", "take-delete"}

    def test_glob_on_instance_names(self, instances: list[Instance]) -> None:
        """A pattern over the instance name picks one value of a dimension across scenarios."""
        chosen = select(instances, ["*:rbd/*"])
        assert chosen
        assert all(i.values["pool"] == "rbd" for i in chosen)
        assert chosen == [i for i in instances if i.values["pool"] == "rbd"]

    def test_overlapping_patterns_keep_order_without_repeats(self, instances: list[Instance]) -> None:
        """Two patterns that both match an instance run it once, in the set's order."""
        chosen = select(instances, ["take-delete", "take*"])
        assert chosen == [i for i in instances if i.scenario.name in ("take", "take-delete")]

    def test_exact_instance_name(self, instances: list[Instance]) -> None:
        """The name ``--list`` prints selects exactly that instance."""
        assert select(instances, [instances[3].name]) == [instances[3]]

    def test_unmatched_pattern_suggests_a_scenario(self, instances: list[Instance]) -> None:
        """A pattern matching nothing is an error naming it, with the nearest scenario name."""
        with pytest.raises(ScenarioError) as caught:
            select(instances, ["take", "two-server"])
        assert_error(
            caught.value, "--scenario", "two-server", "matches no scenario or instance (did you mean 'two-servers'?)"
        )


# --- pairwise, as a rule ------------------------------------------------------------------------------------------

Pair = tuple[str, str, str, str]


def valid(values: Mapping[str, str]) -> bool:
    """The clouds CloudStack can have, written from the spec here rather than taken from the code under test.

    Copies to another zone's primary pool are StorPool's (spec §8); a copy to another zone's image store goes through
    secondary storage, so it needs backup to secondary (only zone ids are refused when it is off, §7.4).
    """
    if values["copies"] == "pool-copy" and values["pool"] != "storpool":
        return False
    return values["copies"] != "zone-copy" or values["backup"] != "no-backup"


def every_valid(scenarios: list[Scenario]) -> set[str]:
    """The name of every valid instance of ``scenarios``, from the product of their dimensions."""
    names = set()
    for s in scenarios:
        for combo in combinations(s.dimensions):
            values = dict(zip(DIMENSIONS, combo, strict=True))
            if valid(values):
                names.add(f"{s.name}:{'/'.join(combo)}")
    return names


def pairs_of(instance: Instance) -> set[Pair]:
    """The pairs an instance covers: two dimensions' values, and its scenario with each value but the pool's."""
    items = [(d, instance.values[d]) for d in DIMENSIONS]
    out = {(a, va, b, vb) for (a, va), (b, vb) in itertools.combinations(items, 2)}
    out |= {("scenario", instance.scenario.name, d, v) for d, v in items if d != "pool"}
    return out


Dimensions = dict[str, list[str]]


def build(drawn: list[Dimensions]) -> list[Scenario]:
    """The scenarios ``s0``, ``s1``, ... over ``drawn`` dimensions, leaving out those no cloud can have.

    Which those are is decided by :func:`valid`, so a scenario the loader refuses although it has a valid
    combination fails the test.
    """
    return [
        parse_scenario(scenario(dimensions=dimensions), name=f"s{n}")
        for n, dimensions in enumerate(drawn)
        if any(valid(dict(zip(DIMENSIONS, combo, strict=True))) for combo in combinations(dimensions))
    ]


def combinations(dimensions: Mapping[str, Sequence[str]]) -> itertools.product[tuple[str, ...]]:
    """Every combination of one value of each dimension, in dimension order."""
    return itertools.product(*(dimensions[d] for d in DIMENSIONS))


subsets: st.SearchStrategy[Dimensions] = st.fixed_dictionaries(
    {d: st.lists(st.sampled_from(values), min_size=1, unique=True) for d, values in DIMENSIONS.items()}
)
"""A random non-empty subset of every dimension's values, in a random order."""
scenario_sets = st.lists(subsets, min_size=1, max_size=3).filter(lambda drawn: bool(build(drawn)))
"""One to three scenarios' dimensions, at least one of them a cloud CloudStack can have."""


class TestPairwise:
    @given(scenario_sets)
    def test_every_pair_some_instance_has_is_chosen(self, drawn: list[Dimensions]) -> None:
        """Whatever two values occur together in a valid instance also occur together in a chosen one."""
        scenarios = build(drawn)
        every = [i for s in scenarios for i in s.instances()]
        chosen = choose(scenarios)
        wanted = set().union(*(pairs_of(i) for i in every))
        covered = set().union(*(pairs_of(i) for i in chosen))
        assert wanted <= covered

    @given(scenario_sets)
    def test_chosen_are_valid_instances_in_order(self, drawn: list[Dimensions]) -> None:
        """The pairwise set only picks from the valid instances, each once, keeping their order."""
        scenarios = build(drawn)
        names = [i.name for s in scenarios for i in s.instances()]
        chosen = [i.name for i in choose(scenarios)]
        assert set(chosen) <= every_valid(scenarios)
        assert chosen == [n for n in names if n in set(chosen)]

    @given(scenario_sets)
    def test_full_is_every_valid_instance(self, drawn: list[Dimensions]) -> None:
        """``--full`` runs every valid combination, and no combination CloudStack cannot have."""
        scenarios = build(drawn)
        full = [i.name for i in choose(scenarios, full=True)]
        assert len(full) == len(set(full))
        assert set(full) == every_valid(scenarios)

    @given(scenario_sets)
    def test_deterministic(self, drawn: list[Dimensions]) -> None:
        """The same scenarios, loaded twice, give the same instances: two explorations of one tree run the same."""
        assert [i.name for i in choose(build(drawn))] == [i.name for i in choose(build(drawn))]

    def test_single_instance_is_chosen(self) -> None:
        """A scenario with one value per dimension has one instance, and it is explored."""
        one = {d: [v[0]] for d, v in DIMENSIONS.items()}
        parsed = parse_scenario(scenario(dimensions=one), name="one")
        assert [i.name for i in choose([parsed])] == ["one:nfs-xenserver/running/plain/sync/no-copies/one-server"]
