"""risk package (see docs/ and ../shared/DESIGN.md)."""
