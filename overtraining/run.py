"""``python -m overtraining.run``: check the command line, then run each cell's recipe.

Usage::

    python -m overtraining.run                                  # one cell on the embedded default
    python -m overtraining.run --cfg job                        # print the composed config
    python -m overtraining.run -m checkpoint=embedded/tokens_1M,embedded/tokens_4M lr=3e-4,1e-3 seed=0,1,2
    python -m overtraining.run -m +experiment=demo              # a preset (conf/experiment/)
    python -m overtraining.run -m ... hydra/launcher=slurm      # one Slurm array job
    torchrun --nproc_per_node=4 -m overtraining.run trainer=deepspeed_zero2 model=hub \\
        checkpoint=pythia-160m/step143000 sft_data=tulu3        # one cell on 4 GPUs

This module imports neither torch nor transformers before every cell of the command line
has been composed and checked (``overtraining.cli``): bad input is refused in about a
second with one line naming the key and the fix. The cell itself is the recipe in
``overtraining.cell`` (prepare -> measure the base -> fine-tune -> measure the change ->
record). Re-running a sweep skips cells whose record exists and resumes an interrupted one
from its SFT state.
"""

from __future__ import annotations

import sys
from pathlib import Path

from overtraining.cli import (
    CONF_DIR,
    CommandLineError,
    check_command_line,
    exit_with,
    quiet_libraries,
    register_schemas,
)


def main(argv: list[str] | None = None) -> None:
    """Checks every cell of the command line, then hands over to Hydra."""
    argv = sys.argv[1:] if argv is None else argv
    if not any(a in ("--help", "-h", "--hydra-help", "--info", "-i") for a in argv):
        try:
            checked = check_command_line(argv)
        except CommandLineError as err:
            exit_with(str(err))
        for cell in checked.bad:
            print(f"error in cell [{' '.join(cell.overrides)}]: {cell.error} (skipped)", file=sys.stderr)
        if checked.cells and len(checked.bad) == len(checked.cells):
            exit_with(f"all {len(checked.cells)} cells are invalid: fix the values above")
    _hydra_main()


def _hydra_main() -> None:
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    register_schemas()

    @hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
    def _cell(dcfg) -> None:  # a DictConfig
        hc = HydraConfig.get()
        multirun = hc.mode.name == "MULTIRUN"
        run_dir = Path(hc.runtime.output_dir)  # shared by all ranks (pass hydra.run.dir under torchrun)
        try:
            cfg = OmegaConf.to_object(dcfg)
        except Exception:  # validated up front; a bad cell of a multirun is skipped here
            if not multirun:
                raise
            return
        quiet_libraries(run_dir)
        from overtraining.cell import run_cell  # torch, transformers, ... from here on

        try:
            run_cell(cfg, run_dir, group=cfg.sweep_name if multirun else "single")
        except (ValueError, FileNotFoundError, PermissionError) as err:
            if not multirun:
                exit_with(str(err))
            print(f"error in cell {run_dir}: {err} (see error.txt; the sweep goes on)", file=sys.stderr)
        except Exception as err:
            if not multirun:
                raise
            print(
                f"cell {run_dir} failed: {type(err).__name__}: {err} (see error.txt; the sweep goes on)",
                file=sys.stderr,
            )

    _cell()


if __name__ == "__main__":
    main()
