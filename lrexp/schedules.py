"""The public import path of the LR schedules (``from lrexp.schedules import FindLR``); they live
in ``lrexp.engine.schedules``."""

from lrexp.engine.schedules import *  # noqa: F403
from lrexp.engine.schedules import __all__  # noqa: F401
