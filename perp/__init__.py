"""The perpetual engine core: market specs, order book, matching, mark price, engine state machine."""
