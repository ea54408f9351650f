"""``airflow_provider_retl.testing.emulators.customerio``: kept so users' code and connections keep working.

The emulator lives in ``airflow_provider_retl.destinations.customerio.emulator``; this module *is* that module (an alias in ``sys.modules``),
so attributes read or patched here are the real ones.
"""

import sys

from airflow_provider_retl.destinations.customerio import emulator as _module
from airflow_provider_retl.destinations.customerio.emulator import *

sys.modules[__name__] = _module
