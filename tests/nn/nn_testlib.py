"""Shared by the GRU layer tests. Not a conftest: scripts/gpu_gru_check.sh runs these tests with
--noconftest (the GPU machine lacks the project's other tools), so they import what they share."""

from __future__ import annotations

import numpy as np
import pytest
import torch

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, CUDA])]  # parametrize over these


def sigmoid(a: np.ndarray) -> np.ndarray:
    """The float64 references' logistic function."""
    return 1.0 / (1.0 + np.exp(-a))


@pytest.fixture(autouse=True)
def no_tf32():
    """Exactness is about the algorithm: on CUDA compare in true float32 (cuDNN allows TF32)."""
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old
