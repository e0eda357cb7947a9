"""insurance_fund package (see docs/ and ../shared/DESIGN.md)."""
