"""``python -m swavnb.study``: the whole study (:mod:`swavnb.study.plan`).

Ctrl-C or SIGTERM ends the running steps' processes and stops in one line, with status 130 / 143
(:mod:`swavnb.base.stopping`).
"""

import sys

from swavnb.base.stopping import exit_status, handle_sigterm
from swavnb.study.plan import main

handle_sigterm()
try:
    sys.exit(main())
except KeyboardInterrupt as stop:
    print(
        "stopped: the running steps were ended; finished results are kept, rerun the same command "
        "to continue",
        file=sys.stderr,
    )
    sys.exit(exit_status(stop))
