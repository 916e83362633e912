"""Λ-DARTS (ICLR 2023): harmonising operation selection across cells. Not implemented yet."""
