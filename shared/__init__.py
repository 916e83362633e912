"""Shared engine of the DARTS family: ops, spaces, genotypes, data, supernets, search loop."""
