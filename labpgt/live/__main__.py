"""`python -m labpgt.live RUN --kind KIND ...`: the view process that ``--live`` starts.

Lighter than `labpgt view` (no CLI, no torch imported); see `labpgt.live.dashboard.main_child`.
"""

import sys

from labpgt.live.dashboard import main_child

main_child(sys.argv[1:])
