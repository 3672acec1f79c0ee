"""One torch thread for the whole suite: its steps are tiny, and on a busy 2-core machine a second spinning thread
made them many times slower (tests that set threads themselves restore them afterwards)."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
