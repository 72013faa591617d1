#!/usr/bin/env python
"""CER vs. MAC/s Pareto front of a set of runs: ``python scripts/pareto.py RUN_DIRS... --out STEM``.

See ``emg2qwerty_ssm.pareto`` (and docs/compute.md) for the options.
"""

from emg2qwerty_ssm.pareto import main

if __name__ == "__main__":
    raise SystemExit(main())
