"""DARTS-PT on NAS-Bench-201: the door ``train_search.py`` (supernet training and projection)."""
