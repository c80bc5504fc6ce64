"""Entry point of a memory probe: ``python -m benchmarks.probe '<json payload>'``.

Runs one figure function in this fresh process and prints its result on a line starting with
``benchmarks.common.PROBE_MARK`` (the parent reads the last such line).
"""

from __future__ import annotations

import importlib
import json
import sys


def main(argv: list[str]) -> int:
    import torch

    from benchmarks.common import PROBE_MARK, context_from_options, to_jsonable

    payload = json.loads(argv[0])
    torch.set_num_threads(int(payload["threads"]))  # the parent's setting (not library code)
    ctx = context_from_options(payload["options"])
    module = importlib.import_module(f"benchmarks.{payload['module']}")
    result = getattr(module, payload["func"])(ctx, **payload["kwargs"])
    print(PROBE_MARK + json.dumps(to_jsonable(result)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
