"""The one log line a run resumed under another number of processes writes (search loops, the
RNN training, evaluation training): the words each wrote before it was shared."""
from __future__ import annotations

import logging

from shared import distributed as dist_utils


def test_a_resume_under_another_world_size_is_noted_once(caplog) -> None:
    logger = logging.getLogger("test-world-size")
    with caplog.at_level(logging.INFO, logger="test-world-size"):
        dist_utils.note_world_size(logger, 2, 2, dist_utils.SAME_BATCHES)  # same: silent
        dist_utils.note_world_size(logger, 2, 1, dist_utils.SAME_BATCHES)
        dist_utils.note_world_size(logger, 1, 4, dist_utils.NOT_BIT_IDENTICAL)
    assert [r.getMessage() for r in caplog.records] == [
        "note: resumed with 1 process(es), saved with 2: the same global batches, summed in "
        "another order (equal to rounding, not bit for bit)",
        "note: resumed with 4 process(es), saved with 1: the run continues but not "
        "bit-identically"]
