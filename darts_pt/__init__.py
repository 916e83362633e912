"""DARTS-PT (ICLR 2021): perturbation-based architecture selection. Not implemented yet."""
