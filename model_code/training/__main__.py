"""`python -m model_code.training --config FILE [--resume DIR] [--set KEY=VALUE ...]`.

The training entry point, alone or under `torchrun --nproc_per_node N -m model_code.training`
(DDP; torchrun's environment says the rank). Exit 0 on success, 1 on bad input or a failed
run (the reason on stderr), 2 on usage errors.
"""

from __future__ import annotations

import argparse
import os
import sys

from model_code.errors import DataError
from model_code.training.entry import add_arguments, describe, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model_code.training",
                                     description="Train an Aurora variant from a YAML config.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        result = run(args)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if int(os.environ.get("RANK", "0")) == 0:
        print(describe(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
