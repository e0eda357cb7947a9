"""The validity table: each row is produced by its scenario, gates what the table says, is monotone
in severity, and matches docs/oracle.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from oracle_factories import at, fix, hour_of, run

from oracle.records import Vintage
from oracle.validity import GATES, SEVERITY, Gates, Validity, gates_for, worst

DOC = Path(__file__).resolve().parents[2] / "docs" / "oracle.md"

SCENARIOS = {
    Validity.FRESH: ([fix(0, "3.0000")], (0, 1), {}),
    Validity.REVISED: ([fix(0, "3.0000"), fix(1, "3.1000"),
                        fix(0, "3.2000", Vintage.REVISED, original="3.0000", published_ns=hour_of(1, 1, 0))],
                       (1, 2), {}),
    Validity.AGING: ([fix(0, "3.0000")], (1, 5), {}),
    Validity.SUPPRESSED: ([fix(0, "3.0000"), fix(1, None, suppressed="1 venue")], (1, 1), {}),
    Validity.DIVERGED: ([fix(0, "3.0000", source="a"), fix(0, "3.5000", source="b")], (0, 1),
                        {"sources": ("a", "b"), "primary_source": "a"}),
    Validity.TOO_VOLATILE: ([fix(0, "3.0000"), fix(1, "1.0000")], (1, 1), {}),
    Validity.NON_POSITIVE: ([fix(0, "3.0000"), fix(1, "-1")], (1, 1), {}),
    Validity.STALE: ([fix(0, "3.0000")], (2, 2), {}),
}


def test_every_validity_has_exactly_one_row_and_one_scenario():
    assert set(GATES) == set(Validity) == set(SCENARIOS)


@pytest.mark.parametrize("validity", list(Validity), ids=lambda v: v.value)
def test_each_row_is_published_with_its_gates(validity):
    records, (n, hh), overrides = SCENARIOS[validity]
    _, points, _ = run(records, hour_of(n, hh), **overrides)
    point = at(points, n, hh)
    assert point.validity is validity
    assert point.flags == ((validity,) if validity is not Validity.FRESH else ())
    assert point.gates == GATES[validity]


def test_gates_never_loosen_as_severity_grows():
    rows = sorted(GATES.items(), key=lambda kv: SEVERITY[kv[0]])
    for (_, better), (worse_v, worse) in zip(rows, rows[1:]):
        for name in ("funding_frozen", "margin_on_worse_of_anchor_and_fix", "reduce_only",
                     "liquidations_throttled", "order_band_frozen"):
            assert getattr(worse, name) >= getattr(better, name), (worse_v, name)
        assert worse.leverage_scale_ppm <= better.leverage_scale_ppm, worse_v


def test_several_flags_combine_to_the_strictest_of_each_gate():
    combined = gates_for([Validity.AGING, Validity.NON_POSITIVE, Validity.REVISED])
    assert combined == GATES[Validity.NON_POSITIVE]
    assert worst([Validity.AGING, Validity.SUPPRESSED]) is Validity.SUPPRESSED
    assert gates_for([]) == GATES[Validity.FRESH] and worst([]) is Validity.FRESH


def test_an_aging_suppressed_day_publishes_both_flags_and_the_worse_validity():
    _, points, _ = run([fix(0, "3.0000"), fix(1, None, suppressed="2 venues")], hour_of(1, 5))
    point = at(points, 1, 5)
    assert point.flags == (Validity.AGING, Validity.SUPPRESSED) and point.validity is Validity.SUPPRESSED


def test_the_documented_table_is_the_code_table():
    text = DOC.read_text()
    table = text.split("<!-- gates-table:start -->")[1].split("<!-- gates-table:end -->")[0]
    rows = [line for line in table.strip().splitlines()[2:]]
    parsed = {}
    for line in rows:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        yes = {"yes": True, "no": False}
        parsed[Validity(cells[0])] = Gates(
            funding_frozen=yes[cells[1]], margin_on_worse_of_anchor_and_fix=yes[cells[2]],
            reduce_only=yes[cells[3]], leverage_scale_ppm=int(cells[4]),
            liquidations_throttled=yes[cells[5]], order_band_frozen=yes[cells[6]])
    assert parsed == GATES
    assert list(parsed) == sorted(parsed, key=SEVERITY.__getitem__)
    assert re.search(r"GPU Markets, gpumarkets\.dev, CC BY 4\.0", text)
