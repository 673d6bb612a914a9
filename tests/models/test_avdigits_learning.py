"""Learning happens on the built-in data (issue 11): short real `gru-mm-train` runs on avdigits reach well
above chance, and each single modality reaches near its ceiling (video tells `c % 5` only: at most 0.5;
audio tells `c // 5` only: at most 0.2). Chance is 0.1 (10 balanced classes); shuffled labels would stay
near it. Margins are stated with each assertion; the measured values are in the comments above the tests.
"""

from __future__ import annotations

import pytest

from conftest import trained_test_acc

pytestmark = pytest.mark.slow

# 512 training samples, 4 epochs, every batch; 1,000 test samples, so that 0.2 stands out from chance
# (one standard error of an accuracy near 0.1-0.2 is about 0.01 here)
SHORT = (
    "debug=smoke",
    "log_model=false",
    "trainer.limit_train_batches=null",
    "trainer.limit_val_batches=null",
    "trainer.limit_test_batches=null",
    "data.source.n_train=512",
    "data.source.n_val=128",
    "data.source.n_test=1000",
    "trainer.max_epochs=4",
)


@pytest.fixture(scope="module")
def test_acc(tmp_path_factory):
    """test/acc of a short run of the given experiment, on data generated once per module."""
    data = tmp_path_factory.mktemp("data")

    def run(experiment: str) -> float:
        root = tmp_path_factory.mktemp(experiment)
        args = (f"experiment={experiment}", *SHORT, f"paths.data_dir={data}")
        return trained_test_acc(root, *args, timeout=300)

    return run


# Measured 2026-11-28 (2-core VM): 0.939; the full default run (3,000 samples, 6 epochs) 0.995.
def test_the_default_fused_model_learns(test_acc):
    acc = test_acc("avdigits")
    # 0.7: chance + 0.6, and above what either modality alone can reach (0.5)
    assert acc >= 0.7, f"fused test/acc {acc:.3f} < 0.7 (chance 0.1, ceiling 1.0)"


# Measured 2026-11-28 (2-core VM): 0.496; 0.4 is chance + 0.3 and above what audio alone can reach.
def test_video_alone_reaches_its_ceiling(test_acc):
    acc = test_acc("avdigits_video_only")
    assert acc >= 0.4, f"video-only test/acc {acc:.3f} < 0.4 (chance 0.1, ceiling 0.5)"


# Measured 2026-11-28 (2-core VM): 0.188 (the full default run: 0.199).
def test_audio_alone_reaches_its_ceiling(test_acc):
    acc = test_acc("avdigits_audio_only")
    assert acc >= 0.16, f"audio-only test/acc {acc:.3f} < 0.16 (chance 0.1 + 6 standard errors, ceiling 0.2)"
