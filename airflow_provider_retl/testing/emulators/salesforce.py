"""``airflow_provider_retl.testing.emulators.salesforce``: kept so users' code and connections keep working.

The emulator lives in ``airflow_provider_retl.destinations.salesforce.emulator``; this module *is* that module (an alias in ``sys.modules``),
so attributes read or patched here are the real ones.
"""

import sys

from airflow_provider_retl.destinations.salesforce import emulator as _module
from airflow_provider_retl.destinations.salesforce.emulator import *

sys.modules[__name__] = _module
