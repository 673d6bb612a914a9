"""Learning happens on realistic data: `experiment=av_manifest` on a small generated set whose test speakers
and writers are unseen in training (gru_mm.data.sources.realistic), through real `gru-mm-train` runs.

Chance is 0.1 (10 digits, balanced). Margins are stated with each assertion and come from the runs
recorded in docs/benchmarks.md ("Real-data check").
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import trained_test_acc
from gru_mm.data.sources.realistic import generate

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed"),
]

# 2-4 frames a sample (the generator's default is 2-8): the frame encoder is most of a run's time
SMALL = {
    "n_train": 400,
    "n_val": 60,
    "n_test": 150,
    "speakers": (10, 2, 4),
    "writers": (8, 2, 3),
    "max_frames": 4,
}
QUICK = ("trainer.enable_progress_bar=false", "log_model=false", "trainer.max_epochs=8")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("realistic"), **SMALL)


@pytest.fixture(scope="module")
def accuracy(manifest, tmp_path_factory):
    """test/acc of `experiment=av_manifest` with the given overrides, trained once per module: the fused
    comparison reuses the single-modality runs of the tests above (the same command on the same data)."""
    done: dict[tuple[str, ...], float] = {}

    def get(*overrides: str) -> float:
        if overrides not in done:
            done[overrides] = trained_accuracy(manifest, tmp_path_factory.mktemp("run"), *overrides)
        return done[overrides]

    return get


def trained_accuracy(manifest: Path, root: Path, *overrides: str) -> float:
    args = ("experiment=av_manifest", f"data.path={manifest}", *QUICK, *overrides)
    return trained_test_acc(root, *args, experiment="manifest")  # the data's name


# Measured 2026-11-28 (2-core VM), this command: test/acc 0.527 (seed 42, the one used here), 0.533 (seed 0),
# 0.647 (seed 1) with av_manifest's warmup; 0.273, 0.233, 0.273 without it (docs/benchmarks.md, "Why
# frames-only gru-mm-train learned slower").
# With av_manifest's attention fusion (issue 11, audio): 0.453 (generator seed 0), 0.560 (generator seed 1);
# with its unimodal heads reading the mean of the GRU outputs (readout=mean, now the recipe's): 0.407 / 0.433.
def test_frames_alone_learn_digits_of_unseen_writers(accuracy):
    acc = accuracy("model.modalities=[frames]")
    # chance is 0.1 and shuffled labels would stay near it; 0.3 is chance + 0.2 (8 standard errors on 150
    # samples), 0.107 below the recipe's 0.407 here and above the 0.27 of runs without the warmup
    assert acc >= 0.3, f"frames-only test/acc {acc:.3f} < 0.3 (chance 0.1 + a margin of 0.2)"


# Measured 2026-11-28 (2-core VM): audio-only test/acc 0.960 (generator seed 0, the one used here), 0.853
# (seed 1) with av_manifest's attention fusion and the audio encoder's per-utterance normalisation; 0.087 and
# 0.120 before (late fusion: the final GRU state over ~55 audio steps memorised the training speakers).
# Logistic regression on log-mel mean+std: 0.780 / 0.740. With the recipe's readout=mean: 0.967 / 0.867.
def test_audio_alone_learns_digits_of_unseen_speakers(accuracy):
    acc = accuracy("model.modalities=[audio]")
    # chance is 0.1; 0.6 is below both measured runs by 0.25+ and near logistic regression's 0.74-0.78
    assert acc >= 0.6, f"audio-only test/acc {acc:.3f} < 0.6 (chance 0.1, logistic regression 0.78)"


# Measured 2026-11-28 (2-core VM), 8 epochs, generator seeds 0 (the set used here) / 1, with the recipe's
# unimodal heads reading each modality's GRU outputs averaged over real steps (readout=mean): fused 0.960 /
# 0.893, audio alone 0.967 / 0.867, frames alone 0.407 / 0.433 (generator seed 2: fused 0.960, audio 0.900;
# training seed 0 instead of 42 on this set: fused 0.940, audio 0.927). With the heads on the final GRU state
# (the earlier recipe) fused was 0.907 / 0.907 / 0.853 against audio 0.960 / 0.853 / 0.880: the audio head
# trained the final state to memorise the training speakers (its own accuracy on unseen speakers 0.453 /
# 0.307 / 0.387 against 0.947 / 0.913 / 0.953 reading the mean). docs/benchmarks.md, "Fused against audio
# alone".
def test_fused_is_at_least_as_good_as_each_modality_alone(accuracy):
    accs = {
        "frames": accuracy("model.modalities=[frames]"),
        "audio": accuracy("model.modalities=[audio]"),
        "fused": accuracy(),
    }
    assert accs["audio"] >= 0.5, accs  # chance 0.1
    # 0.03 (4-5 of 150 test samples) below the best single modality at most: the spread of runs with other
    # seeds or machines (measured 0.960 against 0.967 here, 0.893 against 0.867 on the other set); a fused
    # model whose heads memorised lost by 0.053 (0.907 against 0.960 before); with more data fused wins
    # clearly (the real-data check: 0.990 against 0.950)
    assert accs["fused"] >= max(accs["frames"], accs["audio"]) - 0.03, accs
