"""gru-mm-train and gru-mm-eval turn oneDNN's primitive cache off (gru_mm/nn/onednn_cache.py): set after
torch is imported, before the first convolution, the capacity holds; a capacity the user set wins."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

pytestmark = pytest.mark.slow  # two fresh interpreters importing torch

CHILD = """
import torch
from gru_mm.nn.onednn_cache import disable_primitive_cache
disable_primitive_cache()
conv = torch.nn.Conv2d(3, 8, 3)
for _ in range(3):  # the same shape three times: a cache keeps its primitive after the first
    conv(torch.randn(4, 3, 32, 32))
"""


def _conv_primitive_creations(**env: str) -> list[str]:
    clean = {k: v for k, v in os.environ.items() if not k.endswith("PRIMITIVE_CACHE_CAPACITY")}
    out = subprocess.run(
        [sys.executable, "-c", CHILD],
        env=clean | {"ONEDNN_VERBOSE": "profile_create"} | env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line.split(",")[3] for line in out.splitlines() if ",create:" in line and ",convolution," in line]


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch has no oneDNN")
def test_the_cache_is_off_unless_the_user_sets_a_capacity():
    assert _conv_primitive_creations() == ["create:cache_miss"] * 3
    assert _conv_primitive_creations(ONEDNN_PRIMITIVE_CACHE_CAPACITY="1024") == [
        "create:cache_miss",
        "create:cache_hit",
        "create:cache_hit",
    ]
