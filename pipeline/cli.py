"""Command line: ``python -m pipeline [hydra overrides]`` or ``cam-audit [overrides]``.

A configuration problem prints one line naming the option and exits with status 2, before any work;
``runtime.debug=true`` shows the traceback instead. A run stopped by too many bad samples exits with 3.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from pipeline.errors import ConfigError, TooManyFailures

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")


@hydra.main(config_path=CONFIG_DIR, config_name="config", version_base="1.3")
def _main(cfg: DictConfig) -> None:
    from pipeline.run import run_audit

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        run_audit(cfg, run_dir)
    except ConfigError as error:
        if cfg.runtime.debug:
            raise
        print(f"cam-audit: configuration error: {error}", file=sys.stderr)
        sys.exit(2)
    except TooManyFailures as error:
        if cfg.runtime.debug:
            raise
        print(f"cam-audit: stopped: {error}", file=sys.stderr)
        sys.exit(3)


def main() -> None:
    """Console-script entry point."""
    _main()


if __name__ == "__main__":
    main()
