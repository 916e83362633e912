"""SDARTS (Chen & Hsieh, ICML 2020): smooth the DARTS landscape by perturbing alpha."""
