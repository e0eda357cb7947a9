"""The kernels' plain-int codes are the published enums' numbers."""

from perp import kcodes
from perp.codes import ResultCode, describe
from risk.errors import RiskCode


def test_kernel_codes_match_the_published_enums():
    for name in dir(kcodes):
        if not name.startswith("R_"):
            continue
        value = getattr(kcodes, name)
        enum = RiskCode if 2000 <= value < 3000 else ResultCode
        assert value in {int(c) for c in enum}, name
        assert describe(value) != f"UNKNOWN({value})"
