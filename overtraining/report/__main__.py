"""Build the report of one or more sweeps: cell table, figures, findings, one HTML page.

    python -m overtraining.report multirun/2026-01-31/12-00-00
    python -m overtraining.report multirun/a multirun/b --out reports/ab --metric ppl/ood_prose
    python -m overtraining.report multirun/a --wandb            # also upload (offline without a key)

Writes ``<out>/report.html`` (self-contained: open it offline or attach it anywhere),
``cells.csv``, ``cells.parquet`` and one PNG per figure, and prints the HTML's path.

argparse, not Hydra: the report reads finished records and takes paths, it composes no
config groups and runs no sweep, and Hydra would add a run dir and its own logging for a
command whose only inputs are directories.
"""

from __future__ import annotations

import argparse
import sys

from overtraining.config import LoggerConfig
from overtraining.report.build import ReportError, build_report
from overtraining.report.inflection import N_BOOT


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m overtraining.report",
        description=__doc__.split("\n\nargparse")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("dirs", nargs="+", help="sweep dirs (multirun/<date>/<time>), run dirs or record.json files")
    p.add_argument("--out", default=None, help="output dir (default: <first dir>/report)")
    p.add_argument(
        "--metric",
        default=None,
        help="OOD metric <m> of ft/<m>, e.g. ppl/ood_prose or ood/embedded_prose_cloze/acc "
        "(default: the first OOD metric the records have)",
    )
    p.add_argument("--id-metric", default=None, help="ID metric that picks the tuned LR (default: id/accuracy)")
    p.add_argument(
        "--bootstrap",
        type=int,
        default=N_BOOT,
        help=f"bootstrap resamples for the optimal-budget intervals (default: {N_BOOT})",
    )
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: 0)")
    p.add_argument(
        "--sft-loss",
        default="train",
        choices=["train", "heldout"],
        help="x-axis of the OOD-vs-SFT-loss figure: train (default: the smoothed training loss, the EMA the "
        "target loss is compared with) or heldout (the held-out SFT loss at each probe)",
    )
    p.add_argument("--wandb", action="store_true", help="also upload figures and table to a W&B run")
    p.add_argument("--wandb-project", default=LoggerConfig.project, help="W&B project (default: overtraining)")
    p.add_argument("--wandb-entity", default="", help="W&B entity (default: the key's)")
    p.add_argument(
        "--wandb-mode",
        default="auto",
        choices=["auto", "offline", "online", "disabled"],
        help="auto (default): WANDB_MODE if set, else online with WANDB_API_KEY, else offline",
    )
    p.add_argument("--wandb-group", default=None, help="W&B group (default: the first dir's name)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logger = (
        LoggerConfig(project=args.wandb_project, entity=args.wandb_entity, mode=args.wandb_mode) if args.wandb else None
    )
    try:
        html = build_report(
            args.dirs,
            args.out,
            metric=args.metric,
            id_metric=args.id_metric,
            n_boot=args.bootstrap,
            seed=args.seed,
            wandb=logger,
            group=args.wandb_group,
            sft_loss=args.sft_loss,
        )
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(html)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
