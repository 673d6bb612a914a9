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


# Measured on the 2-core CPU machine (shared), `scripts/encoder_baselines.py --seed S` (S = 0 is the data
# this test builds), default encoders, gru-mm test accuracy vs the best logistic regression:
#   audio  (8 vowels, unseen speakers): audio_conv 0.831 (10 epochs) vs MFCC 0.747 / log-mel 0.781
#   text   (4 topics, unseen authors), 20 epochs, S = 0 / 1: text_embedding 0.925 / 0.895 vs bag of words
#          0.915 / 0.885 (before token_dropout 0.3 and init_std 0.1: 0.855 / 0.848)
#   series (4 classes, unseen sources), 20 epochs, S = 0 / 1: series_conv 0.920 / 0.902 vs summary
#          statistics 0.932 / 0.915 (series_linear, the default before: 0.723 / 0.720); after 12 epochs
#          series_conv (uncentred) was still learning (0.810 / 0.873)
# Not held by this test: with 12 training sources / authors instead of 20 (seed 2), series_conv 0.733 vs
# 0.925 (it overfits: training loss 0.005; series_linear 0.515) and text 0.840 vs 0.865 (before: 0.728).


@pytest.mark.parametrize("modality", list(baselines.ENCODERS))
def test_encoder_is_not_worse_than_logistic_regression(modality, tmp_path):
    result = baselines.compare(modality, tmp_path, epochs=10 if modality == "audio" else 20)
    best = result["best_logreg"]
    chance = 1 / result["classes"]
    assert best["test_acc"] > chance + 0.3, result  # the data carry the label: a baseline learns it
    assert result["gru_mm"]["test_acc"] >= best["test_acc"] - MARGIN, (
        f"{modality}: gru-mm {result['gru_mm']['test_acc']:.3f} trails logistic regression "
        f"({best['name']}) {best['test_acc']:.3f} by more than the allowed {MARGIN}"
    )
