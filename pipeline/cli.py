"""Command line: ``python -m pipeline [hydra overrides]`` or ``cam-audit [overrides]``.

A configuration problem prints one line naming the option and exits with status 2, before any work;
``runtime.debug=true`` shows the traceback instead. A run stopped by too many bad samples exits with 3,
one stopped by a full disk with 4 (both resumable).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from omegaconf.errors import MissingMandatoryValue

from pipeline.errors import ConfigError, TooManyFailures, is_disk_full

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")
DEFAULT_RUN_DIR = "outputs"  # the fixed prefix of hydra.run.dir in conf/config.yaml


@hydra.main(config_path=CONFIG_DIR, config_name="config", version_base="1.3")
def _main(cfg: DictConfig) -> None:
    from pipeline.run import run_audit

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        run_audit(cfg, run_dir)
    except MissingMandatoryValue as error:
        # a `???` left in the config (e.g. data.images of data=imagenet_val): name the key, not a traceback
        if cfg.runtime.debug:
            raise
        key = error.full_key or "?"
        print(f"cam-audit: configuration error: {key}: is required (the config has ??? here); pass {key}=<value>", file=sys.stderr)
        sys.exit(2)
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
    except OSError as error:
        if not is_disk_full(error) or cfg.runtime.debug:
            raise
        # every part on disk is complete (written then renamed); the rows not yet flushed are audited again
        print(f"cam-audit: stopped: the disk of {run_dir} is full ({error}); the parts written so far are complete: "
              f"free space, then run again with resume=true hydra.run.dir={run_dir}", file=sys.stderr)
        sys.exit(4)


def check_run_dir_argument(argv: list[str]) -> None:
    """Fail fast when ``hydra.run.dir`` cannot be created.

    Hydra creates the run folder (and writes ``.hydra/``) before our code runs, and reports a failure
    there as its own traceback; so the folder named on the command line (or the default's fixed prefix)
    is checked first. The check is on the nearest existing ancestor: it must be a writable folder.
    Interpolations (``${now:...}``) are cut off: only the fixed prefix can be checked.
    """
    value = DEFAULT_RUN_DIR
    for arg in argv:
        key, sep, given = arg.lstrip("+~").partition("=")
        if sep and key == "hydra.run.dir":
            value = given.strip("'\"")
    fixed = value.split("${", 1)[0] or "."
    ancestor = Path(fixed).expanduser().absolute()
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError("hydra.run.dir", f"{value!r} cannot be created: {str(ancestor)!r} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError("hydra.run.dir", f"{value!r} cannot be created: {str(ancestor)!r} is not writable")


def main() -> None:
    """Console-script entry point."""
    try:
        check_run_dir_argument(sys.argv[1:])
    except ConfigError as error:
        print(f"cam-audit: configuration error: {error}", file=sys.stderr)
        sys.exit(2)
    _main()


if __name__ == "__main__":
    main()
