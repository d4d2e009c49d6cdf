"""Orchestration (DESIGN.md layer 6): the step callbacks of the workflow machines and what they share."""
