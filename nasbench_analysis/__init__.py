"""NAS-Bench-1Shot1 analysis: NAS-Bench-101 look-ups of one-shot architectures. Not implemented yet."""
