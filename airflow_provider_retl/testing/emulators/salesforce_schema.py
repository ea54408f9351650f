"""``airflow_provider_retl.testing.emulators.salesforce_schema``: kept so users' code and connections keep working.

The emulator lives in ``airflow_provider_retl.destinations.salesforce.emulator_schema``; this module *is* that module (an alias in ``sys.modules``),
so attributes read or patched here are the real ones.
"""

import sys

from airflow_provider_retl.destinations.salesforce import emulator_schema as _module
from airflow_provider_retl.destinations.salesforce.emulator_schema import *

sys.modules[__name__] = _module
