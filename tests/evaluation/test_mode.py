"""eval_mode: eval inside the block, the caller's mode afterwards, even when the block fails."""

from __future__ import annotations

import pytest
from torch import nn

from gru_mm.evaluation.mode import eval_mode


@pytest.mark.parametrize("training", [True, False])
def test_eval_inside_and_the_callers_mode_after(training):
    module = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5)).train(training)
    with eval_mode(module) as inside:
        assert inside is module
        assert not module.training and not module[1].training
    assert module.training == training and module[1].training == training


def test_the_mode_comes_back_after_an_error():
    module = nn.Linear(2, 2).train()
    with pytest.raises(RuntimeError, match="boom"), eval_mode(module):
        raise RuntimeError("boom")
    assert module.training
