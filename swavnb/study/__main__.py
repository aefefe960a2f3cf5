"""``python -m swavnb.study``: the whole study (:mod:`swavnb.study.plan`)."""

import sys

from swavnb.study.plan import main

sys.exit(main())
