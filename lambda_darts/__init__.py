"""Λ-DARTS (Movahedi et al., "Λ-DARTS: Mitigating Performance Collapse by Harmonizing Operation
Selection among Cells", ICLR'23; github.com/dr-faustus/Lambda-DARTS): a regulariser that aligns
the gradients the cells send to their shared alpha.

* ``regularizer``: Λ (corr, signcorr) and its gradient w.r.t. each cell's gradient;
* ``alignment``: the finite-difference weight gradient, as hooks of the engine's search step;
* ``sota/cnn/train_search.py``: the released CNN search door (S1-S5, the DARTS space).
"""
