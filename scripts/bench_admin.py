"""The cost of an admin tier change on a venue of N accounts (docs/performance.md, "Admin commands").

Run from the checkout: `PYTHONPATH=. python3 scripts/bench_admin.py [N]` (default 10,000): N accounts
each long 100 lots of H100-PERP at 2.1432 against one maker; the tier change puts them all under
initial margin. Prints the what-if time and the set_tiers time through Engine.submit (after a warm-up).
"""

from __future__ import annotations

import sys
import time

from perp.commands import Deposit, Place, SetIndex, SetTiers
from perp.engine import Engine
from risk.tiers import LeverageTier

T0 = 1_767_225_600_000_000_000
M = "H100-PERP"


def main(n: int) -> None:
    cap = 1 << max(10, (n + 200).bit_length())
    e = Engine(account_capacity=cap)
    cmds = [SetIndex(ts_ns=T0, market=M, price="2.1432"), Deposit(ts_ns=T0, account=20, amount_micro=10**15)]
    for i in range(n):
        if i % 10_000 == 0:  # the maker's asks, at most 1,000,000 lots an order
            cmds.append(Place(ts_ns=T0, account=20, market=M, side="sell", price="2.1432",
                              size_lots=100 * min(10_000, n - i)))
        a = 100 + i
        cmds.append(Deposit(ts_ns=T0 + 1, account=a, amount_micro=45_000_000 + 1000 * (i % 10_000)))
        cmds.append(Place(ts_ns=T0 + 1, account=a, market=M, side="buy", price="2.1432", size_lots=100))
    e.submit_rows(e.encode(cmds))
    tiers = (LeverageTier(5, 100_000, 100), LeverageTier(2, 250_000))
    e.what_if_tiers(M, tiers)  # warm-up (compiles on a cold cache)
    t = time.perf_counter()
    wi = e.what_if_tiers(M, tiers)
    print(f"what_if_tiers over {n + 1:,} accounts with a position: {(time.perf_counter() - t) * 1e3:.1f} ms -> {wi}")
    t = time.perf_counter()
    ev = e.submit([SetTiers(ts_ns=T0 + 2, market=M, tiers=tiers, confirm=True, operator="bench", reason="bench")])
    print(f"set_tiers (validate, what-if, clock step, apply) through submit: {(time.perf_counter() - t) * 1e3:.1f} ms"
          f" -> {ev}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10_000)
