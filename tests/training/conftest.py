"""Shared by the training tests."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """These tensors are tiny: a second intra-op thread only adds OpenMP barrier waits, which stall
    badly when other jobs share the 2 cores (4x slower measured)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
