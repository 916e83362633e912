"""Train a final network from scratch and test it: DARTS' cnn/train.py, train_imagenet.py, test.py.

The paper doors (``sdarts/sota/cnn/train.py``, ``train_imagenet.py``, ``test.py``, DARTS-PT's
``train.py``) parse their original flags into an ``EvalConfig`` / ``TestConfig`` and call
``run_evaluation`` / ``run_test``; the epoch loop, checkpoint/resume and data parallelism
(``torchrun``) live here once:

* ``config``: the configs, file names and the checks of a config (no torch);
* ``cli``: DARTS ``cnn/train.py``'s flags and the run folders (no torch);
* ``trainer``: ``EvalTrainer``, one epoch after another, its checkpoints and schedules;
* ``run``: ``run_evaluation``, which composes data, network, trainer and outputs;
* ``test``: ``run_test`` (DARTS' ``test.py``) and loading saved weights.

Protocol kept from DARTS: SGD on every parameter, lr schedule stepped at the end of each epoch
(epoch e trains with the closed-form lr_e), drop-path probability ramped linearly, auxiliary
loss, gradient-norm clipping, evaluation on the test split after every epoch and the LAST
epoch's accuracy reported. By default no epoch is picked at all: ``weights.pt`` is the last
epoch's. ``train_ratio`` < 1 holds out the end of the training set and keeps the best held-out
epoch in ``best_weights.pt`` (model selection without the test set); ``select_on_test`` keeps
the best epoch on the test set instead, only when a door asks for it explicitly (StacNAS'
released ``augment.py`` did this), with a warning in the log, as it tunes on the test set.
"""
