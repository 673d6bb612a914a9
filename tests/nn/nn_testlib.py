"""Shared by the GRU layer tests. Not a conftest: scripts/gpu_gru_check.sh runs these tests with
--noconftest (the GPU machine lacks the project's other tools), so they import what they share."""

from __future__ import annotations

import os
import subprocess
import sys

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


# ---- Triton's CPU interpreter: in a subprocess, since TRITON_INTERPRET must be set before triton is imported
PATCH = """
import numpy as np
import triton.runtime.interpreter as interp

# triton 3.6's interpreter calls int() on 1-element arrays, which numpy >= 2.3 refuses
_orig = interp._patch_lang_tensor


def _patched(tensor, scope):
    _orig(tensor, scope)
    scope.set_attr(tensor, "__index__", lambda self: int(np.asarray(self.handle.data).reshape(-1)[0]))


interp._patch_lang_tensor = _patched
"""


def run_interpreted(script: str, timeout: float = 300, **env_vars: str) -> subprocess.CompletedProcess:
    """Run PATCH + script with the project's src on the path; returns the finished process."""
    env = dict(os.environ, TRITON_INTERPRET="1", GRU_MM_NO_TRITON="", **env_vars)
    src = os.path.join(os.path.dirname(__file__), "..", "..", "src")
    env["PYTHONPATH"] = os.pathsep.join([os.path.abspath(src), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-c", PATCH + script], env=env, capture_output=True, text=True, timeout=timeout
    )
