"""The door layer: what every paper door (``train_search.py``, ``train.py``, ``test.py``, ...)
does between its command line and the engine, written once.

* ``shared.cli.parser``: ``ArgumentParser`` (one-line errors) and ``parse`` (the flags and which
  of them were typed);
* ``shared.cli.flags``: flag groups declared once per concept (DARTS' search flags, SDARTS'
  perturbation, the runtime switches) and the folder-name suffixes;
* ``shared.cli.checks``: the numbers every flag must respect, checked once for every door;
* ``shared.cli.resume``: ``--resume``: which run, which flags it keeps (``FREE_ON_RESUME``);
* ``shared.cli.config``: a config dataclass from the flags (``config_from_args``).

Importing it costs no torch: a door declares and checks its flags, answers ``--help`` and
refuses a bad flag before it imports the engine.
"""
