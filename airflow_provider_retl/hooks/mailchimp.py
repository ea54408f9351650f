"""``airflow_provider_retl.hooks.mailchimp``: kept so users' code and connections keep working.

The hook lives in ``airflow_provider_retl.destinations.mailchimp.hook``; this module *is* that module (an alias in ``sys.modules``),
so attributes read or patched here are the real ones.
"""

import sys

from airflow_provider_retl.destinations.mailchimp import hook as _module
from airflow_provider_retl.destinations.mailchimp.hook import *

sys.modules[__name__] = _module
