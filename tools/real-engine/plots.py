"""CDF plots of observed against simulated latencies, one PNG per group of runs (project venv).

Each run folder holds requests.parquet and scenario.toml (the layout of tests/data/fidelity);
the replay is ``servesim.real.fidelity.run_fidelity``, the same as ``servesim fidelity``.

Usage: python plots.py OUT_PNG RUN_DIR [RUN_DIR ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from servesim.metrics.summary import add_latency_columns  # noqa: E402
from servesim.real.fidelity import run_fidelity  # noqa: E402


def _cdf(ax, values: np.ndarray, label: str, style: str) -> None:
    values = np.sort(values[np.isfinite(values)])
    if len(values):
        ax.plot(values, np.arange(1, len(values) + 1) / len(values), style, label=label, lw=1.4)


def _series(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per metric, the observed and simulated values of the requests finished in both."""
    result = run_fidelity(folder, folder / "scenario.toml")
    sim = result.replay.records
    rows = sim["observed_row"].to_numpy()
    obs = add_latency_columns(result.observed.records.iloc[rows].reset_index(drop=True))
    both = ((obs["status"].astype(str) == "finished").to_numpy()
            & (sim["status"].astype(str) == "finished").to_numpy())
    out = {m: (obs[m].to_numpy(float)[both], sim[m].to_numpy(float)[both])
           for m in ("ttft_s", "e2e_s")}
    idx = np.flatnonzero(both)
    gaps = [np.concatenate([np.empty(0), *(np.diff(t[i]) for i in idx)])
            for t in ([result.observed.token_times[r] for r in rows], result.replay.token_times)]
    out["itl_s"] = (gaps[0], gaps[1])
    return out


def main(argv: list[str]) -> None:
    out, folders = Path(argv[1]), [Path(a) for a in argv[2:]]
    metrics = (("ttft_s", "TTFT (s)"), ("itl_s", "inter-token latency (s)"), ("e2e_s", "E2E (s)"))
    fig, axes = plt.subplots(len(folders), 3, figsize=(10, 2.1 * len(folders)), squeeze=False)
    for row, folder in zip(axes, folders, strict=True):
        data = _series(folder)
        for ax, (metric, label) in zip(row, metrics, strict=True):
            observed, simulated = data[metric]
            _cdf(ax, observed, "vLLM (observed)", "-")
            _cdf(ax, simulated, "servesim (replay)", "--")
            ax.set_xlabel(label, fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
            if metric == "itl_s":
                ax.set_xlim(0, np.nanpercentile(np.concatenate([observed, simulated]), 99.5))
        row[0].set_ylabel(folder.name, fontsize=8)
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=60)
    print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main(sys.argv)
