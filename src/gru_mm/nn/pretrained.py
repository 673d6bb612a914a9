"""Pretrained weights from local files (no downloads): word vectors, torchvision backbones and torchaudio
speech models.

Every problem with a file is a `PretrainedError`: one sentence that names the file.
"""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import Tensor, nn

log = logging.getLogger("gru_mm.nn")
HEADS = ("fc", "classifier", "heads")  # where torchvision's classification models keep their classifier


class PretrainedError(ValueError):
    pass


def _existing(path: str | Path, what: str) -> Path:
    path = Path(path).expanduser()
    if not path.is_file():
        raise PretrainedError(f"{what} {path} does not exist or is not a file")
    return path


def read_word_vectors(path: str | Path, wanted: set[str]) -> tuple[dict[str, np.ndarray], int]:
    """({token: vector} for the `wanted` tokens in a word-vector text file, its dimension).

    The format of GloVe and fastText/word2vec `.vec` files: one `token v1 ... vD` line per token, an
    optional `count dim` header line, optionally gzipped (`.gz`). Only wanted lines are parsed, so a
    400k-token file with a 10k-token vocabulary reads in seconds. A wanted token the file has only in
    another case (`Paris` for `paris`) takes that vector; an exact match wins.
    """
    path = _existing(path, "word-vector file")
    opener = gzip.open if path.suffix == ".gz" else open
    found: dict[str, np.ndarray] = {}
    exact: set[str] = set()
    dim = None
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            for number, line in enumerate(fh, 1):
                token, _, rest = line.rstrip().partition(" ")
                if number == 1 and rest.isdigit() and token.isdigit():
                    dim = int(rest)  # the word2vec header: count dim
                    continue
                if not rest:
                    continue
                if dim is None:
                    dim = len(rest.split())
                key = token if token in wanted else token.lower()
                if key in wanted and key not in exact and (key == token or key not in found):
                    values = rest.split()
                    if len(values) != dim:
                        raise PretrainedError(
                            f"word-vector file {path}, line {number}: {len(values)} numbers "
                            f"for {token!r}, but the file's vectors have {dim}"
                        )
                    found[key] = np.asarray(values, dtype=np.float32)
                    if key == token:
                        exact.add(key)
    except PretrainedError:
        raise
    except (UnicodeDecodeError, gzip.BadGzipFile, EOFError, ValueError) as err:
        raise PretrainedError(
            f"word-vector file {path} is not a text file of `token v1 ... vD` lines ({err})"
        ) from None
    if dim is None:
        raise PretrainedError(f"word-vector file {path} holds no vectors")
    return found, dim


def embedding_matrix(tokens: list[str], path: str | Path, dim: int, pad_index: int = 0) -> Tensor:
    """[len(tokens), dim] rows from the file; a token it lacks gets a random vector with the found
    vectors' spread, and the padding row is zero."""
    found, file_dim = read_word_vectors(path, set(tokens))
    if file_dim != dim:
        raise PretrainedError(
            f"word-vector file {path} has {file_dim}-dimensional vectors, but the embedding "
            f"has {dim} (set its out_features to {file_dim})"
        )
    rows = [found.get(t) for t in tokens]
    hits = [r for i, r in enumerate(rows) if r is not None and i != pad_index]
    if not hits:
        raise PretrainedError(
            f"none of the {len(tokens)} vocabulary tokens is in word-vector file {path} "
            "(vocabulary tokens are lowercased words: is it a file for this language?)"
        )
    std = float(np.std(np.stack(hits))) or 1.0
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(len(tokens), dim, generator=gen) * std
    for i, row in enumerate(rows):
        if row is not None:
            weight[i] = torch.from_numpy(row)
    weight[pad_index] = 0
    log.info("text embedding: %d of %d vocabulary tokens found in %s", len(hits), len(tokens) - 1, path)
    return weight


def classification_model(arch: str) -> nn.Module:
    """A torchvision classification model with random weights (torchvision never downloads here)."""
    names = torchvision.models.list_models(module=torchvision.models)
    if arch not in names:
        close = [n for n in names if n.startswith(arch[:4])] or names[:8]
        raise PretrainedError(
            f"arch={arch!r} is not a torchvision classification model (e.g. {', '.join(close)})"
        )
    return torchvision.models.get_model(arch, weights=None)


def load_weights(model: nn.Module, path: str | Path, arch: str, optional: tuple[str, ...] = HEADS) -> None:
    """Load a state dict file (as torchvision or torchaudio save them) into `model`; the submodules named
    in `optional` (the classifier) may be absent, and are loaded only where their shapes fit."""
    path = _existing(path, "weights file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise PretrainedError(f"weights file {path} is not a readable torch state dict ({first})") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise PretrainedError(f"weights file {path} does not hold a state dict (a dict of name -> tensor)")
    own = model.state_dict()
    missing = [k for k in own if k not in state and k.split(".")[0] not in optional]
    unexpected = [k for k in state if k not in own]
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape and k.split(".")[0] not in optional
    ]
    if missing or unexpected or wrong:
        parts = [
            f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
            if keys
        ]
        raise PretrainedError(f"weights file {path} does not fit {arch} ({'; '.join(parts)})")
    # the classifier is replaced anyway: load it only where it fits (a 1000-class head or none at all)
    fitting = {k: v for k, v in state.items() if v.shape == own[k].shape}
    model.load_state_dict(fitting, strict=False)


def strip_classifier(model: nn.Module, arch: str) -> int:
    """Replace the model's final Linear by Identity, so it returns features; their size."""
    for name in HEADS:
        head = getattr(model, name, None)
        if isinstance(head, nn.Linear):
            setattr(model, name, nn.Identity())
            return head.in_features
        if isinstance(head, nn.Sequential):
            linears = [i for i, m in enumerate(head) if isinstance(m, nn.Linear)]
            if linears:
                features = head[linears[-1]].in_features
                head[linears[-1]] = nn.Identity()
                return features
    raise PretrainedError(f"arch={arch!r} has no final Linear classifier to take features before")
