"""The artifact contract lives in `atld_deploy.artifact` (torch-free, shared by export and runtime); this
module keeps the old import path working."""

from ..artifact import *  # noqa: F401,F403
from ..artifact import __all__  # noqa: F401
