"""sims package (see docs/ and ../shared/DESIGN.md)."""
