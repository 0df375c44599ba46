"""Command line entry point (placeholder until serve lands)."""
from __future__ import annotations


def main() -> int:
    return 0
