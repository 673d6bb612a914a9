"""Pretrained weights from local files: word vectors for the text embedding, torchvision backbones per
frame."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch
import torchvision

from gru_mm.nn.encoders import BackboneFrameEncoder, TokenEmbeddingEncoder
from gru_mm.nn.pretrained import PretrainedError

VOCAB = ["<pad>", "<unk>", "cat", "dog", "paris", "zebra"]  # ids 0..5, as Vocabulary orders them


def _vectors(dim: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {w: rng.normal(size=dim).astype(np.float32) for w in ["the", "cat", "dog", "Paris", "bird"]}


def _write_glove(path, vectors, header: bool = False, gz: bool = False):
    lines = [f"{len(vectors)} {len(next(iter(vectors.values())))}"] if header else []
    lines += [w + " " + " ".join(f"{v:.6f}" for v in vec) for w, vec in vectors.items()]
    text = "\n".join(lines) + "\n"
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("fmt", ["glove", "vec.gz"])
def test_embedding_starts_from_the_files_vectors(tmp_path, fmt):
    vectors = _vectors()
    path = _write_glove(tmp_path / f"v.{fmt}", vectors, header=fmt != "glove", gz=fmt.endswith("gz"))
    enc = TokenEmbeddingEncoder(len(VOCAB), out_features=4, vectors_path=str(path), vocab=VOCAB)
    w = enc.embed.weight.detach()
    assert torch.allclose(w[2], torch.from_numpy(vectors["cat"]), atol=1e-6)
    assert torch.allclose(w[3], torch.from_numpy(vectors["dog"]), atol=1e-6)
    assert torch.allclose(w[4], torch.from_numpy(vectors["Paris"]), atol=1e-6)  # found lowercased
    assert torch.equal(w[0], torch.zeros(4))  # padding stays zero
    assert w[5].abs().sum() > 0 and w[1].abs().sum() > 0  # tokens the file lacks: random, not zero
    assert enc.embed.weight.requires_grad


def test_frozen_embedding_does_not_train(tmp_path):
    path = _write_glove(tmp_path / "v.txt", _vectors())
    enc = TokenEmbeddingEncoder(len(VOCAB), out_features=4, vectors_path=str(path), vocab=VOCAB, freeze=True)
    assert not enc.embed.weight.requires_grad
    out, _ = enc(torch.tensor([[2, 3, 0]]), torch.tensor([2]))
    assert torch.allclose(out[0, 0], torch.from_numpy(_vectors()["cat"]), atol=1e-6)
    assert torch.equal(out[0, 2], torch.zeros(4))


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "does not exist"),
        ("dim", "has 4-dimensional vectors, but the embedding has 8 (set its out_features to 4)"),
        ("none_found", "none of the 6 vocabulary tokens is in word-vector file"),
        ("binary", "is not a text file of `token v1 ... vD` lines"),
        ("ragged", "line 2: 3 numbers for 'cat', but the file's vectors have 4"),
    ],
)
def test_bad_word_vector_files_name_the_file(tmp_path, case, message):
    path = tmp_path / "v.txt"
    dim = 8 if case == "dim" else 4
    if case == "dim":
        _write_glove(path, _vectors())
    elif case == "none_found":
        _write_glove(path, {"xx": np.ones(4), "yy": np.ones(4)})
    elif case == "binary":
        path.write_bytes(bytes(range(256)) * 4)
    elif case == "ragged":
        path.write_text("the 1 2 3 4\ncat 1 2 3\n")
    with pytest.raises(PretrainedError, match="v.txt") as info:
        TokenEmbeddingEncoder(len(VOCAB), out_features=dim, vectors_path=str(path), vocab=VOCAB)
    assert message in str(info.value)


def _saved_resnet(path, with_head: bool = True):
    torch.manual_seed(1)
    state = torchvision.models.resnet18(weights=None).state_dict()
    if not with_head:
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    torch.save(state, path)
    return state


@pytest.mark.parametrize("with_head", [True, False])
def test_backbone_loads_the_weights_file(tmp_path, with_head):
    state = _saved_resnet(tmp_path / "resnet18.pth", with_head)
    enc = BackboneFrameEncoder(
        "resnet18", weights_path=str(tmp_path / "resnet18.pth"), in_channels=1, out_features=5
    )
    own = enc.backbone.state_dict()
    for k, v in state.items():
        if not k.startswith("fc."):
            assert torch.equal(own[k], v), k
    assert not any(k.startswith("fc.") for k in own)  # the classifier is gone: features go to the projection
    assert enc.proj.in_features == 512


def test_backbone_is_per_real_frame_and_padding_changes_nothing():
    torch.manual_seed(0)
    enc = BackboneFrameEncoder("mobilenet_v3_small", in_channels=3, out_features=6).eval()
    frames = torch.rand(2, 5, 3, 32, 32)
    lengths = torch.tensor([3, 5])
    out, out_lengths = enc(frames, lengths)
    assert out.shape == (2, 5, 6) and torch.equal(out_lengths, lengths)
    assert torch.equal(out[0, 3:], torch.zeros(2, 6))
    alone, _ = enc(frames[:1, :3], lengths[:1])  # the first sample without the padding the batch gave it
    torch.testing.assert_close(alone[0], out[0, :3], rtol=1e-5, atol=1e-6)


def test_frozen_backbone_keeps_weights_and_batchnorm_statistics(tmp_path):
    _saved_resnet(tmp_path / "r.pth")
    enc = BackboneFrameEncoder("resnet18", weights_path=str(tmp_path / "r.pth"), out_features=4, freeze=True)
    assert not enc.backbone.training  # from the start, not only after .train()
    before = {k: v.clone() for k, v in enc.backbone.state_dict().items()}
    proj_before = enc.proj.weight.detach().clone()
    opt = torch.optim.SGD([p for p in enc.parameters() if p.requires_grad], lr=0.1)
    enc.train()
    assert not enc.backbone.training and enc.proj.training
    out, _ = enc(torch.rand(2, 3, 3, 32, 32), torch.tensor([3, 2]))
    out.pow(2).sum().backward()
    opt.step()
    after = enc.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and running_mean/var
    assert not torch.equal(proj_before, enc.proj.weight)


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "does not exist"),
        ("corrupt", "is not a readable torch state dict"),
        ("other_arch", "does not fit resnet18 (missing: "),
        ("not_a_dict", "does not hold a state dict"),
    ],
)
def test_bad_weights_files_name_the_file(tmp_path, case, message):
    path = tmp_path / "w.pth"
    if case == "corrupt":
        path.write_bytes(b"PK\x03\x04 not really a zip")
    elif case == "other_arch":
        torch.save(torchvision.models.mobilenet_v3_small(weights=None).state_dict(), path)
    elif case == "not_a_dict":
        torch.save([torch.zeros(2)], path)
    with pytest.raises(PretrainedError, match="w.pth") as info:
        BackboneFrameEncoder("resnet18", weights_path=str(path))
    assert message in str(info.value)


def test_unknown_arch_is_a_clear_error():
    with pytest.raises(PretrainedError, match="arch='resnet1800' is not a torchvision classification model"):
        BackboneFrameEncoder("resnet1800")


@pytest.mark.parametrize("order", [["Dog", "dog"], ["dog", "Dog"]])
def test_an_exact_case_match_wins_over_another_case(tmp_path, order):
    vecs = {"Dog": np.full(4, 1.0), "dog": np.full(4, 2.0)}
    path = _write_glove(tmp_path / "v.txt", {w: vecs[w] for w in order})
    enc = TokenEmbeddingEncoder(len(VOCAB), out_features=4, vectors_path=str(path), vocab=VOCAB)
    assert torch.equal(enc.embed.weight[3].detach(), torch.full((4,), 2.0))
