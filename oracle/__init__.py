"""The oracle: daily GPU index fixes -> an hourly, integer, validity-tagged anchor.

Public API (see docs/oracle.md):
- ``oracle.records.FixRecord`` / ``Vintage``: the fix records; ``oracle.readers``: CSV, JSON, Redis.
- ``oracle.anchor.HourlyAnchor(AnchorConfig)``: ``ingest(record)``, ``advance_to(ts_ns)`` ->
  ``AnchorPoint`` per hour, ``replay(records, until_ts_ns)``, ``set_index_command(point, market)``.
- ``oracle.validity``: ``Validity``, ``Gates``, ``GATES`` (what each validity gates for risk).
- ``oracle.estimator.estimate_fix``: the k·MAD robust median over raw venue quotes.

Invariants: no clock, no I/O outside ``readers`` and ``cli``; prices are ints (ticks, micro-ticks)
from exact decimals; every refusal is a ``Rejection`` with an ``OracleCode`` in 3000-3999.
"""
