"""Shared by the GRU layer tests. Not a conftest: scripts/gpu_gru_check.sh runs these tests with
--noconftest (the GPU machine lacks the project's other tools), so they import what they share."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def no_tf32():
    """Exactness is about the algorithm: on CUDA compare in true float32 (cuDNN allows TF32)."""
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old
