"""The k·MAD robust median on hand-made venue panels, and its order-invariance (Hypothesis)."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from oracle.errors import OracleCode
from oracle.estimator import EstimatorConfig, Observation, estimate_fix

STRIKE = 10**18
H = 3600 * 10**9


def panel(*quotes: tuple[str, str], at: int = STRIKE - H) -> list[Observation]:
    return [Observation(venue=v, price_usd=p, observed_ts_ns=at) for v, p in quotes]


def status(estimate, venue):
    return [(v.status, v.residual_usd) for v in estimate.verdicts if v.venue == venue]


def test_outlier_beyond_three_mad_is_rejected_with_its_residual():
    est = estimate_fix(panel(("a", "3.00"), ("b", "3.10"), ("c", "3.05"), ("d", "2.95"), ("e", "9.00")), STRIKE)
    # median 3.05; |residuals| 0.05 0.05 0 0.10 5.95 -> MAD 0.05, threshold 0.15
    assert (est.median_usd, est.mad_usd, est.threshold_usd) == ("3.05", "0.05", "0.15")
    assert status(est, "e") == [("rejected_outlier", "5.95")]
    assert status(est, "d") == [("used", "-0.1")]
    assert est.fix_price_usd == "3.025" and est.fix_price_ticks == 30250  # median of 2.95 3.00 3.05 3.10
    assert not est.suppressed and est.venues_used == 4


def test_all_equal_quotes_have_zero_mad_and_all_survive():
    est = estimate_fix(panel(*[(v, "2.5000") for v in "abcd"]), STRIKE)
    assert est.mad_usd == "0" and est.venues_used == 4 and est.fix_price_usd == "2.5"


def test_zero_mad_rejects_every_quote_off_the_median():
    est = estimate_fix(panel(("a", "3"), ("b", "3"), ("c", "3"), ("d", "3.5")), STRIKE)
    assert est.mad_usd == "0" and status(est, "d") == [("rejected_outlier", "0.5")]
    assert est.fix_price_usd == "3" and est.venues_used == 3


def test_too_few_venues_quoting_suppresses_the_fix():
    est = estimate_fix(panel(("a", "3.00"), ("b", "3.10")), STRIKE)
    assert est.suppressed and est.fix_price_usd is None and "only 2 venues quoted" in est.suppression_reason


def test_too_few_venues_surviving_suppresses_the_fix():
    est = estimate_fix(panel(("a", "3.00"), ("b", "3.00"), ("c", "3.10"), ("d", "50")), STRIKE,
                       EstimatorConfig(min_venues=4))
    assert est.suppressed and "only 3 venues survived" in est.suppression_reason
    record = est.to_fix_record(series_id="S", fix_date=__import__("datetime").date(2001, 9, 9), source="me")
    assert record.price_usd is None and record.suppression_reason == est.suppression_reason


def test_each_venue_counts_once_with_its_latest_quote_in_the_window():
    obs = panel(("a", "3.00"), ("b", "3.02"), ("c", "3.04"))
    obs += panel(("a", "9.99"), at=STRIKE - 2 * H)  # older quote from a: superseded
    obs += panel(("b", "1.00"), at=STRIKE - 30 * H)  # outside the 24 h window
    obs += panel(("c", "2.00"), at=STRIKE + 1)  # after the strike
    est = estimate_fix(obs, STRIKE)
    assert status(est, "a")[0][0] == "superseded" and est.venues_quoted == 3
    assert [v.status for v in est.verdicts if v.venue in "bc"].count("outside_window") == 2
    assert est.fix_price_usd == "3.02"


def test_unusable_quotes_are_set_aside_with_their_code():
    obs = panel(("a", "3.00"), ("b", "3.02"), ("c", "3.04"), ("d", "NaN"), ("e", "-1"), ("f", "x"))
    est = estimate_fix(obs, STRIKE)
    codes = {v.venue: v.code for v in est.verdicts if v.status == "invalid_price"}
    assert codes == {"d": OracleCode.NON_FINITE_PRICE, "e": OracleCode.NON_POSITIVE_PRICE,
                     "f": OracleCode.MALFORMED_PRICE}
    assert est.venues_quoted == 3 and est.fix_price_usd == "3.02"


venues = st.sampled_from([f"v{i}" for i in range(8)])
prices = st.decimals(min_value=Decimal("0.1"), max_value=Decimal("20"), places=4).map(str)
times = st.integers(min_value=STRIKE - 30 * H, max_value=STRIKE + H)
observations = st.lists(st.builds(Observation, venue=venues, price_usd=prices, observed_ts_ns=times),
                        min_size=0, max_size=25)


@settings(max_examples=200, deadline=None)
@given(observations, st.randoms(use_true_random=False))
def test_estimate_does_not_depend_on_the_order_of_observations(obs, rnd):
    shuffled = list(obs)
    rnd.shuffle(shuffled)
    assert estimate_fix(shuffled, STRIKE, EstimatorConfig(min_venues=1)) == estimate_fix(
        obs, STRIKE, EstimatorConfig(min_venues=1))


@settings(max_examples=200, deadline=None)
@given(observations)
def test_fix_lies_within_the_surviving_quotes(obs):
    est = estimate_fix(obs, STRIKE, EstimatorConfig(min_venues=1))
    used = [Decimal(v.price_usd) for v in est.verdicts if v.status == "used"]
    assert len(used) == est.venues_used
    if est.suppressed:
        assert est.fix_price_usd is None
    else:
        assert min(used) <= Decimal(est.fix_price_usd) <= max(used)
    assert len(est.verdicts) == len(obs)  # every input is accounted for once
