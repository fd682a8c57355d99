"""How dates and times read everywhere (FORMAT_MODULE_PATH): the admin shows them as the console does.

ISO-like, to the second, with the zone: `2026-12-05 18:13:17 UTC`. Input formats stay Django's own.
"""

from __future__ import annotations

DATE_FORMAT = "Y-m-d"
TIME_FORMAT = "H:i:s"
DATETIME_FORMAT = "Y-m-d H:i:s T"
SHORT_DATE_FORMAT = "Y-m-d"
SHORT_DATETIME_FORMAT = "Y-m-d H:i"
MONTH_DAY_FORMAT = "F j"
YEAR_MONTH_FORMAT = "F Y"
