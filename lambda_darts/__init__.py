"""Λ-DARTS (Movahedi et al., "Λ-DARTS: Mitigating Performance Collapse by Harmonizing Operation
Selection among Cells", ICLR'23; github.com/dr-faustus/Lambda-DARTS): a regulariser that aligns
the gradients the cells send to their shared alpha.

The regulariser is part of the engine, turned on by a search's config (``corr_regularization``),
so it composes with every alpha update, SDARTS' perturbation and DARTS-PT's supernet:
``shared.search.alignment_terms`` (Λ and its gradient w.r.t. each cell's gradient) and
``shared.search.alignment`` (the finite-difference weight gradient, as hooks of the search
step). This package holds the released doors: ``sota/cnn/train_search.py``, ``train.py``,
``test.py``, ``run_search.sh``, ``run_eval_cifar.sh``; the RNN search ``sota/rnn/train_search.py``
and ``run.sh``; NAS-Bench-201 in AutoDL's layout, ``NAS-Bench201/exps/algos/DARTS-V1.py`` and
``scripts-search/algos/DARTS-V1.sh`` (their code in ``nasbench201/darts_v1.py``).
"""
