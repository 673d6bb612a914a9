"""Each unimodal encoder learns at least about as well as logistic regression on the same inputs (issue 11).

Data: gru_mm.bench.baseline_data (formant-synthesised vowels, topic documents, oscillation/burst series),
test samples from speakers / authors / sources unseen in training. The same comparison, with its table,
is `scripts/encoder_baselines.py`.
"""

from __future__ import annotations

import pytest

from gru_mm.bench import baselines

pytestmark = pytest.mark.slow
# gru-mm's test accuracy may trail the best logistic regression by at most this much (sampling noise of
# a few hundred test samples is about 0.02)
MARGIN = 0.05


@pytest.mark.parametrize("modality", list(baselines.ENCODERS))
def test_encoder_is_not_worse_than_logistic_regression(modality, tmp_path):
    result = baselines.compare(modality, tmp_path)
    best = result["best_logreg"]
    chance = 1 / result["classes"]
    assert best["test_acc"] > chance + 0.3, result  # the data carry the label: a baseline learns it
    assert result["gru_mm"]["test_acc"] >= best["test_acc"] - MARGIN, (
        f"{modality}: gru-mm {result['gru_mm']['test_acc']:.3f} vs logistic regression "
        f"({best['name']}) {best['test_acc']:.3f}"
    )
