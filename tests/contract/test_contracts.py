"""Every registered component keeps every contract of its kind (:mod:`mmfw.testing`, one test per pair); a contract
that does not apply to a component (dynamic sizes of a fixed-size encoder, an export it does not declare) is a
skip with the reason."""

from __future__ import annotations

import pytest


def test_contract(under_test, case: tuple[str, str, str]) -> None:
    kind, name, contract = case
    not_applicable = under_test(kind, name).check(contract)
    if not_applicable:
        pytest.skip(not_applicable)
