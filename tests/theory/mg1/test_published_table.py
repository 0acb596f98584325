"""The survey's Table 1 from the closed forms: Exp(1) sizes, exponential predictions.

Formulas checked (docs/mg1.md): FCFS x + R/(1-rho); SJF x + R/(1-rho(x))^2; SPJF
x + R/(1-rho'_y)^2; PSJF lambda int_0^x t^2 f/(2(1-rho(x))^2) + x/(1-rho(x)); PSPJF
lambda int_0^y int t^2 g/(2(1-rho'_y)^2) + x/(1-rho'_y); SRPT lambda[int_0^x t^2 f +
x^2(1-F(x))]/(2(1-rho(x))^2) + int_0^x dt/(1-rho(t)), averaged over g(x, y) = e^{-x} e^{-y/x}/x.

Tolerance: the printed precision (half a unit in the last printed digit). The prediction-based
policies are also checked to 1e-6 relative against an independent evaluation through
modified Bessel functions, int_0^inf x^(nu-1) e^(-x-y/x) dx = 2 y^(nu/2) K_nu(2 sqrt(y)).
"""

import numpy as np
import pytest
from scipy import integrate, special

from servesim.theory.mg1 import mean_response_time

SIZES = {"kind": "exponential", "mean": 1.0}
PREDICTOR = {"kind": "exponential"}
TABLE = {
    0.5: {"fcfs": "2.000", "sjf": "1.7127", "spjf": "1.7948", "psjf": "1.5314",
          "pspjf": "1.6637", "srpt": "1.4254"},
    0.8: {"fcfs": "5.000", "sjf": "2.8822", "spjf": "3.3758", "psjf": "2.6589",
          "pspjf": "3.1945", "srpt": "2.3528"},
}
CASES = [(lam, policy, printed) for lam, row in TABLE.items() for policy, printed in row.items()]


@pytest.mark.parametrize(("lam", "policy", "printed"), CASES)
def test_reproduces_published_value(lam, policy, printed):
    half_unit = 0.5 * 10.0 ** -len(printed.split(".")[1])
    value = mean_response_time(policy, SIZES, PREDICTOR, lam)
    assert abs(value - float(printed)) <= half_unit + 1e-9, (policy, lam, value)


def _bessel_reference(policy, lam):
    """E[T] of SPJF or PSPJF by one quad over y with Bessel-function loads."""
    def k(nu, y):
        return special.kv(nu, 2 * np.sqrt(y))

    def load(y):          # rho'_y = lambda int x e^-x (1 - e^{-y/x}) dx
        return lam * (1 - 2 * y * k(2, y))

    def m2(y):            # lambda int x^2 e^-x (1 - e^{-y/x}) dx
        return lam * (2 - 2 * y**1.5 * k(3, y))

    def density(y):       # marginal density of y
        return 2 * k(0, y)

    def size_mass(y):     # int x g(x, y) dx
        return 2 * np.sqrt(y) * k(1, y)

    if policy == "spjf":
        def integrand(y):
            return size_mass(y) + density(y) * lam / (1 - load(y)) ** 2
    else:
        def integrand(y):
            return (density(y) * m2(y) / 2 / (1 - load(y)) ** 2
                    + size_mass(y) / (1 - load(y)))
    return integrate.quad(integrand, 0, np.inf, epsabs=1e-12, epsrel=1e-12, limit=500)[0]


@pytest.mark.parametrize("lam", [0.5, 0.8])
@pytest.mark.parametrize("policy", ["spjf", "pspjf"])
def test_prediction_policies_match_bessel_evaluation(policy, lam):
    expected = _bessel_reference(policy, lam)
    value = mean_response_time(policy, SIZES, PREDICTOR, lam)
    assert value == pytest.approx(expected, rel=1e-6)
