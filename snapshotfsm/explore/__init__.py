"""The fault explorer: every fault at every point of scenarios given as data, judged by the invariants."""
