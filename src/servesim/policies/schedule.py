"""The ``[schedule]`` table of a scenario: the order requests are served in and their predictor.

```toml
[schedule]
order = "sprpt"                          # or { kind = "trail", c = 0.8, max_preemptions = 2 }
predictor = { kind = "lognormal", sigma = 0.5 }
max_preemptions = 4                      # optional: priority preemptions per request, any order
```

SkipPredict adds the cheap bit's predictor; ``predictor`` is then the expensive one:

```toml
[schedule]
order = "skippredict"
predictor = { kind = "lognormal", sigma = 0.5 }
bit_predictor = { kind = "one_bit", threshold = 200, p_short_as_long = 0.1, p_long_as_short = 0.1 }
```

Without the table, or with ``order = "fcfs"`` and no predictor, the plain engine runs; otherwise
``servesim.engine.ordered.run_ordered`` does. Parsing builds the ordering and the predictor once
so every error surfaces at load time, as one line naming the dotted field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from servesim.core.errors import ConfigError
from servesim.core.fields import check_keys, integer, table
from servesim.policies.ordering import FCFS, Ordering, make_ordering
from servesim.predictors import OneBit as OneBitPredictor
from servesim.predictors import Predictor, make_predictor

SCHEDULE_KEYS = ("order", "predictor", "bit_predictor", "max_preemptions")
# The predictor keys that name files, read from the scenario's folder when relative.
_PATH_KEYS = {"learned": ("model", "prompts"), "table": ("path",)}


class SkipPredictors(NamedTuple):
    """SkipPredict's two predictors: the cheap ``bit`` for every request and the expensive
    ``full`` prediction for those whose bit says long."""

    full: Predictor
    bit: Predictor


def check_supported(ordering: Ordering, predictor: Predictor | None,
                    section: str = "schedule", *, bit_predictor: Predictor | None = None) -> None:
    """Raise ConfigError (naming ``section.predictor`` or ``section.bit_predictor``) if the
    ordered stepper cannot run ``ordering`` with ``predictor`` and ``bit_predictor``."""
    bit_field = f"{section}.bit_predictor"
    if ordering.needs_bit and bit_predictor is None:
        raise ConfigError(bit_field, None, f"a one_bit predictor table: order \"{ordering.name}\" "
                          "needs a cheap bit per request")
    if bit_predictor is not None and not ordering.needs_bit:
        raise ConfigError(bit_field, bit_predictor.describe().get("kind"),
                          f"no bit predictor: order \"{ordering.name}\" reads no cheap bit "
                          "(only skippredict does)")
    if bit_predictor is not None and not isinstance(bit_predictor, OneBitPredictor):
        raise ConfigError(f"{bit_field}.kind", bit_predictor.describe().get("kind"),
                          "one_bit (the cheap bit)")
    if ordering.uses == "prediction" and predictor is None:
        raise ConfigError(f"{section}.predictor", None,
                          f"a predictor table: order \"{ordering.name}\" ranks by predictions")


@dataclass(frozen=True)
class ScheduleConfig:
    """A validated ``[schedule]`` table.

    Attributes:
        order: the ordering (FCFS by default).
        predictor: the predictor table, or None (orderings that read no prediction).
        max_preemptions: cap on priority preemptions per request (None: the ordering's own).
        source: the table as given.
        bit_predictor: the cheap bit's predictor table (SkipPredict only), or None.
    """

    order: Ordering = field(default_factory=FCFS)
    predictor: Mapping[str, Any] | None = None
    max_preemptions: int | None = None
    source: Mapping[str, Any] = field(default_factory=dict)
    bit_predictor: Mapping[str, Any] | None = None

    @property
    def ordered(self) -> bool:
        """True iff the run needs the ordered stepper (a non-FCFS order or a predictor)."""
        return not isinstance(self.order, FCFS) or self.predictor is not None

    def make_predictor(self, seed: int) -> Predictor | tuple[Predictor, Predictor] | None:
        """A fresh predictor on ``seed``'s predictor stream, or None; with a bit predictor, the
        SkipPredictors pair (the stepper draws the bits from ``seed``'s bit stream)."""
        if self.predictor is None:
            return None
        full = make_predictor(self.predictor, seed=seed, field="schedule.predictor")
        if self.bit_predictor is None:
            return full
        bit = make_predictor(self.bit_predictor, seed=seed, field="schedule.bit_predictor")
        return SkipPredictors(full, bit)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"order": self.order.describe()}
        if self.predictor is not None:
            out["predictor"] = dict(self.predictor)
        if self.bit_predictor is not None:
            out["bit_predictor"] = dict(self.bit_predictor)
        if self.max_preemptions is not None:
            out["max_preemptions"] = self.max_preemptions
        return out


def parse_schedule(spec: Any, name: str = "schedule",
                   base_dir: Path | None = None) -> ScheduleConfig:
    """Validate a ``[schedule]`` table and build its ScheduleConfig.

    Raises ConfigError naming the dotted field for an unknown key (suggesting the closest), an
    unknown order or predictor kind (suggesting the closest), a bad parameter, an ordering the
    LLM engine does not support, an order that reads predictions without a predictor, or a
    bit predictor missing (skippredict), superfluous (any other order) or not ``one_bit``.
    A learned predictor's relative ``model`` and ``prompts`` paths, and a table predictor's
    ``path``, are read from ``base_dir`` (the scenario's folder), as a trace's path is.
    """
    spec = table(spec, name)
    check_keys(spec, name, SCHEDULE_KEYS)
    order = make_ordering(spec.get("order", "fcfs"), f"{name}.order")
    predictor_spec, predictor = _predictor(spec.get("predictor"), f"{name}.predictor", base_dir)
    bit_spec, bit = _predictor(spec.get("bit_predictor"), f"{name}.bit_predictor")
    cap = spec.get("max_preemptions")
    if cap is not None:
        cap = integer(cap, f"{name}.max_preemptions", low=0)
    check_supported(order, predictor, name, bit_predictor=bit)
    return ScheduleConfig(order, predictor_spec, cap, dict(spec), bit_spec)


def _predictor(spec: Any, field_name: str, base_dir: Path | None = None
               ) -> tuple[dict[str, Any] | None, Predictor | None]:
    """A predictor table (or None) and the predictor it builds, so a bad one fails at load."""
    if spec is None:
        return None, None
    spec = dict(table(spec, field_name))
    if base_dir is not None and spec.get("kind") in _PATH_KEYS:
        for key in _PATH_KEYS[spec["kind"]]:
            if isinstance(spec.get(key), str) and not Path(spec[key]).is_absolute():
                spec[key] = str(base_dir / spec[key])
    return spec, make_predictor(spec, seed=0, field=field_name)
