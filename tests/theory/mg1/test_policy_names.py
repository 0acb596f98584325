"""One name means one policy in the theory (``servesim theory``, ``servesim.theory.mg1``) and in
the simulator's orderings (``[schedule] order``, the M/G/1 mode): the same names, parameter
names and defaults, what the rank reads; the orderings the theory cannot analyse and its former
names are refused with a one-line reason.

Formulas: learning to rank on scores y is SPJF (non-preemptive) or PSPJF (preemptive); every
policy blind to sizes has E[T] = 1/(mu - lambda) in the M/M/1, MLFQ included; MLFQ with one
quantum no job outlives is FCFS. Tolerance 1e-4 relative for SOAP on these (exact ranks).
"""

import pytest

from servesim.core.errors import ConfigError
from servesim.policies.ordering import ORDERINGS, SkipJoinMLFQ, Trail, make_ordering
from servesim.theory.mg1 import POLICIES, mean_response_time
from servesim.theory.mg1.policies import (
    DEFAULT_C,
    DEFAULT_QUANTA,
    NOT_ANALYSED,
    RENAMED,
    check_name,
)

EXP = {"kind": "exponential", "mean": 1.0}
# What a theory rank reads, in the orderings' terms (a bit and SkipPredict's are predictions).
_USES = {"none": "none", "size": "size", "prediction": "prediction", "bit": "prediction",
         "skip": "prediction"}


def test_the_theory_and_the_simulator_know_the_same_names():
    assert set(POLICIES) | set(NOT_ANALYSED) == set(ORDERINGS)
    assert not set(POLICIES) & set(NOT_ANALYSED)
    assert not set(RENAMED) & (set(ORDERINGS) | set(POLICIES))


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_a_shared_name_reads_the_same_inputs_and_takes_the_same_params(name):
    ordering = make_ordering(name)
    assert _USES[POLICIES[name][0]] == ordering.uses
    assert set(ORDERINGS[name][1]) <= set(POLICIES[name][1])


def test_defaults_agree():
    assert Trail().c == DEFAULT_C
    assert SkipJoinMLFQ().quanta == DEFAULT_QUANTA


def test_former_names_and_unanalysed_orderings_are_refused_with_the_reason():
    for old, new in RENAMED.items():
        with pytest.raises(ConfigError, match=f"did you mean '{new}'") as err:
            mean_response_time(old, EXP, None, 0.5)
        assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="aging boosts"):
        check_name("aging")


def test_ltr_is_spjf_or_pspjf_on_its_scores():
    pred = {"kind": "lognormal", "sigma": 0.5}
    for preemptive, same in ((False, "spjf"), (True, "pspjf")):
        got = mean_response_time("ltr", EXP, pred, 0.6, preemptive=preemptive)
        assert got == pytest.approx(mean_response_time(same, EXP, pred, 0.6), rel=1e-12)
    with pytest.raises(ConfigError, match="params.preemptive"):
        mean_response_time("ltr", EXP, pred, 0.6, preemptive="yes")


def test_mlfq_is_blind_in_the_mm1_and_fcfs_with_one_long_quantum():
    assert mean_response_time("mlfq", EXP, None, 0.8) == pytest.approx(5.0, rel=1e-4)
    assert mean_response_time("mlfq", EXP, None, 0.5, quanta=[0.3, 0.3]) == pytest.approx(
        2.0, rel=1e-4)
    sizes = {"kind": "uniform", "low": 0.5, "high": 1.5}
    assert mean_response_time("mlfq", sizes, None, 0.6, quanta=[2.0]) == pytest.approx(
        mean_response_time("fcfs", sizes, None, 0.6), rel=1e-4)
    with pytest.raises(ConfigError, match="params.quanta"):
        mean_response_time("mlfq", EXP, None, 0.5, quanta=[])
