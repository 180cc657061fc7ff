"""Known answers for the A/B statistics (against scipy / closed forms) and Hypothesis checks."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from ray_app.config import ConfigError
from ray_app.experiments.report import ExperimentConfig, build_report, render_html
from ray_app.experiments.stats import (
    cohens_h,
    required_sample_size,
    srm_test,
    two_proportion_ztest,
    wilson_interval,
)


def test_wilson_known_answer() -> None:
    # Wilson (1927) / Newcombe (1998) table: 81 of 263 → [0.2553, 0.3662] at 95%.
    lo, hi = wilson_interval(81, 263)
    assert lo == pytest.approx(0.2553, abs=1e-4) and hi == pytest.approx(0.3662, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_wilson_matches_scipy_binomtest() -> None:
    ci = stats.binomtest(37, 120).proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson_interval(37, 120) == pytest.approx((ci.low, ci.high), abs=1e-12)


def test_ztest_matches_chi2_contingency() -> None:
    # The pooled z-test squared is Pearson's chi-square without continuity correction.
    z, p = two_proportion_ztest(120, 1000, 150, 1000)
    chi2, p_chi, _, _ = stats.chi2_contingency([[120, 880], [150, 850]], correction=False)
    assert z * z == pytest.approx(chi2) and p == pytest.approx(p_chi)
    assert z > 0
    assert two_proportion_ztest(0, 10, 0, 10) == (0.0, 1.0)


def test_cohens_h_and_sample_size_known_answers() -> None:
    assert cohens_h(0.5, 0.5) == 0
    assert cohens_h(0.0, 1.0) == pytest.approx(math.pi)
    # Cohen (1988): h = 0.2 (small) needs n ≈ 392 per group at alpha .05, power .8.
    p2 = math.sin(math.asin(math.sqrt(0.5)) + 0.1) ** 2
    assert required_sample_size(0.5, p2) == pytest.approx(392.4, abs=0.5)
    assert required_sample_size(0.3, 0.3) == math.inf


def test_srm_matches_scipy() -> None:
    chi2, p = srm_test([5200, 4800], [1, 1])
    ref = stats.chisquare([5200, 4800], [5000, 5000])
    assert (chi2, p) == pytest.approx((ref.statistic, ref.pvalue))
    assert srm_test([900, 100], [0.9, 0.1])[1] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="weights"):
        srm_test([1, 2], [1, 0])


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 5000), st.data())
def test_wilson_contains_estimate(n: int, data: st.DataObject) -> None:
    s = data.draw(st.integers(0, n))
    lo, hi = wilson_interval(s, n)
    assert 0 <= lo <= s / n <= hi <= 1


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 2000), st.integers(1, 2000), st.data())
def test_ztest_is_antisymmetric_with_a_normal_tail_p_value(
    n1: int, n2: int, data: st.DataObject
) -> None:
    s1, s2 = data.draw(st.integers(0, n1)), data.draw(st.integers(0, n2))
    z, p = two_proportion_ztest(s1, n1, s2, n2)
    z2, p2 = two_proportion_ztest(s2, n2, s1, n1)
    assert z == pytest.approx(-z2) and p == pytest.approx(p2)
    assert p == pytest.approx(2 * stats.norm.sf(abs(z)))
    assert (z > 0) == (s2 / n2 > s1 / n1)


def _attributed(rates: dict[str, tuple[int, int]]) -> pd.DataFrame:
    rows = []
    for v, (conv, n) in rates.items():
        for i in range(n):
            rows.append((f"{v}{i}", v, "m", "1", i < conv, True))
    return pd.DataFrame(
        rows, columns=["user_id", "variant", "model", "version", "converted", "mature"]
    )


def test_report_declares_winner_only_after_planned_sample() -> None:
    data = _attributed({"A": (100, 1000), "B": (160, 1000)})
    r = build_report(data, ExperimentConfig(control="A", planned_requests_per_variant=1000))
    assert r["winner"] == "B" and r["comparisons"][0]["p_value"] < 0.001
    early = build_report(data, ExperimentConfig(control="A", planned_requests_per_variant=5000))
    assert early["winner"] is None and "not reached" in early["decision"]
    assert "<svg" in render_html(early)


def test_report_refuses_on_sample_ratio_mismatch() -> None:
    data = _attributed({"A": (100, 1000), "B": (300, 1500)})
    r = build_report(data, ExperimentConfig(control="A", planned_requests_per_variant=100))
    assert not r["srm"]["ok"] and r["winner"] is None and "sample-ratio" in r["decision"]
    ok = build_report(
        data,
        ExperimentConfig(
            control="A", planned_requests_per_variant=100, weights={"A": 0.4, "B": 0.6}
        ),
    )
    assert ok["srm"]["ok"] and ok["winner"] == "B"


def test_report_json_has_no_infinities() -> None:
    r = build_report(_attributed({"A": (10, 100), "B": (10, 100)}), ExperimentConfig())
    json.dumps(r, allow_nan=False)
    assert r["comparisons"][0]["required_requests_per_variant_for_observed_effect"] is None
    assert np.isclose(r["comparisons"][0]["absolute_lift"], 0.0)


def test_report_settings_that_do_not_match_the_data_are_config_errors() -> None:
    data = _attributed({"A": (10, 100), "B": (12, 100)})
    with pytest.raises(ConfigError, match=r"control 'Z' has no mature reco events; set control"):
        build_report(data, ExperimentConfig(control="Z"))
    with pytest.raises(ConfigError, match=r"weights has no entry for variants \['B'\]"):
        build_report(data, ExperimentConfig(weights={"A": 1.0}))
