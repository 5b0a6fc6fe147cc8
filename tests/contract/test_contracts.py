"""Every registered component keeps every contract of its kind (:mod:`mmfw.testing`, one test per pair)."""

from __future__ import annotations


def test_contract(under_test, case: tuple[str, str, str]) -> None:
    kind, name, contract = case
    under_test(kind, name).check(contract)
