"""One example per command, shown at the end of its ``--help``.

Run from a checkout's root: the bundled sample pipeline (``negforge run
pipelines/sample.yaml``) and the synthetic benchmark (``negforge synth -o outputs/synth``)
make the files the other examples read; UPPERCASE words are placeholders.
"""

from __future__ import annotations

_SAMPLE = "outputs/sample"
_AFTER_SAMPLE = "after negforge run pipelines/sample.yaml"
_AFTER_SYNTH = "after negforge synth -o outputs/synth"
_AFTER_TRAIN = "after docs/trainer.md's quick start, which trains outputs/synth_run"

#: command -> (example, what it needs: earlier commands or what a placeholder stands for).
EXAMPLES: dict[str, tuple[str, str | None]] = {
    "read": ("negforge read negforge/sample_data/sample_queries.jsonl -o outputs/queries.jsonl",
             None),
    "build-dict": ("negforge build-dict negforge/sample_data/sample_queries.jsonl "
                   "-o outputs/dictionary.parquet", None),
    "mask": ("negforge mask negforge/sample_data/sample_queries.jsonl --preset charades_cg "
             "-o outputs/masked.parquet", None),
    "inspect": (f"negforge inspect {_SAMPLE}/masked.parquet", _AFTER_SAMPLE),
    "export": (f"negforge export {_SAMPLE}/negatives.parquet -o outputs/negatives_shine.jsonl",
               _AFTER_SAMPLE),
    "import-negatives": ("negforge import-negatives SHINE_TRAIN.jsonl --preset charades_cg "
                         "-o outputs/released.parquet",
                         "SHINE_TRAIN: a released SHINE training file"),
    "run": ("negforge run pipelines/sample.yaml --set generate.seed=1 "
            "--output-dir outputs/sample_seed1", None),
    "generate": (f"negforge generate {_SAMPLE}/masked.parquet --dict "
                 f"{_SAMPLE}/dictionary.parquet --llm random --set seed=1 "
                 "-o outputs/negatives_seed1.parquet", _AFTER_SAMPLE),
    "serve-local": ("negforge serve-local --port 8765", None),
    "score-plausibility": (f"negforge score-plausibility {_SAMPLE}/negatives.parquet "
                           "-o outputs/negatives.scored.parquet", _AFTER_SAMPLE),
    "train": ("negforge train --config outputs/synth/train_config.yaml --set optim.epochs=2 "
              "-o outputs/synth_run_short", _AFTER_SYNTH),
    "eval": ("negforge eval outputs/synth_run/checkpoints/best.pt "
             "--eval outputs/synth/novel_composition.jsonl", _AFTER_TRAIN),
    "score": ("negforge score outputs/synth_run/eval/predictions/novel_composition.jsonl "
              "--gt outputs/synth/novel_composition.jsonl", "after the eval example"),
    "convert-checkpoint": ("negforge convert-checkpoint ORIGINAL.ckpt --backbone qd_detr "
                           "-o outputs/converted.pt",
                           "ORIGINAL: a checkpoint of the authors' train.py"),
    "featurize": ("negforge featurize outputs/synth/novel_composition.jsonl --text-encoder "
                  "minilm -o outputs/text_feats.h5", _AFTER_SYNTH),
    "synth": ("negforge synth -o outputs/synth", None),
    "synth-negatives": ("negforge synth-negatives outputs/synth "
                        "outputs/synth_negatives/negatives.parquet --name random",
                        "after negforge synth -o outputs/synth; negforge run "
                        "pipelines/synth_negatives.yaml"),
    "sweep": ("negforge sweep sweeps/fig5_q.yaml --dry-run", _AFTER_SYNTH),
    "sweep-plot": ("negforge sweep-plot sweeps/fig5_q.yaml --x loss.shine.q "
                   "--metric novel_composition/R1@0.5 -o outputs/fig5_q.png",
                   "after negforge sweep sweeps/fig5_q.yaml"),
    "report": (f"negforge report {_SAMPLE}/negatives.parquet --no-hierarchy "
               "-o outputs/report.html", _AFTER_SAMPLE),
    "plot-run": ("negforge plot-run outputs/synth_run -o outputs/curves.png", _AFTER_TRAIN),
    "plot-saliency": ("negforge plot-saliency outputs/synth_run/checkpoints/best.pt "
                      "--split novel_composition --n 2 -o outputs/saliency.png", _AFTER_TRAIN),
}  # fmt: skip


def epilog(command: str) -> str | None:
    """The example line of a command's ``--help`` (None when it has none)."""
    if command not in EXAMPLES:
        return None
    example, needs = EXAMPLES[command]
    return f"Example ({needs}): {example}" if needs else f"Example: {example}"
