"""NAS-Bench-1Shot1 analysis (Zela, Siems & Hutter, ICLR'20): NAS-Bench-101 look-ups of the
one-shot architectures a search visits, their anytime regret and Hessian eigenvalues."""
