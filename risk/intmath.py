"""Integer helpers for the risk kernels: scales, overflow-safe multiply-divide, checked operations.

Every function here is `@njit(cache=True)` and callable from Python and from other kernels.

Scales (one place lists every exponent):

| name   | value         | used for                                  |
|--------|---------------|-------------------------------------------|
| `PPM`  | 1_000_000     | margin rates (`*_ppm`), micro-USD per USD  |
| `PPB`  | 1_000_000_000 | funding rates and premiums (`*_ppb`)       |
| `MICRO`| 1_000_000     | micro-ticks per tick (impact prices)       |

Multiply-divide without a 128-bit product. `x = a * b / d` is computed as
`a = q*d + r` (floor division, `0 <= r < d`), `x = q*b + r*b/d`; only `r*b/d` is rounded, so the
result is the exact rounding of the rational `a*b/d`. Preconditions (the caller's, not checked here,
documented per function): `0 < d <= SPLIT_DIVISOR_MAX` (so `|r*b| < d*d < 2**63`), `|b| <= d`
(so `|q*b| <= |a| + d`), and `|a| <= INT64_MAX - d`. Margin (`b = rate_ppm <= PPM`, `d = PPM`) and
funding (`b = |rate_ppb| <= PPB`, `d = PPB`) meet them for every int64 notional below
`INT64_MAX - PPB`. The rounding is in the name: `floor` (toward minus infinity), `ceil` (toward plus
infinity), `trunc` (toward zero).

Checked operations return `(value, ok)`; `ok == False` means the exact result does not fit int64 and
`value` is 0. They decide from the operands before operating (no reliance on wrap-around).
"""

from __future__ import annotations

import numpy as np
from numba import njit

PPM = 1_000_000
PPB = 1_000_000_000
MICRO = 1_000_000
INT64_MAX = 9_223_372_036_854_775_807
INT64_MIN = -9_223_372_036_854_775_808
SPLIT_DIVISOR_MAX = 3_037_000_499  # floor(sqrt(2**63 - 1)): d*d fits int64
# ppm_of_ceil_fast's domain: amount * rate_ppm + 999_999 fits int64 for every rate_ppm <= PPM (~$9.2M)
PPM_FAST_MAX_MICRO = (INT64_MAX - PPM) // PPM
_U_PPM = np.uint64(PPM)
# ppb_of_floor_fast's offset: a multiple of 1e9 above every |amount * rate| it accepts, and twice it
# below 2**64, so amount * rate + offset is a non-negative uint64 (no int64 ever wraps)
PPB_FLOOR_OFFSET = 9_000_000_000_000_000_000
_U_PPB = np.uint64(PPB)
_U_PPB_FLOOR_OFFSET = np.uint64(PPB_FLOOR_OFFSET)
_PPB_FLOOR_OFFSET_QUOTIENT = PPB_FLOOR_OFFSET // PPB


@njit(cache=True)
def mul_div_floor(a, b, d):
    """floor(a * b / d), exactly. Requires 0 < d <= SPLIT_DIVISOR_MAX, |b| <= d, |a| <= INT64_MAX - d."""
    q = a // d
    r = a - q * d
    return q * b + (r * b) // d


@njit(cache=True)
def mul_div_ceil(a, b, d):
    """ceil(a * b / d), exactly. Same preconditions as mul_div_floor."""
    q = a // d
    r = a - q * d
    return q * b - ((-(r * b)) // d)


@njit(cache=True)
def mul_div_trunc(a, b, d):
    """a * b / d rounded toward zero, exactly (symmetric: f(-a) == -f(a)). Same preconditions."""
    if (a < 0) != (b < 0):
        return mul_div_ceil(a, b, d)
    return mul_div_floor(a, b, d)


@njit(cache=True)
def ppm_ratio_floor_capped(num, den, cap):
    """min(floor(num * 1e6 / den), cap), exactly, for 0 <= num, 0 < den and 0 <= cap <= INT64_MAX - PPM
    (a ratio in ppm of two micro-USD amounts, e.g. PnL over cost basis; no operand is rounded
    first). `num = q * den + r` with `0 <= r < den`; `q >= cap // 1e6 + 1` is already past the cap;
    otherwise `r * 1e6 / den` is floored directly while `r * 1e6` fits int64 (den <= ~$9.2M), and
    beyond that by binary long multiplication (each step keeps its remainder below den, so nothing
    exceeds 2 * den - 1 < 2**64 and no int64 wraps: every comparison is against den - x)."""
    q = num // den
    if q > cap // PPM:
        return cap
    r = num - q * den
    if den <= INT64_MAX // PPM:
        frac = (r * PPM) // den
    else:
        frac = 0  # floor(r * x / den) for the bits of PPM read so far, x; rem = r * x mod den
        rem = 0
        for bit in range(19, -1, -1):  # PPM < 2**20
            frac *= 2
            if rem >= den - rem:
                frac += 1
                rem -= den - rem
            else:
                rem *= 2
            if (PPM >> bit) & 1:
                if rem >= den - r:
                    frac += 1
                    rem -= den - r
                else:
                    rem += r
    out = q * PPM + frac
    return cap if out > cap else out


@njit(cache=True)
def ppm_of_ceil(amount_micro, rate_ppm):
    """ceil(amount * rate_ppm / 1e6): a margin requirement, rounded against the account.

    Requires 0 <= rate_ppm <= PPM and amount_micro <= INT64_MAX - PPM (the divisor is a literal
    so LLVM turns both divisions into multiply-shift in the sweep).
    """
    q = amount_micro // 1_000_000
    r = amount_micro - q * 1_000_000
    return q * rate_ppm - ((-(r * rate_ppm)) // 1_000_000)


@njit(cache=True)
def ppm_of_ceil_fast(amount_micro, rate_ppm):
    """ceil(amount * rate_ppm / 1e6), equal to `ppm_of_ceil`, in one multiply and one *unsigned*
    division by a literal (a multiply-high and a shift; the signed floor's sign fix-up is not needed).
    Requires 0 <= amount_micro <= PPM_FAST_MAX_MICRO and 0 <= rate_ppm <= PPM: the product plus
    999_999 is then a non-negative int64, whose unsigned floor is the ceiling sought."""
    return np.int64(np.uint64(amount_micro * rate_ppm + 999_999) // _U_PPM)


@njit(cache=True)
def ppb_of_floor(amount_micro, rate_ppb):
    """floor(amount * rate_ppb / 1e9) for |rate_ppb| <= PPB (funding: the account's signed delta)."""
    q = amount_micro // 1_000_000_000
    r = amount_micro - q * 1_000_000_000
    return q * rate_ppb + (r * rate_ppb) // 1_000_000_000


@njit(cache=True)
def ppb_fast_max(rate_ppb):
    """The largest |amount| that `ppb_of_floor_fast` accepts at this rate (one division: compute it
    once per rate, not per amount)."""
    r = rate_ppb if rate_ppb >= 0 else -rate_ppb
    return PPB_FLOOR_OFFSET // r if r > 0 else INT64_MAX


@njit(cache=True)
def ppb_of_floor_fast(amount_micro, rate_ppb):
    """floor(amount * rate_ppb / 1e9), equal to `ppb_of_floor`, in one multiply and one *unsigned*
    division by a literal. Requires |amount_micro| <= ppb_fast_max(rate_ppb), i.e.
    |amount * rate| <= PPB_FLOOR_OFFSET: then amount * rate + PPB_FLOOR_OFFSET lies in
    [0, 2 * PPB_FLOOR_OFFSET] < 2**64, and as the offset is a multiple of 1e9 the floor is
    (amount * rate + offset) // 1e9 - offset / 1e9 (a negative product's int64 bits reinterpreted
    as uint64 and added modulo 2**64 give exactly that sum)."""
    shifted = np.uint64(amount_micro * rate_ppb) + _U_PPB_FLOOR_OFFSET
    return np.int64(shifted // _U_PPB) - _PPB_FLOOR_OFFSET_QUOTIENT


@njit(cache=True)
def checked_add(a, b):
    """(a + b, True), or (0, False) when the sum does not fit int64."""
    if b > 0 and a > INT64_MAX - b:
        return 0, False
    if b < 0 and a < INT64_MIN - b:
        return 0, False
    return a + b, True


@njit(cache=True)
def checked_sub(a, b):
    """(a - b, True), or (0, False) when the difference does not fit int64."""
    if b < 0 and a > INT64_MAX + b:
        return 0, False
    if b > 0 and a < INT64_MIN + b:
        return 0, False
    return a - b, True


@njit(cache=True)
def checked_mul(a, b):
    """(a * b, True), or (0, False) when the product does not fit int64."""
    if a == 0 or b == 0:
        return 0, True
    if a == INT64_MIN or b == INT64_MIN:
        if a == 1 or b == 1:
            return a * b, True
        return 0, False
    abs_a = -a if a < 0 else a
    abs_b = -b if b < 0 else b
    if (a > 0) == (b > 0):
        if abs_a > INT64_MAX // abs_b:
            return 0, False
    elif -abs_a < (INT64_MIN + abs_b - 1) // abs_b:  # ceil(INT64_MIN / |b|)
        return 0, False
    return a * b, True


def exact_sum(values) -> int:
    """The exact sum of an int64 array as a Python int (no wrap, however large the total): the high
    and low 32-bit halves are summed separately in int64 (each sum fits for < 2**31 values)."""
    import numpy as np

    a = np.ascontiguousarray(values, dtype=np.int64).ravel()
    if a.size >= 1 << 31:  # pragma: no cover - beyond any table the engine holds
        return sum(int(x) for x in a)
    hi = int((a >> 32).sum())
    lo = int((a & 0xFFFFFFFF).sum())
    return (hi << 32) + lo
