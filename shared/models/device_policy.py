"""A choice made per device type: the set of device types that take one way
(``node_sum.BATCHED``, ``fast_mixed.UNDILATE``, ``ops.NCHW_DILATED_BF16``), and a switch of
one device type's choice for a while, with which the benches time one way against the other
on a device (``bench/capture_check.py``) or count one device's launches on another
(``bench/kernel_count.py``)."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def switched(policy: set[str], device_type: str, on: bool) -> Iterator[None]:
    """``device_type`` in ``policy`` (``on``) or out of it while inside; as it was after."""
    saved = set(policy)
    (policy.add if on else policy.discard)(device_type)
    try:
        yield
    finally:
        policy.clear()
        policy.update(saved)
