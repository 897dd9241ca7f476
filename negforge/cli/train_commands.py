"""CLI commands of the train area: train, eval, score, convert-checkpoint, featurize, synth.

``train`` exposes every leaf of :class:`~negforge.trainer.config.TrainConfig` as a flag
(generated from the config model, so a new setting is a new flag) and as ``--set KEY=VALUE``.
torch, transformers and the trainer's model code are imported inside the commands only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import typer

from negforge.atomic import check_output
from negforge.cli.app import app
from negforge.cli.config_options import all_flags, assignments, with_config_options
from negforge.errors import ConfigError, Interrupted
from negforge.overrides import checked
from negforge.trainer.config import TrainConfig
from negforge.trainer.model_config import Backbone

#: Flag names that read better than the bare field name.
_RENAMED = {
    "model.backbone": "backbone",
    "loss.shine.enabled": "shine",
    "loss.saliency": "saliency-weight",
    "loss.cls": "cls-weight",
    "loss.giou": "giou-weight",
    "loss.span_l1": "span-l1-weight",
    "loss.aux": "aux-loss",
}
#: Help panel of each setting, by the longest matching prefix of its dotted name (None: the
#: command's first panel).
_PANELS: dict[str, str | None] = {
    "": "Run",
    "preset": None,
    "model.backbone": None,
    "data.train": None,
    "data.eval": None,
    "data.video_feats": None,
    "data.text_feats": None,
    "model.": "Model (model.*)",
    "loss.": "Loss (loss.*)",
    "loss.shine.": "SHINE (loss.shine.*)",
    # the on/off terms (Table 3) on their own: no type column, so the longest name fits
    "loss.shine.enabled": "SHINE terms (loss.shine.*)",
    "loss.shine.use_intra": "SHINE terms (loss.shine.*)",
    "loss.shine.use_inter": "SHINE terms (loss.shine.*)",
    "loss.shine.intra_replaces_base_saliency": "SHINE terms (loss.shine.*)",
    "data.": "Data (data.*)",
    "optim.": "Optimiser (optim.*)",
}
#: Every setting of :class:`TrainConfig` as a flag (the config model is the one source).
TRAIN_FLAGS = all_flags(
    TrainConfig,
    renamed=_RENAMED,
    panels=_PANELS,
    repeat=("data.eval", "data.video_feats", "data.text_feats"),
)


@app.command("train")
@with_config_options(TrainConfig, TRAIN_FLAGS, example="optim.lr=2e-4")
def train_command(
    output: Path = typer.Option(..., "-o", "--output", help="run folder (checkpoints, logs)"),
    config: Path | None = typer.Option(
        None, "--config", help="YAML config (a saved RUN_DIR/config.yaml works too)"
    ),
    resume: bool = typer.Option(False, "--resume", help="continue the run in -o from last.pt"),
    **settings: Any,
) -> None:
    """Train Moment-DETR / QD-DETR with SHINE's coarse-to-fine saliency ranking.

    Every flag is an alias of --set KEY=VALUE (the key's section is in its panel's title).
    """
    from negforge.trainer.config import build_config
    from negforge.trainer.run import train as run_training

    given = assignments(TRAIN_FLAGS, settings)
    overrides = checked(TrainConfig, given)
    check_output(output, folder=True, what="run")
    saved = output / "config.yaml"
    if resume and config is None and saved.is_file():
        config = saved
    cfg = build_config(yaml_path=config, overrides=overrides,
                       sources={item.key: item.source for item in given})  # fmt: skip
    if not resume or not (output / "checkpoints" / "last.pt").is_file():
        missing = [
            flag
            for flag, value in (
                ("--train", cfg.data.train),
                ("--video-feats", cfg.data.video_feats),
                ("--text-feats", cfg.data.text_feats),
            )
            if not value
        ]
        if missing:
            raise ConfigError(f"missing {', '.join(missing)} (or give them in --config)")
    try:
        result = run_training(cfg, output, resume=resume)
    except KeyboardInterrupt:
        raise _train_interrupted(output) from None
    if result.best_epoch is not None:
        typer.echo(
            f"done: {result.epochs_run} epochs; best.pt from epoch {result.best_epoch} "
            f"({cfg.select_on}/{cfg.select_metric} {result.best_metric:.2f}); run in {output}"
        )


def _train_interrupted(output: Path) -> Interrupted:
    """Ctrl-C in ``train``: what is saved (last.pt is written after every epoch)."""
    last = output / "checkpoints" / "last.pt"
    if not last.is_file():
        return Interrupted(f"interrupted before the first epoch ended: {output} holds no "
                           "checkpoint yet (start again)")  # fmt: skip
    from negforge.trainer.checkpoints import read_checkpoint

    epoch = int(read_checkpoint(last)["epoch"]) + 1
    return Interrupted(f"interrupted: {last} holds epoch {epoch}; continue with the same "
                       "command and --resume")  # fmt: skip


@app.command("eval")
def eval_command(
    checkpoint: Path = typer.Argument(..., metavar="CKPT", help="a best.pt / last.pt"),
    eval_splits: list[str] = typer.Option(
        ..., "--eval", help="split NAME=PATH or PATH (jsonl or benchmark json; repeatable)"
    ),
    output: Path | None = typer.Option(
        None, "-o", "--output", help="folder for predictions/ and metrics.json [RUN_DIR/eval]"
    ),
    video_feats: list[Path] | None = typer.Option(
        None, "--video-feats", help="video features [default: the run's]"
    ),
    text_feats: list[Path] | None = typer.Option(
        None, "--text-feats", help="text features [default: the run's]"
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1"),
    batch_size: int | None = typer.Option(None, "--batch-size", help="[default: the run's]"),
    on_missing: Literal["error", "skip"] | None = typer.Option(
        None, "--on-missing", help="missing features: stop, or skip the query [default: the run's]"
    ),
) -> None:
    """Evaluate a checkpoint: R1@0.5, R1@0.7, mIoU, MR-mAP per split (and per composition type)."""
    from negforge.trainer.checkpoint_eval import evaluate_checkpoint
    from negforge.trainer.config import EvalSplit

    if output is None:
        run_dir = (
            checkpoint.parent.parent
            if checkpoint.parent.name == "checkpoints"
            else checkpoint.parent
        )
        output = run_dir / "eval"
    check_output(output, folder=True)
    evaluate_checkpoint(
        checkpoint,
        [EvalSplit.parse(s) for s in eval_splits],
        output,
        video_feats=video_feats,
        text_feats=text_feats,
        device=device,
        batch_size=batch_size,
        on_missing=on_missing,
    )
    typer.echo(f"predictions and metrics.json in {output}")


@app.command("score")
def score_command(
    predictions: Path = typer.Argument(
        ...,
        metavar="PREDICTIONS.jsonl",
        help="submission rows: qid, pred_relevant_windows [[st, ed, score], ...]",
    ),
    gt: Path = typer.Option(..., "--gt", help="ground truth: query jsonl or benchmark json"),
    output: Path | None = typer.Option(None, "-o", "--output", help="write the metrics JSON here"),
) -> None:
    """Score a prediction file as the originals' standalone_eval does (moment retrieval)."""
    import json

    from negforge.trainer.scoring import score_file, write_scores

    if output is not None:
        check_output(output, inputs=(predictions, gt))
    scores = score_file(predictions, gt)
    typer.echo(json.dumps(scores["brief"], indent=4))
    if output is not None:
        write_scores(output, scores)
        typer.echo(f"metrics in {output}")


@app.command("convert-checkpoint")
def convert_checkpoint_command(
    checkpoint: Path = typer.Argument(
        ..., metavar="ORIGINAL.ckpt", help="a checkpoint saved by the originals' train.py"
    ),
    backbone: Backbone = typer.Option(
        ..., "--backbone", help="the original's model (SHINE checkpoints are qd_detr)"
    ),
    output: Path = typer.Option(..., "-o", "--output", help="the negforge checkpoint to write"),
    t2v_mask: Literal["batch_major", "head_major"] = typer.Option(
        "batch_major",
        "--t2v-mask",
        help="QD-DETR text-to-video mask: batch_major (correct) or head_major (the original's)",
    ),
) -> None:
    """Convert an original Moment-DETR / QD-DETR / SHINE checkpoint for eval and plot-saliency."""
    from negforge.trainer.convert import convert_checkpoint

    check_output(output, inputs=(checkpoint,))
    written = convert_checkpoint(checkpoint, backbone, output, t2v_mask=t2v_mask)
    typer.echo(f"wrote {written} ({backbone}); evaluate it: negforge eval {written} --eval ...")


@app.command("featurize")
def featurize_command(
    queries: list[Path] = typer.Argument(
        ..., metavar="QUERIES...", help="query jsonl / benchmark json / SHINE jsonl / negatives"
    ),
    output: Path = typer.Option(..., "-o", "--output", help="packed text features (.h5)"),
    text_encoder: Literal["clip", "minilm"] = typer.Option(
        "clip", "--text-encoder", help="clip (CLIP ViT-B/32 text tower, 512-d) or minilm (384-d)"
    ),
    model_path: Path | None = typer.Option(
        None, "--model-path", help="local model folder [clip: the Hugging Face cache]"
    ),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda"),
    batch_size: int = typer.Option(64, "--batch-size"),
    dtype: Literal["float32", "float16"] = typer.Option(
        "float32", "--dtype", help="stored precision"
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress display"),
) -> None:
    """Token-level text features of queries and hard negatives, in one HDF5 file."""
    from negforge.progress import StepProgress
    from negforge.trainer.featurize import featurize

    check_output(output, inputs=queries)
    with StepProgress(f"featurize: encoding with {text_encoder}", quiet=quiet):
        report = featurize(
            queries,
            output,
            encoder=text_encoder,
            model_path=model_path,
            device=device,
            batch_size=batch_size,
            dtype=dtype,
        )
    typer.echo(
        f"wrote {report.keys} features ({report.queries} queries, {report.negatives} negatives, "
        f"{report.dim}-d, {report.encoder}) to {report.output}"
    )


@app.command("synth")
def synth_command(
    output: Path = typer.Option(..., "-o", "--output", help="folder for the benchmark"),
    train_videos: int = typer.Option(150, "--train-videos", help="every event queried"),
    val_videos: int = typer.Option(40, "--val-videos", help="val: selects checkpoints"),
    test_videos: int = typer.Option(100, "--test-videos", help="test_trivial: anchor queried"),
    novel_videos: int = typer.Option(100, "--novel-videos", help="novel_composition videos"),
    novel_word_videos: int = typer.Option(100, "--novel-word-videos", help="0: no novel_word"),
    verbs: int = typer.Option(8, "--verbs", help="seen verbs"),
    nouns: int = typer.Option(8, "--nouns", help="seen nouns"),
    novel_verbs: int = typer.Option(2, "--novel-verbs", help="verbs only in novel_word"),
    novel_nouns: int = typer.Option(2, "--novel-nouns", help="nouns only in novel_word"),
    held_out_pairs: int = typer.Option(8, "--held-out-pairs", help="verb-noun pairs not in train"),
    distractors: int = typer.Option(
        2, "--distractors", help="0-2 events sharing the anchor's verb, then its noun"
    ),
    extra_events: int = typer.Option(0, "--extra-events", help="unrelated events per video"),
    pair_skew: float = typer.Option(
        0.5, "--pair-skew", help="share of events drawn as a word's preferred partner"
    ),
    latent_dim: int = typer.Option(6, "--latent-dim", help="dimensions of a word's meaning"),
    word_noise: float = typer.Option(
        0.3, "--word-noise", help="word-specific part of a signature (not predictable from text)"
    ),
    interaction: float = typer.Option(0.5, "--interaction", help="weight of the verb x noun term"),
    signal: float = typer.Option(3.0, "--signal", help="strength of an event's signature"),
    noise: float = typer.Option(0.5, "--noise", help="clip noise"),
    negatives: Literal["swap", "video"] = typer.Option(
        "swap",
        "--negatives",
        help="built-in hard negatives: swap (random words) or video (the video's other events)",
    ),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Write a synthetic compositional grounding benchmark (train in a few minutes on CPU)."""
    from pydantic import ValidationError

    from negforge.trainer.synth import SynthConfig, generate

    settings = {k: v for k, v in locals().items() if k != "output"}
    try:
        config = SynthConfig.model_validate(settings)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "options"
        raise ConfigError(f"synth: {where}: {first['msg']}") from exc
    check_output(output, folder=True)
    report = generate(output, config)
    sizes = ", ".join(f"{k} {v}" for k, v in report.queries.items())
    typer.echo(f"wrote {report.videos} videos ({sizes} queries) to {report.output}")
    typer.echo(
        f"train: negforge train --backbone qd_detr --config {report.train_config} "
        f"-o {Path(report.output) / 'run'}"
    )


@app.command("synth-negatives")
def synth_negatives_command(
    benchmark: Path = typer.Argument(..., metavar="BENCH", help="a `negforge synth` folder"),
    negatives: Path = typer.Argument(
        ..., metavar="NEGATIVES", help="negatives artifact (.parquet) or SHINE jsonl"
    ),
    name: str = typer.Option(..., "--name", help="name of this negative source (e.g. random)"),
) -> None:
    """Text features of pipeline negatives for a synth benchmark, and a train config for them."""
    from negforge.trainer.synth_negatives import featurize_negatives

    report = featurize_negatives(benchmark, negatives, name)
    typer.echo(
        f"wrote {report.negatives} negative features ({report.queries} queries) to {report.output}"
    )
    if report.unknown_words:
        typer.echo(
            f"words outside the vocabulary (fixed random vectors): "
            f"{', '.join(report.unknown_words[:20])}"
        )
    typer.echo(f"train: negforge train --config {report.train_config} -o RUN")
