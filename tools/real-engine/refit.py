"""Refit the cost model from a ``servesim calibrate`` folder's probes (project venv).

With the engine's OpenMP threads on both of this machine's 2 cores, shared with other work,
two things in calibrate's own fit went wrong: its mixed probes (a prompt arriving beside
streaming decoders) measured gaps several times longer than the same steps measured directly,
and its outlier rule then dropped the prefill rows, the only rows that pin the per-prompt-token
cost. (With the placement serve.sh uses now, calibrate's own fit is sound and this is not
needed.) This script keeps every prefill and
decode probe row (the dropped ones included) and leaves the mixed rows out, then fits the same
linear model with ``servesim.engine.cost_fit`` and writes profile.csv beside a fit report.

Usage: python refit.py CALIBRATION_DIR OUT_DIR
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from servesim.engine.cost_fit import PROFILE_COLUMNS, fit_profile

KEPT_KINDS = ("prefill", "decode")


def probe_rows(calibration: Path) -> list[dict]:
    report = json.loads((calibration / "fit_report.json").read_text())
    rows = list(report.get("rows", [])) + list(report.get("dropped_rows", []))
    return [r for r in rows if r["kind"] in KEPT_KINDS]


def main(argv: list[str]) -> None:
    calibration, out = Path(argv[1]), Path(argv[2])
    out.mkdir(parents=True, exist_ok=True)
    rows = probe_rows(calibration)
    profile = out / "profile.csv"
    with profile.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(PROFILE_COLUMNS)
        for r in sorted(rows, key=lambda r: (r["kind"], r["prefill_tokens"], r["decode_tokens"],
                                             r["context_tokens"])):
            w.writerow([r[c] for c in PROFILE_COLUMNS])
    fitted = fit_profile(profile)
    report = {"source": str(calibration), "kinds": list(KEPT_KINDS), "rows": len(rows),
              "fit": dict(fitted.fit_report),
              "coefficients_ms": {"intercept": fitted.intercept_s * 1e3,
                                  "prefill_per_token": fitted.prefill_s * 1e3,
                                  "decode_per_request": fitted.decode_s * 1e3,
                                  "context_per_token": fitted.context_s * 1e3}}
    (out / "refit_report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out / "cost.toml").write_text('[engine.cost]\nkind = "fitted"\npath = "profile.csv"\n')
    print(json.dumps(report["coefficients_ms"]), "r2", fitted.fit_report.get("r2"),
          "mean_rel_error", fitted.fit_report.get("mean_rel_error"))


if __name__ == "__main__":
    main(sys.argv)
