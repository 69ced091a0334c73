"""Category text: how a categorical value (string, integer, float, boolean) becomes the text it is
binned and compared by. The one Python definition (reference profiles, positive_label in the
config); ParseEventFunction.categoryText is the Java one, and tests/category_text_cases.json the
cases both are tested with (tests/unit/test_java_contracts.py).

Strings stay as they are; booleans are "true"/"false"; the stream sees every JSON number as a
double: integral values below 1e15 become their integer text ("3"), any other number the
shortest digits that read back as the same double (Python's repr) laid out as Java's
Double.toString does: plain for 1e-3 <= |x| < 1e7 ("2.5"), else "1.0E-4", "1.23456785E7".
"""

import math
from decimal import Decimal
from typing import Any

import numpy as np


def category_text(value: Any) -> str:
    """The text a categorical value is compared by (ParseEventFunction.categoryText in Java)."""
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)) and abs(int(value)) < 10**15:
        return str(int(value))
    if isinstance(value, (int, float, np.integer, np.floating)):
        f = float(value)
        if math.isfinite(f) and f == math.floor(f) and abs(f) < 1e15:
            return str(int(f))
        return number_text(f)
    return str(value)


def number_text(f: float) -> str:
    """f with repr's shortest digits in Double.toString's layout (ParseEventFunction.numberText)."""
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "Infinity" if f > 0 else "-Infinity"
    if f == 0:
        return "-0.0" if math.copysign(1.0, f) < 0 else "0.0"
    sign = "-" if f < 0 else ""
    # f == 0.<digits> * 10**point, with repr's shortest digits and no trailing zeros.
    t = Decimal(repr(abs(f))).normalize().as_tuple()
    digits = "".join(map(str, t.digits))
    point = len(digits) + t.exponent
    if 1e-3 <= abs(f) < 1e7:
        if point <= 0:
            return sign + "0." + "0" * -point + digits
        if point >= len(digits):
            return sign + digits + "0" * (point - len(digits)) + ".0"
        return sign + digits[:point] + "." + digits[point:]
    return f"{sign}{digits[0]}.{digits[1:] or '0'}E{point - 1}"
