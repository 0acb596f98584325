"""Theory: the memory-constrained fluid model of WAIT (Ao, Luo, Simchi-Levi, Wang 2025).

Hand-computed case used throughout: type A (lambda=2/s, l=10, l'=4) and type B (lambda=1/s,
l=20, l'=2), d0 = 0.01 s, d1 = 0.001 s/token.
    S = 2*5*(10+2) + 1*3*(20+1) = 120 + 63 = 183 token*iterations/s,  d1*S = 0.183.
"""

import math

import pytest

from servesim.core.errors import ConfigError
from servesim.theory.capacity import Quantity
from servesim.theory.fluid import (
    SOURCE,
    PromptType,
    memory_time_bound,
    nested_wait_fluid,
    wait_fluid,
    wait_thresholds,
)

TYPES = (PromptType(2.0, 10, 4), PromptType(1.0, 20, 2))
D0, D1 = 0.01, 0.001


def test_work_and_load():
    """S = sum_j lambda_j*(l'_j+1)*(l_j + l'_j/2) = 183; load d1*S = 0.183; margin 1 - d1*S."""
    f = wait_fluid(TYPES, D0, D1)
    assert f.work.value == pytest.approx(183.0, rel=1e-12)
    assert f.load.value == pytest.approx(0.183, rel=1e-12)
    assert f.margin.value == pytest.approx(0.817, rel=1e-12)
    assert f.stable and f.verdict == "stable"


def test_equilibrium_kv_and_iteration_time():
    """M* = d0*S/(1 - d1*S) = 1.83/0.817; tau* = d0/(1 - d1*S) = 0.01/0.817; M* = S*tau*."""
    f = wait_fluid(TYPES, D0, D1)
    assert f.kv_tokens_in_use.value == pytest.approx(1.83 / 0.817, rel=1e-12)
    assert f.iteration_time.value == pytest.approx(0.01 / 0.817, rel=1e-12)
    # Little's law: KV in use = work rate x iteration time.
    assert f.kv_tokens_in_use.value == pytest.approx(183.0 * f.iteration_time.value, rel=1e-12)
    assert f.kv_tokens_in_use.unit == "tokens"
    assert "1 - d1*S" in f.kv_tokens_in_use.formula


def test_throughput():
    """Throughput = sum_j lambda_j*(l'_j+1) = 2*5 + 1*3 = 13 tokens/s."""
    assert wait_fluid(TYPES, D0, D1).throughput.value == pytest.approx(13.0)


def test_unstable_when_d1_s_reaches_one():
    """Stability needs d1*S < 1: with d1 = 1/183, d1*S = 1, so M* and tau* are infinite."""
    f = wait_fluid(TYPES, D0, 1 / 183 + 1e-9)
    assert not f.stable and f.verdict == "unstable"
    assert f.margin.value < 0
    assert math.isinf(f.kv_tokens_in_use.value) and math.isinf(f.iteration_time.value)


def test_memory_time_bound_scale():
    """theta_max = C/(S*(d0 + d1*C)) = 2/(183*0.012); at theta_max, d0*theta*S/(1-d1*theta*S)=C."""
    b = memory_time_bound(TYPES, 2.0, D0, D1)
    theta = b.max_rate_scale.value
    assert theta == pytest.approx(2.0 / (183 * 0.012), rel=1e-12)
    scaled = [PromptType(t.rate_per_s * theta, t.prefill_tokens, t.output_tokens) for t in TYPES]
    assert wait_fluid(scaled, D0, D1).kv_tokens_in_use.value == pytest.approx(2.0, rel=1e-12)
    assert b.compute_rate_scale.value == pytest.approx(1 / 0.183, rel=1e-12)
    assert theta < b.compute_rate_scale.value
    assert not b.fits  # M* = 2.2399 > C = 2


def test_memory_time_bound_fits():
    """M* = 1.83/0.817 = 2.2399 <= C = 3, so it fits, and theta_max = 3/(183*0.013) > 1."""
    b = memory_time_bound(TYPES, 3.0, D0, D1)
    assert b.fits and b.verdict == "fits in KV memory"
    assert b.max_rate_scale.value == pytest.approx(3.0 / (183 * 0.013), rel=1e-12)
    assert b.max_rate_scale.value > 1


def test_memory_time_bound_no_d1():
    """With d1 = 0: theta_max = C/(S*d0) = 2/1.83 and there is no compute limit."""
    b = memory_time_bound(TYPES, 2.0, D0, 0.0)
    assert b.max_rate_scale.value == pytest.approx(2.0 / 1.83, rel=1e-12)
    assert math.isinf(b.compute_rate_scale.value)


def test_wait_thresholds():
    """n_j = B*rho_j/(l'_j+1): B=300 gives n_A = 300*(2/3)/5 = 40, n_B = 300*(1/3)/3 = 33.33."""
    n_a, n_b = wait_thresholds(TYPES, 300)
    assert n_a.value == pytest.approx(40.0)
    assert n_b.value == pytest.approx(100 / 3)
    assert n_a.unit == "requests"


def test_every_number_carries_unit_formula_and_source():
    """Each number is a capacity.Quantity citing Ao et al. 2025, printable with its formula."""
    f = wait_fluid(TYPES, D0, D1)
    for q in (*f.quantities(), *memory_time_bound(TYPES, 2.0, D0, D1).quantities()):
        assert isinstance(q, Quantity) and q.formula and q.source == SOURCE
    assert str(f.iteration_time).endswith("[tau* = d0/(1 - d1*S)]")


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: PromptType(-1.0, 10, 4), "PromptType.rate_per_s"),
        (lambda: PromptType(1.0, -10, 4), "PromptType.prefill_tokens"),
        (lambda: PromptType(1.0, 10, "4"), "PromptType.output_tokens"),
        (lambda: wait_fluid([], D0, D1), "types"),
        (lambda: wait_fluid([(1, 2, 3)], D0, D1), "types[0]"),
        (lambda: wait_fluid(TYPES, 0.0, D1), "d0_s"),
        (lambda: wait_fluid(TYPES, D0, -1e-3), "d1_s"),
        (lambda: memory_time_bound(TYPES, 0, D0, D1), "kv_capacity_tokens"),
        (lambda: wait_thresholds(TYPES, 0), "batch_tokens_B"),
        (lambda: wait_thresholds([PromptType(0.0, 1, 1)], 10), "types[*].rate_per_s"),
    ],
)
def test_invalid_inputs_name_the_field(call, field):
    """Invalid inputs raise ConfigError naming the field."""
    with pytest.raises(ConfigError) as info:
        call()
    assert info.value.field == field


# Nested WAIT: lambda = 2/s, l = 10, D uniform on {2, 4, 8, 8}, one boundary a_1 = 4.
NESTED = dict(rate_per_s=2.0, prefill_tokens=10, output_tokens=[2, 4, 8, 8], d0_s=D0, d1_s=D1,
              segments=[4])


def test_nested_segment_flows_by_hand():
    """lambda_s = lambda*P(D > a_(s-1)): 2, 1; L_s = E[min(D, a_s) - a_(s-1) | D > a_(s-1)]
    (+1 in segment 1): (2+4+4+4)/4 + 1 = 4.5, (4+4)/2 = 4; S_s = lambda*E[sum_{k in s, k<=D}
    (l+k)]: segment 1 sums stages 0..min(D,4): 33, 60, 60, 60 -> 2*53.25 = 106.5; segment 2
    stages 5..D: 0, 0, 66, 66 -> 2*33 = 66. Thresholds n_s = B*rho_s/L_s with B = 60,
    rho = (2/3, 1/3): 8.89 and 5."""
    f = nested_wait_fluid(**NESTED, batch_tokens_B=60)
    one, two = f.segments
    assert (one.rate.value, two.rate.value) == pytest.approx((2.0, 1.0))
    assert (one.share.value, two.share.value) == pytest.approx((2 / 3, 1 / 3))
    assert (one.iterations.value, two.iterations.value) == pytest.approx((4.5, 4.0))
    assert (one.work.value, two.work.value) == pytest.approx((106.5, 66.0))
    assert (one.threshold.value, two.threshold.value) == pytest.approx((60 * 2 / 3 / 4.5, 5.0))
    assert (one.lower_tokens, one.upper_tokens, two.upper_tokens) == (0, 4, math.inf)


def test_nested_work_sums_to_the_wait_equilibrium():
    """sum_s S_s = S = lambda*E[(D+1)(l + D/2)] = 2*(33 + 60 + 126 + 126)/4 = 172.5, whatever
    the segments; M* = d0*S/(1 - d1*S), tau* = d0/(1 - d1*S), throughput lambda*(E[D] + 1)."""
    for segments in ([], [4], [1, 3, 7], [100]):
        f = nested_wait_fluid(**(NESTED | {"segments": segments}))
        assert sum(s.work.value for s in f.segments) == pytest.approx(172.5, rel=1e-12)
        assert f.fluid.work.value == pytest.approx(172.5, rel=1e-12)
    s = 172.5
    assert f.fluid.kv_tokens_in_use.value == pytest.approx(D0 * s / (1 - D1 * s))
    assert f.fluid.iteration_time.value == pytest.approx(D0 / (1 - D1 * s))
    assert f.fluid.throughput.value == pytest.approx(2.0 * (5.5 + 1))
    assert f.stable


def test_nested_agrees_with_the_policy_practical_rule():
    """The engine's Nested WAIT practical thresholds use the same rho_s and L_s."""
    from servesim.policies.wait import practical_thresholds, segment_shares

    shares, iters = segment_shares([2, 4, 8, 8], [4])
    f = nested_wait_fluid(**NESTED, batch_tokens_B=60)
    assert practical_thresholds(shares, iters, 60) == pytest.approx(
        [s.threshold.value for s in f.segments])


@pytest.mark.parametrize("kwargs, field", [
    (dict(output_tokens=[]), "output_tokens"),
    (dict(output_tokens=[0, 2]), "output_tokens"),
    (dict(output_probs=[0.5, 0.5]), "output_probs"),
    (dict(segments=[4, 4]), "segments"),
    (dict(batch_tokens_B=0), "batch_tokens_B"),
    (dict(d0_s=0.0), "d0_s"),
])
def test_nested_validation(kwargs, field):
    with pytest.raises(ConfigError) as e:
        nested_wait_fluid(**(NESTED | kwargs))
    assert e.value.field == field
