#!/usr/bin/env python
"""Check a dataset root and report every problem at once (exit status 1 if any).

    python scripts/validate_dataset.py --root DATA
        [--split conf/user/user0.yaml | --split-file DATA/splits/user0.yaml] [--full]

Without a split every ``<root>/*.hdf5`` is checked; ``--full`` also reads all rows (NaN/Inf
EMG, non-monotonic time). See docs/data.md.
"""

from __future__ import annotations

import sys

from emg2qwerty_ssm.validation import main

if __name__ == "__main__":
    sys.exit(main())
