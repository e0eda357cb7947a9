"""The risk sweep: equity, maintenance margin and (at the hour) funding for every account.

`risk_sweep` is the numba kernel the engine calls; `risk_sweep_numpy` is the same sweep as plain
vectorised numpy expressions, the reference the tests compare against and the bench's baseline.

Layout (see risk.margin for the definitions): `collateral_micro[n_acc]`,
`position_lots[n_acc, n_mkt]`, `cost_basis_micro[n_acc, n_mkt]` (C order), per market `mark_ticks`,
`micro_per_tick_lot`, `funding_rate_ppb`, `anchor_ticks`, and the tier arrays of `risk.tiers`.

Per account `a` (micro-USD):
- with `settle_funding`: `funding_out[a] = sum over markets of floor(-lots * anchor * k * rate / 1e9)`
  (the rule of risk.funding), added to `collateral_micro[a]` in place, and the kernel returns the
  remainder for the insurance fund, `-sum(funding_out)`, so that sum(deltas) + remainder == 0
  exactly (>= 0 when every market nets to zero lots; per-market remainders: the sum of
  `risk.funding.settle_funding_market` over the markets); without it, neither `funding_out` nor
  `collateral_micro` is touched and the remainder is 0;
- `equity_out[a] = collateral (after funding) + sum_m (lots * mark * k - cost_basis)`;
- `maint_out[a] = sum_m MM_m(|lots * mark * k|)` (cross margin);
- unhealthy iff `equity < maint`; their indices go to `unhealthy_out[:count]` (length n_acc) in
  ascending order; the kernel returns `(count, remainder)`.

Determinism: the accounts are cut into a fixed number of chunks (independent of the thread count),
each chunk writes only its own accounts and its own integer partial sums, and the partials
are added in chunk order afterwards: the results are identical for any number of threads.
Precondition: every |lots * price * k| <= INT64_MAX - 1e9 (the engine's position limits).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from risk.funding import funding_delta_fast
from risk.intmath import PPB, PPM, PPM_FAST_MAX_MICRO, ppb_fast_max, ppm_of_ceil, ppm_of_ceil_fast

N_CHUNKS = 64


# Fast paths (exactly equal to the split mul-div, proved by the tests against a Python-integer sweep
# at their bounds and against the numpy reference, which always splits), each one multiply and one
# *unsigned* division by a literal (a multiply-high and a shift: no signed floor's fix-up):
# margin: risk.intmath.ppm_of_ceil_fast for x <= MM_FAST_MAX_MICRO (about $9.2M of notional);
# funding: risk.funding.funding_delta_fast for |owed| <= ppb_fast_max(rate) ($18M at a 0.05% rate).
MM_FAST_MAX_MICRO = PPM_FAST_MAX_MICRO


@njit(cache=True, inline="always")
def _account_sums(a, n_mkt, position_lots, cost_basis_micro, per_lot_mark, bound0, mmr0, tier_bound_micro,
                  tier_mmr_ppm, tier_mm_deduction_micro, paying, per_lot_anchor, fund_fast_max, funding_rate_ppb):
    """(sum of position values less cost basis, maintenance margin, funding delta) of account a."""
    equity = 0
    mm = 0
    fund = 0
    for m in range(n_mkt):
        lots = position_lots[a, m]
        notional = lots * per_lot_mark[m]
        equity += notional - cost_basis_micro[a, m]
        notional = abs(notional)
        if notional <= bound0[m]:
            mm += ppm_of_ceil_fast(notional, mmr0[m])
        else:
            i = 0
            while notional > tier_bound_micro[m, i]:
                i += 1
            rate = tier_mmr_ppm[m, i]
            if notional <= MM_FAST_MAX_MICRO:
                mm += ppm_of_ceil_fast(notional, rate) - tier_mm_deduction_micro[m, i]
            else:
                mm += ppm_of_ceil(notional, rate) - tier_mm_deduction_micro[m, i]
        if paying[m]:
            fund += funding_delta_fast(lots, per_lot_anchor[m], funding_rate_ppb[m], fund_fast_max[m])
    return equity, mm, fund


@njit(cache=True, parallel=True)
def risk_sweep(collateral_micro, position_lots, cost_basis_micro, mark_ticks, micro_per_tick_lot,
               tier_bound_micro, tier_mmr_ppm, tier_mm_deduction_micro,
               settle_funding, funding_rate_ppb, anchor_ticks,
               equity_out, maint_out, funding_out, unhealthy_out):
    """One sweep over all accounts (see the module docstring).

    Returns (unhealthy count, funding remainder in micro-USD for the insurance fund; 0 unless
    settle_funding). Entries of `unhealthy_out` past the count are scratch (overwritten).
    """
    n_acc = position_lots.shape[0]
    n_mkt = position_lots.shape[1]
    per_lot_mark = mark_ticks * micro_per_tick_lot
    per_lot_anchor = anchor_ticks * micro_per_tick_lot
    fund_fast_max = np.zeros(n_mkt, dtype=np.int64)
    # tier 0 has no deduction; below MM_FAST_MAX_MICRO its product fits int64 (one division)
    bound0 = np.minimum(tier_bound_micro[:, 0], MM_FAST_MAX_MICRO)
    mmr0 = tier_mmr_ppm[:, 0].copy()
    # a market pays this hour only at a non-zero rate: a frozen one (the oracle's gate: rate 0) or a
    # flat premium skips its funding arithmetic, every delta there being floor(0) = 0
    paying = np.zeros(n_mkt, dtype=np.bool_)
    any_paying = False
    for m in range(n_mkt):
        r = funding_rate_ppb[m]
        if r < 0:
            r = -r
        fund_fast_max[m] = ppb_fast_max(r)
        paying[m] = settle_funding and r != 0
        any_paying |= paying[m]
    n_chunks = N_CHUNKS if n_acc >= N_CHUNKS else 1
    chunk_unhealthy = np.zeros(n_chunks, dtype=np.int64)
    chunk_funding = np.zeros(n_chunks, dtype=np.int64)
    for c in prange(n_chunks):
        lo = c * n_acc // n_chunks
        hi = (c + 1) * n_acc // n_chunks
        k = 0
        paid = 0
        for a in range(lo, hi):
            # two markets (the launch venue) get their own loop: the market loop's trip count is
            # then a constant, unrolled, with every per-market figure in a register
            if n_mkt == 2:
                equity, mm, fund = _account_sums(a, 2, position_lots, cost_basis_micro, per_lot_mark, bound0, mmr0,
                                                 tier_bound_micro, tier_mmr_ppm, tier_mm_deduction_micro, paying,
                                                 per_lot_anchor, fund_fast_max, funding_rate_ppb)
            else:
                equity, mm, fund = _account_sums(a, n_mkt, position_lots, cost_basis_micro, per_lot_mark, bound0,
                                                 mmr0, tier_bound_micro, tier_mmr_ppm, tier_mm_deduction_micro,
                                                 paying, per_lot_anchor, fund_fast_max, funding_rate_ppb)
            collateral = collateral_micro[a]
            if settle_funding:
                if any_paying:  # otherwise every fund is 0: the balance is not rewritten
                    collateral += fund
                    collateral_micro[a] = collateral
                funding_out[a] = fund
                paid += fund
            equity += collateral
            equity_out[a] = equity
            maint_out[a] = mm
            unhealthy_out[lo + k] = a  # written always, kept (k advanced) only when unhealthy: no branch
            if equity < mm:
                k += 1
        chunk_unhealthy[c] = k
        chunk_funding[c] = paid
    # compact each chunk's indices to the front, in chunk order (moves only leftward: safe in place)
    count = 0
    for c in range(n_chunks):
        lo = c * n_acc // n_chunks
        for j in range(chunk_unhealthy[c]):
            unhealthy_out[count] = unhealthy_out[lo + j]
            count += 1
    remainder = 0
    for c in range(n_chunks):
        remainder -= chunk_funding[c]
    return count, remainder


def _ppm_ceil_np(amount: np.ndarray, rate_ppm: np.ndarray) -> np.ndarray:
    q, r = np.divmod(amount, PPM)
    return q * rate_ppm - ((-(r * rate_ppm)) // PPM)


def _ppb_floor_np(amount: np.ndarray, rate_ppb: np.ndarray) -> np.ndarray:
    q, r = np.divmod(amount, PPB)
    return q * rate_ppb + (r * rate_ppb) // PPB


def risk_sweep_numpy(collateral_micro, position_lots, cost_basis_micro, mark_ticks, micro_per_tick_lot,
                     tier_bound_micro, tier_mmr_ppm, tier_mm_deduction_micro,
                     settle_funding, funding_rate_ppb, anchor_ticks,
                     equity_out, maint_out, funding_out, unhealthy_out):
    """`risk_sweep` written as whole-array numpy expressions (same arguments, same outputs)."""
    notional_signed = position_lots * (mark_ticks * micro_per_tick_lot)[None, :]
    notional = np.abs(notional_signed)
    mm = np.zeros(position_lots.shape[0], dtype=np.int64)
    for m in range(position_lots.shape[1]):
        tier = np.searchsorted(tier_bound_micro[m], notional[:, m], side="left")
        mm += _ppm_ceil_np(notional[:, m], tier_mmr_ppm[m][tier]) - tier_mm_deduction_micro[m][tier]
    if settle_funding:
        delta = _ppb_floor_np(-position_lots * (anchor_ticks * micro_per_tick_lot)[None, :],
                              funding_rate_ppb[None, :])
        fund = delta.sum(axis=1)
        collateral_micro += fund
        funding_out[:] = fund
        remainder = -int(fund.sum())
    else:
        remainder = 0
    equity = collateral_micro + (notional_signed - cost_basis_micro).sum(axis=1)
    equity_out[:] = equity
    maint_out[:] = mm
    bad = np.flatnonzero(equity < mm)
    unhealthy_out[: bad.size] = bad
    return int(bad.size), remainder
