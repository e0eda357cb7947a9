"""What the console's admin queries cost the gateway's event loop (they run between engine batches):
a venue with N accounts each holding a position, then each query timed in a loop.

    PYTHONPATH=. python3 scripts/bench_admin_queries.py [--accounts 50000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.admin import FundHistoryParams  # noqa: E402
from gateway.server import Gateway, ServerConfig  # noqa: E402
from perp.commands import Deposit, Place, SetIndex  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--accounts", type=int, default=50_000)
    n = ap.parse_args().accounts
    with tempfile.TemporaryDirectory() as tmp:
        gw = Gateway(ServerConfig(port=0, data_dir=f"{tmp}/data", keys_path=f"{tmp}/keys.json", index_feed=False,
                                  fsync="never"))
        ts = 1_796_170_000_000_000_000
        sym = gw.specs[0].symbol
        cmds = [SetIndex(ts_ns=ts, market=sym, price="2.0000"), Deposit(ts_ns=ts, account=20, amount_micro=10**13)]
        cmds += [Deposit(ts_ns=ts, account=100 + i, amount_micro=1_000_000_000 + i * 1000) for i in range(n)]
        cmds += [Place(ts_ns=ts, account=20, market=sym, side="sell", price="2.0000", size_lots=n * 1000)]
        cmds += [Place(ts_ns=ts, account=100 + i, market=sym, side="buy", price="2.0000", size_lots=10 + i % 1000)
                 for i in range(n)]
        gw.jeng.submit_rows(gw.engine.encode(cmds))
        api = gw.admin
        for name, fn, loops in (
                ("admin.accounts_at_risk (a fresh sweep)", lambda: api.accounts_at_risk(10), 10),
                ("admin.accounts_at_risk (shared, < 1 s)", lambda: api._at_risk_cached(10, time.monotonic_ns()), 1000),
                ("admin.overview", api.overview, 100),
                ("admin.fund_history", lambda: api.fund_history(FundHistoryParams()), 100),
                ("per-batch fund sample", lambda: api.after_batch(ts), 10_000)):
            fn()
            t = time.perf_counter()
            for _ in range(loops):
                fn()
            print(f"{name:40s} {(time.perf_counter() - t) / loops * 1e3:9.3f} ms per call ({n:,} accounts with positions)")
        gw.jeng.close()


if __name__ == "__main__":
    main()
