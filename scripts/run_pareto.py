#!/usr/bin/env python
"""``make pareto``: the budget sweep as parallel single-thread streams (resumable), then the
CER-vs-MAC/s front: ``python scripts/run_pareto.py --seeds 0,1,2 --parallel 2``.

See ``emg2qwerty_ssm.pareto_sweep`` (and docs/compute.md) for the options.
"""

from emg2qwerty_ssm.pareto_sweep import main

if __name__ == "__main__":
    raise SystemExit(main())
