"""Token-length distributions: integer, every sample >= 1, each carrying its exact moments.

Every class reports ``mean``, ``variance`` and ``scv`` of the *integer* distribution that
``sample`` draws from, so ``theory/`` and the simulator consume the same object, and its
``support`` (smallest and largest value, None when unbounded), from which a scenario decides
whether its engine can serve any request at all. Nothing is clipped:
where a continuous law would give values below 1 the distribution is defined so that it cannot
(shifted Poisson, ceiling of a lognormal), and the moments account for that.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np
from scipy import special

from servesim.core.errors import ConfigError
from servesim.core.fields import check_keys, integer, number, require, table
from servesim.core.registry import lookup

T = TypeVar("T")

# A token count this large is a typo, and it keeps every sample far below int64 overflow.
MAX_TOKENS = 10**9
# Beyond this CV the lognormal's tail reaches int64 overflow with non-negligible probability.
MAX_LOGNORMAL_CV = 100.0


@runtime_checkable
class TokenDist(Protocol):
    """What every token-length distribution offers."""

    @property
    def mean(self) -> float: ...

    @property
    def variance(self) -> float: ...

    @property
    def scv(self) -> float: ...

    @property
    def support(self) -> tuple[int, int | None]: ...

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray: ...

    def describe(self) -> dict[str, Any]: ...


class _Moments:
    """Mixin: the squared coefficient of variation from ``mean`` and ``variance``."""

    mean: float
    variance: float

    @property
    def scv(self) -> float:
        """Squared coefficient of variation, variance / mean**2."""
        return self.variance / self.mean**2


def _count(n: int) -> int:
    """Return ``n`` as a sample size; raise ConfigError if it is not an integer >= 0."""
    return integer(n, "sample.n", low=0)


@dataclass(frozen=True)
class Deterministic(_Moments):
    """Every request has exactly ``value`` tokens.

    Raises ConfigError if ``value`` is not an integer >= 1.
    """

    value: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", integer(self.value, "deterministic.value", low=1,
                                                  high=MAX_TOKENS))

    @property
    def mean(self) -> float:
        return float(self.value)

    @property
    def variance(self) -> float:
        return 0.0

    @property
    def support(self) -> tuple[int, int | None]:
        """The smallest and largest value drawn (None: unbounded)."""
        return self.value, self.value

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Return ``n`` copies of ``value`` (``rng`` is unused, kept for one signature)."""
        return np.full(_count(n), self.value, dtype=np.int64)

    def describe(self) -> dict[str, Any]:
        return {"kind": "deterministic", "value": self.value}


@dataclass(frozen=True)
class UniformInt(_Moments):
    """Uniform on the integers ``low..high`` inclusive.

    Raises ConfigError unless 1 <= low <= high.
    """

    low: int
    high: int

    def __post_init__(self) -> None:
        low = integer(self.low, "uniform.low", low=1, high=MAX_TOKENS)
        high = integer(self.high, "uniform.high", low=low, high=MAX_TOKENS)
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)

    @property
    def mean(self) -> float:
        return (self.low + self.high) / 2

    @property
    def variance(self) -> float:
        # Discrete uniform on m points: (m**2 - 1) / 12.
        m = self.high - self.low + 1
        return (m * m - 1) / 12

    @property
    def support(self) -> tuple[int, int | None]:
        """The smallest and largest value drawn (None: unbounded)."""
        return self.low, self.high

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Draw ``n`` integers uniformly from ``low..high``."""
        return rng.integers(self.low, self.high + 1, size=_count(n), dtype=np.int64)

    def describe(self) -> dict[str, Any]:
        return {"kind": "uniform", "low": self.low, "high": self.high}


@dataclass(frozen=True)
class Geometric(_Moments):
    """Geometric on {1, 2, ...} with success probability p = 1/mean.

    This is the length law of a model that stops after each token with a fixed probability, the
    textbook "memoryless output" assumption. Variance is (1 - p) / p**2.

    Raises ConfigError if ``mean`` is not a number >= 1.
    """

    mean: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", number(self.mean, "geometric.mean", low=1,
                                                high=MAX_TOKENS))

    @property
    def p(self) -> float:
        """Per-token stopping probability."""
        return 1.0 / self.mean

    @property
    def variance(self) -> float:
        return (1.0 - self.p) / self.p**2

    @property
    def support(self) -> tuple[int, int | None]:
        """The smallest and largest value drawn (None: unbounded; mean 1 always draws 1)."""
        return 1, (1 if self.mean == 1 else None)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Draw ``n`` geometric lengths (numpy's geometric already starts at 1)."""
        return rng.geometric(self.p, size=_count(n)).astype(np.int64)

    def describe(self) -> dict[str, Any]:
        return {"kind": "geometric", "mean": self.mean}


@dataclass(frozen=True)
class Poisson(_Moments):
    """Shifted Poisson: 1 + Poisson(mean - 1), so the mean is ``mean`` and the variance mean - 1.

    A plain Poisson puts mass exp(-mean) on 0 tokens; replacing those zeros by 1 would silently
    raise the mean. Shifting by one keeps the support >= 1 and the moments exact.

    Raises ConfigError if ``mean`` is not a number >= 1.
    """

    mean: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", number(self.mean, "poisson.mean", low=1,
                                                high=MAX_TOKENS))

    @property
    def variance(self) -> float:
        return self.mean - 1.0

    @property
    def support(self) -> tuple[int, int | None]:
        """The smallest and largest value drawn (None: unbounded; mean 1 always draws 1)."""
        return 1, (1 if self.mean == 1 else None)

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Draw ``n`` shifted-Poisson lengths."""
        return 1 + rng.poisson(self.mean - 1.0, size=_count(n)).astype(np.int64)

    def describe(self) -> dict[str, Any]:
        return {"kind": "poisson", "mean": self.mean}


@dataclass(frozen=True, init=False)
class LogNormal(_Moments):
    """Ceiling of a continuous lognormal X with mean ``mean`` and coefficient of variation ``cv``.

    X has sigma**2 = ln(1 + cv**2) and mu = ln(mean) - sigma**2 / 2. Rounding *up* makes every
    sample >= 1 without clipping. The integer law differs from X: since ceil(X) - X is roughly
    uniform on [0, 1) when X spreads over many integers, the reported ``mean`` is about the
    continuous mean + 0.5 and ``variance`` about var(X) + 1/12. Both are computed exactly from
    E[ceil X] = sum_{k>=0} P(X > k) and E[ceil(X)**2] = sum_{k>=0} (2k+1) P(X > k).

    The constructor takes the continuous mean (kept as ``mean_continuous``); the ``mean``
    property is the integer one.

    Raises ConfigError unless 0 < mean <= 1e9 and 0 < cv <= 100.
    """

    mean_continuous: float
    cv: float

    def __init__(self, mean: float, cv: float) -> None:
        mean = number(mean, "lognormal.mean", low=0, low_open=True, high=MAX_TOKENS)
        cv = number(cv, "lognormal.cv", low=0, low_open=True, high=MAX_LOGNORMAL_CV)
        object.__setattr__(self, "mean_continuous", mean)
        object.__setattr__(self, "cv", cv)

    @property
    def sigma(self) -> float:
        """Standard deviation of ln X."""
        return math.sqrt(math.log1p(self.cv**2))

    @property
    def mu(self) -> float:
        """Mean of ln X."""
        return math.log(self.mean_continuous) - self.sigma**2 / 2

    @property
    def mean(self) -> float:  # type: ignore[override]
        """Exact mean of ceil(X), about ``mean_continuous + 0.5``."""
        return self._moments[0]

    @property
    def variance(self) -> float:  # type: ignore[override]
        """Exact variance of ceil(X)."""
        m1, m2 = self._moments
        return m2 - m1 * m1

    @cached_property
    def _moments(self) -> tuple[float, float]:
        return ceil_lognormal_moments(self.mu, self.sigma)

    @property
    def support(self) -> tuple[int, int | None]:
        """The smallest and largest value drawn (None: unbounded)."""
        return 1, None

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Draw ``n`` values of ceil(X)."""
        x = np.ceil(rng.lognormal(self.mu, self.sigma, size=_count(n))).astype(np.int64)
        # X > 0 almost surely, so ceil(X) >= 1; a 0 can only come from exp() underflowing to 0.0,
        # an X in (0, 1] whose ceiling is 1. This maximum is therefore exact, not a clip.
        return np.maximum(x, 1)

    def describe(self) -> dict[str, Any]:
        return {"kind": "lognormal", "mean": self.mean_continuous, "cv": self.cv}


# Past this many terms the moment sums switch to an Euler-Maclaurin tail; there the summand varies
# on a scale of ~k, so the first correction terms are accurate to far below 1e-12.
_MAX_EXACT_TERMS = 2**20
# Standard-normal quantile where P(Z > z) ~ 1e-17: beyond it survival terms are negligible.
_Z_FAR = 8.5


def ceil_lognormal_moments(mu: float, sigma: float,
                           max_terms: int = _MAX_EXACT_TERMS) -> tuple[float, float]:
    """Return (E[ceil X], E[ceil(X)**2]) for X = exp(N(mu, sigma**2)).

    Sums S(k) = P(X > k) exactly for k < K, K the far quantile exp(mu + 8.5 sigma) (at most
    ``max_terms``), and adds the rest, sum_{k>=K}, by Euler-Maclaurin: the integral in closed form
    (lognormal partial expectations) plus f(K)/2 - f'(K)/12.
    """
    k_far = math.exp(min(mu + _Z_FAR * sigma, 700.0))
    big_k = int(min(max(math.ceil(k_far), 2), max_terms))
    k = np.arange(big_k, dtype=np.float64)
    s = _lognormal_sf(k, mu, sigma)
    m1 = math.fsum(s)
    m2 = math.fsum((2 * k + 1) * s)
    t1, t2 = _lognormal_sum_tails(float(big_k), mu, sigma)
    return m1 + t1, m2 + t2


def _lognormal_sf(x: np.ndarray | float, mu: float, sigma: float) -> np.ndarray:
    """P(X > x), with P(X > 0) = 1."""
    with np.errstate(divide="ignore"):
        z = (np.log(x) - mu) / sigma
    return special.ndtr(-z)


def _lognormal_sum_tails(big_k: float, mu: float, sigma: float) -> tuple[float, float]:
    """Euler-Maclaurin estimates of sum_{k>=K} S(k) and sum_{k>=K} (2k+1) S(k)."""
    ln_k = math.log(big_k)
    z = (ln_k - mu) / sigma
    s = float(special.ndtr(-z))
    pdf = math.exp(-z * z / 2) / (big_k * sigma * math.sqrt(2 * math.pi))
    e1 = math.exp(mu + sigma**2 / 2) * float(special.ndtr(sigma - z))  # E[X; X > K]
    e2 = math.exp(2 * mu + 2 * sigma**2) * float(special.ndtr(2 * sigma - z))  # E[X^2; X > K]
    int1 = e1 - big_k * s  # integral_K^inf S(x) dx
    int2 = (e2 - big_k**2 * s) + int1  # integral_K^inf (2x + 1) S(x) dx
    # f(x) = S(x): f' = -pdf.  g(x) = (2x+1) S(x): g' = 2 S - (2x+1) pdf.
    t1 = int1 + s / 2 + pdf / 12
    g = (2 * big_k + 1) * s
    dg = 2 * s - (2 * big_k + 1) * pdf
    t2 = int2 + g / 2 - dg / 12
    return max(t1, 0.0), max(t2, 0.0)


@dataclass(frozen=True)
class Empirical(_Moments):
    """Resample uniformly, with replacement, from a fixed list of token counts.

    ``source`` records where the values came from (for ``describe``); it does not affect sampling.

    Raises ConfigError if ``values`` is empty or holds anything but integers >= 1.
    """

    values: tuple[int, ...]
    source: Mapping[str, str] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        arr = _as_token_array(self.values, "empirical.values")
        object.__setattr__(self, "values", tuple(arr.tolist()))
        if self.source is not None:
            object.__setattr__(self, "source", dict(self.source))

    @cached_property
    def _array(self) -> np.ndarray:
        arr = np.asarray(self.values, dtype=np.int64)
        arr.flags.writeable = False
        return arr

    @property
    def mean(self) -> float:
        return float(self._array.mean())

    @property
    def variance(self) -> float:
        """Population variance of the values (resampling draws exactly this law)."""
        return float(self._array.var())

    @property
    def support(self) -> tuple[int, int | None]:
        """The smallest and largest value drawn."""
        return int(self._array.min()), int(self._array.max())

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Draw ``n`` values uniformly with replacement."""
        return self._array[rng.integers(0, len(self.values), size=_count(n))].copy()

    def describe(self) -> dict[str, Any]:
        if self.source is not None:
            return {"kind": "empirical", **self.source}
        return {"kind": "empirical", "values": list(self.values)}

    @classmethod
    def from_file(cls, path: str | Path, column: str) -> Empirical:
        """Read the integer column ``column`` of the CSV file ``path``.

        Raises ConfigError if the file is missing, and TraceError (with the line number) if the
        column is absent or a cell is not an integer >= 1.
        """
        from servesim.workload.traces import read_column

        values = read_column(path, column)
        return cls(tuple(values.tolist()), source={"path": str(path), "column": column})


def _as_token_array(values: Sequence[int] | np.ndarray, field_name: str) -> np.ndarray:
    """Return ``values`` as int64; raise ConfigError unless all are integers in 1..MAX_TOKENS."""
    if isinstance(values, np.ndarray):
        if values.dtype.kind not in "iu":
            raise ConfigError(field_name, f"array of {values.dtype}", "integers >= 1")
        arr = values.astype(np.int64).ravel()
    else:
        for v in values:
            if isinstance(v, bool) or not isinstance(v, int | np.integer):
                raise ConfigError(field_name, v, "a list of integers >= 1")
            if not 1 <= v <= MAX_TOKENS:  # before int64, which a huge Python int overflows
                raise ConfigError(field_name, int(v), f"integers >= 1 and <= {MAX_TOKENS}")
        arr = np.asarray(values, dtype=np.int64)
    if arr.size == 0:
        raise ConfigError(field_name, [], "a non-empty list of integers >= 1")
    if arr.min() < 1 or arr.max() > MAX_TOKENS:
        bad = arr.min() if arr.min() < 1 else arr.max()
        raise ConfigError(field_name, int(bad), f"integers >= 1 and <= {MAX_TOKENS}")
    return arr


# -- factories from TOML tables ----------------------------------------------------------------


def construct(cls: Callable[..., T], field_name: str, **kwargs: Any) -> T:
    """Call ``cls(**kwargs)``, renaming the field in any ConfigError to ``field_name.<param>``.

    Classes validate themselves under a short name (``lognormal.cv``); a scenario wants the full
    path (``workload.output_tokens.cv``). Validation lives in one place, the class.
    """
    try:
        return cls(**kwargs)
    except ConfigError as err:
        param = err.field.rsplit(".", 1)[-1]
        raise ConfigError(f"{field_name}.{param}", err.value, err.expected) from None


def _params(spec: Mapping[str, Any], field_name: str, required: Sequence[str]) -> dict[str, Any]:
    """Check ``spec`` has exactly ``kind`` plus ``required``; return the required values."""
    check_keys(spec, field_name, ["kind", *required])
    return {key: require(spec, key, field_name) for key in required}


def _deterministic(spec: Mapping[str, Any], field_name: str, base_dir: Path | None) -> TokenDist:
    return construct(Deterministic, field_name, **_params(spec, field_name, ["value"]))


def _uniform(spec: Mapping[str, Any], field_name: str, base_dir: Path | None) -> TokenDist:
    return construct(UniformInt, field_name, **_params(spec, field_name, ["low", "high"]))


def _geometric(spec: Mapping[str, Any], field_name: str, base_dir: Path | None) -> TokenDist:
    return construct(Geometric, field_name, **_params(spec, field_name, ["mean"]))


def _poisson(spec: Mapping[str, Any], field_name: str, base_dir: Path | None) -> TokenDist:
    return construct(Poisson, field_name, **_params(spec, field_name, ["mean"]))


def _lognormal(spec: Mapping[str, Any], field_name: str, base_dir: Path | None) -> TokenDist:
    p = _params(spec, field_name, ["mean", "cv"])
    return construct(LogNormal, field_name, **p)


def _empirical(spec: Mapping[str, Any], field_name: str, base_dir: Path | None) -> TokenDist:
    check_keys(spec, field_name, ["kind", "values", "path", "column"])
    if "values" in spec:
        if "path" in spec or "column" in spec:
            raise ConfigError(f"{field_name}.values", spec["values"],
                              "either values = [...] or path and column, not both")
        values = spec["values"]
        if not isinstance(values, list | tuple):
            raise ConfigError(f"{field_name}.values", values, "a list of integers >= 1")
        return construct(Empirical, field_name, values=tuple(values))
    if "path" not in spec and "column" not in spec:
        raise ConfigError(f"{field_name}.values", None, "either values = [...] or path and column")
    path = require(spec, "path", field_name)
    column = require(spec, "column", field_name)
    if not isinstance(path, str):
        raise ConfigError(f"{field_name}.path", path, "a file path (string)")
    if not isinstance(column, str):
        raise ConfigError(f"{field_name}.column", column, "a column name (string)")
    return Empirical.from_file(resolve_path(path, base_dir, f"{field_name}.path"), column)


def resolve_path(path: str, base_dir: Path | None, field_name: str) -> Path:
    """Resolve ``path`` against ``base_dir`` (the scenario's folder).

    Raises ConfigError naming ``field_name`` if no such file exists.
    """
    p = Path(path).expanduser()
    if not p.is_absolute() and base_dir is not None:
        p = Path(base_dir) / p
    if not p.is_file():
        raise ConfigError(field_name, path, f"an existing file (looked for {p})")
    return p


TOKEN_DISTS: dict[str, Callable[[Mapping[str, Any], str, Path | None], TokenDist]] = {
    "deterministic": _deterministic,
    "uniform": _uniform,
    "geometric": _geometric,
    "poisson": _poisson,
    "lognormal": _lognormal,
    "empirical": _empirical,
}


def make_token_dist(spec: Mapping[str, Any], field: str, base_dir: Path | None = None) -> TokenDist:
    """Build a token-length distribution from a table like ``{ kind = "lognormal", mean = 112 }``.

    Relative ``path``s (empirical) resolve against ``base_dir``.

    Raises ConfigError naming the full field (``workload.output_tokens.mean``) if the kind is
    unknown (suggesting the closest), a key is unknown or missing, or a value is out of range.
    """
    spec = table(spec, field)
    factory = lookup(TOKEN_DISTS, require(spec, "kind", field), f"{field}.kind")
    return factory(spec, field, base_dir)
