"""Pretrained encoders through the console scripts: word vectors and a torchvision backbone from local
files, frozen, trained on a manifest; the checkpoint alone then predicts (the files are not needed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from conftest import run_cli
from data.byod_files import WORDS, make_corpus

pytestmark = pytest.mark.slow
TINY = [
    "trainer.max_epochs=1",
    "model.gru.hidden_size=8",
    "model.head.hidden=8",
    "data.batch_size=8",
    "trainer.enable_progress_bar=false",
    "data.source.frames.height=16",
    "data.source.frames.width=16",
]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrained")
    manifest, _ = make_corpus(root / "media", n=18, modalities=("frames", "text"))
    rng = np.random.default_rng(0)
    vectors = {w: rng.normal(size=8).astype(np.float32) for w in ["the", *WORDS[:6]]}
    glove = root / "glove.8d.txt"
    glove.write_text(
        "".join(w + " " + " ".join(f"{v:.6f}" for v in vec) + "\n" for w, vec in vectors.items())
    )
    torch.manual_seed(3)
    weights = torchvision.models.resnet18(weights=None).state_dict()
    torch.save(weights, root / "resnet18.pth")
    return root, manifest, vectors, weights


def _encoders(root, text: str = "", frames: str = "") -> list[str]:
    return [
        "+model/encoder@model.encoders.text=text_embedding",
        "+model/encoder@model.encoders.frames=frame_backbone",
        f"model.encoders.text.vectors_path={root / 'glove.8d.txt'}",
        "model.encoders.text.out_features=8",
        "model.encoders.text.freeze=true",
        f"model.encoders.frames.weights_path={root / 'resnet18.pth'}",
        "model.encoders.frames.freeze=true",
        text,
        frames,
    ]


def test_frozen_pretrained_encoders_train_and_the_checkpoint_predicts_alone(files):
    root, manifest, vectors, weights = files
    project = root / "run"
    result = run_cli(
        "gru-mm-train",
        "data=manifest",
        f"data.path={manifest}",
        f"paths.root={project}",
        "experiment_name=pre",
        *TINY,
        *[a for a in _encoders(root) if a],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ckpt = next(project.glob("logs/train/runs/*/checkpoints/epoch*.ckpt"))
    saved = torch.load(ckpt, weights_only=True)
    state, vocab = saved["state_dict"], saved["gru_mm_data"]["vocab"]["text"]
    embed = next(v for k, v in state.items() if k.endswith("encoders.text.embed.weight"))
    for word, vec in vectors.items():  # frozen: still exactly the file's vectors after training
        if word in vocab:
            assert torch.allclose(embed[vocab.index(word)], torch.from_numpy(vec), atol=1e-6), word
    conv1 = next(v for k, v in state.items() if k.endswith("encoders.frames.backbone.conv1.weight"))
    assert torch.equal(conv1, weights["conv1.weight"])
    running = next(v for k, v in state.items() if k.endswith("encoders.frames.backbone.bn1.running_mean"))
    assert torch.equal(running, weights["bn1.running_mean"])  # frozen BatchNorm statistics
    # the weights now live in the checkpoint: prediction needs neither file
    (root / "glove.8d.txt").rename(root / "glove.moved")
    (root / "resnet18.pth").rename(root / "resnet18.moved")
    try:
        out = root / "pred.csv"
        result = run_cli(
            "gru-mm-predict",
            f"ckpt_path={ckpt}",
            f"data_path={manifest}",
            f"out={out}",
            f"paths.root={project}",
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert len(out.read_text().strip().splitlines()) == 1 + 18
    finally:
        (root / "glove.moved").rename(root / "glove.8d.txt")
        (root / "resnet18.moved").rename(root / "resnet18.pth")


def test_a_missing_weights_file_fails_before_any_data_is_read(files):
    root, _, _, _ = files
    args = [a for a in _encoders(root, text=f"model.encoders.text.vectors_path={root / 'nope.txt'}") if a]
    result = run_cli(
        "gru-mm-train",
        "data=manifest",
        f"data.path={root / 'no-manifest.csv'}",
        f"paths.root={root / 'fail'}",
        "logger=csv",
        *TINY,
        *args,
    )
    assert result.returncode != 0
    assert (
        f"gru-mm-train: model.encoders.text.vectors_path={root / 'nope.txt'}: no such file" in result.stderr
    )
    assert "Traceback" not in result.stderr


def test_vectors_of_another_size_are_one_clear_error(files):
    root, manifest, _, _ = files
    args = [a for a in _encoders(root, text="model.encoders.text.out_features=16") if a]
    result = run_cli(
        "gru-mm-train",
        "data=manifest",
        f"data.path={manifest}",
        f"paths.root={root / 'fail2'}",
        "logger=csv",
        *TINY,
        *args,
    )
    assert result.returncode != 0
    assert "has 8-dimensional vectors, but the embedding has 16 (set its out_features to 8)" in result.stderr
    assert "Traceback" not in result.stderr
