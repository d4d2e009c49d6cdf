"""The plugin's own tests: snapshotfsm's contract suites, mixed in."""

from example_array import ExampleArrayDriver, ExampleArrayStrategy

from snapshotfsm.testing import DriverContract, PoolShape, StrategyContract


class TestExampleArrayDriver(DriverContract):
    driver = ExampleArrayDriver
    strategies = (ExampleArrayStrategy,)


class TestExampleArrayStrategy(StrategyContract):
    strategy = ExampleArrayStrategy
    drivers = (ExampleArrayDriver,)
    shapes = (PoolShape.of(ExampleArrayDriver),)
