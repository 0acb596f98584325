"""``servesim predictor train`` and ``servesim predictor eval``: a learned output-length
predictor from real prompts, and its accuracy against the prompt-length-only baseline.

DATA is a prompts JSONL file (``prompt_id``, ``instruction``); the output lengths come from
``--lengths`` (a CSV ``prompt_id,generator,output_tokens``), else from DATA's own rows when
they carry ``generator`` and ``output_tokens``, else from ``alpacaeval_output_lengths.csv``
beside DATA. ``eval`` scores a trained model on the prompts
given; ``eval --cv K`` instead cross-validates the model's recipe (embedder, head, bins, seed)
on DATA with K folds split by prompt, the honest number when DATA holds the training prompts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from servesim.cli.progress import progress_bar, quiet_option

_LENGTHS_HELP = ("Lengths CSV (prompt_id,generator,output_tokens); default: DATA's own "
                 "output_tokens, else alpacaeval_output_lengths.csv beside DATA.")
_LABELS = (("mae_tokens", "MAE (tokens)"), ("spearman", "Spearman rho"),
           ("kendall_tau", "Kendall tau"), ("bin_accuracy", "bin accuracy"))


def _fmt(x: Any) -> str:
    if x is None:
        return "n/a"
    return f"{x:.1f}" if abs(x) >= 10 else f"{x:.3f}"


def _print_report(report: dict[str, Any]) -> None:
    title = f"{report.get('target_model', '')}: {report['n_prompts']} prompts"
    if report.get("folds"):
        title += f", {report['folds']}-fold cross-validation split by prompt"
    click.echo(title)
    click.echo(f"{'':14} {'learned':>10} {'prompt length':>14}")
    for key, label in _LABELS:
        click.echo(f"{label:14} {_fmt(report[key]):>10} {_fmt(report['baseline'][key]):>14}")


def _write_text(path: Path | None, option: str, text: str) -> None:
    if path is None:
        return
    from servesim.core.errors import ConfigError

    try:
        path.write_text(text, encoding="utf-8")
    except OSError as e:
        raise ConfigError(option, str(path), f"a file that can be written ({e.strerror or e})") \
            from None


@click.group()
def predictor() -> None:
    """Train and evaluate a learned output-length predictor."""


@predictor.command()
@click.argument("data", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--target-model", required=True, help="The serving model whose lengths to learn "
              "(a generator of the lengths file).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Model folder to write (model.json and arrays.npz).")
@click.option("--lengths", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help=_LENGTHS_HELP)
@click.option("--embedder", default="tfidf", show_default=True,
              help="tfidf (no neural model), model2vec or minilm (the [predict] extra).")
@click.option("--embedder-path", default=None, help="Local folder of the neural embedder's model.")
@click.option("--head", default="bins", show_default=True, help="bins, regression or rank.")
@click.option("--bins", "n_bins", type=int, default=8, show_default=True,
              help="Log-scale length bins (the bins head's classes, and bin accuracy's).")
@click.option("--seed", type=int, default=0, show_default=True)
def train(data: Path, target_model: str, out_dir: Path, lengths: Path | None, embedder: str,
          embedder_path: str | None, head: str, n_bins: int, seed: int) -> None:
    """Train on every prompt of DATA that the target model answered; write the model folder."""
    from servesim.core.errors import ConfigError
    from servesim.predictors.learned.data import load_dataset
    from servesim.predictors.learned.model import train_model

    dataset = load_dataset(data, target_model, lengths)
    options = None if embedder_path is None else {"path": embedder_path}
    model = train_model(dataset.texts, dataset.prompt_tokens, dataset.output_tokens,
                        target_model=target_model, embedder=embedder, head=head, n_bins=n_bins,
                        seed=seed, embedder_options=options)
    try:
        model.save(out_dir)
    except OSError as e:
        raise ConfigError("--out", str(out_dir), f"a folder that can be written "
                          f"({e.strerror or e})") from None
    click.echo(f"trained {embedder}/{head} for {target_model} on {len(dataset)} prompts; "
               f"wrote {out_dir}")


@predictor.command(name="eval")
@click.argument("model_path", metavar="MODEL", type=click.Path(path_type=Path))
@click.argument("data", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--lengths", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help=_LENGTHS_HELP)
@click.option("--target-model", default=None,
              help="Score against this serving model's lengths (default: the model's own).")
@click.option("--cv", "folds", type=int, default=None,
              help="Cross-validate the model's recipe on DATA with this many folds, split by "
              "prompt, instead of scoring its trained weights.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.option("--save", "save_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Also write the JSON report to this file.")
@click.option("--joint", "joint_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="With --cv: write the held-out (true length, prediction) "
              "pairs, the predictor's empirical joint distribution, as CSV.")
@quiet_option
def eval_(model_path: Path, data: Path, lengths: Path | None, target_model: str | None,
          folds: int | None, as_json: bool, save_path: Path | None, joint_path: Path | None,
          quiet: bool) -> None:
    """Score MODEL on DATA: MAE, Spearman, Kendall, bin accuracy, and the prompt-length baseline."""
    from servesim.core.errors import ConfigError
    from servesim.predictors.learned.data import load_dataset
    from servesim.predictors.learned.evaluate import cross_validate, evaluate
    from servesim.predictors.learned.model import load_model

    if joint_path is not None and folds is None:
        raise ConfigError("--joint", str(joint_path), "--cv K as well (held-out predictions)")
    model = load_model(model_path)
    target = target_model or model.target_model
    dataset = load_dataset(data, target, lengths)
    if folds is None:
        report = evaluate(model, dataset)
    else:
        emb = model.embedder.config()
        options = {k: v for k, v in emb.items() if k != "name"}
        with progress_bar("predictor eval", quiet=quiet) as bar:
            cv = cross_validate(dataset, folds, embedder=emb["name"],
                                head=model.head.state()[0]["name"], n_bins=len(model.edges) - 1,
                                seed=int(model.info.get("seed", 0)), embedder_options=options,
                                progress=bar)
        report = cv.report()
        _write_text(joint_path, "--joint", cv.joint_csv())
    report = {"target_model": target, **report}
    _write_text(save_path, "--save", json.dumps(report, indent=2, allow_nan=False) + "\n")
    if as_json:
        click.echo(json.dumps(report, indent=2, allow_nan=False))
    else:
        _print_report(report)


COMMANDS = [predictor]
