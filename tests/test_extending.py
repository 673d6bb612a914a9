"""The README's "Extending" route, end to end: a new modality kind (a `ModalityKind` registered by name)
and a new fusion type (an `nn.Module` class plus one yaml file in a config folder) are read, built, trained
and checkpointed with no other file of gru-mm touched."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from torch import Tensor, nn

from gru_mm.config import register_resolvers
from gru_mm.data import kinds
from gru_mm.data.kinds import FileKind
from gru_mm.data.sources.base import DataError, SampleError
from gru_mm.data.sources.manifest import Manifest
from gru_mm.nn.fusion import STATES, FusionInput
from gru_mm.paths import CONF_DIR

register_resolvers()


@dataclass(frozen=True)
class Tally(FileKind):
    """A toy kind: a `.tally` text file, one step per line, its features comma-separated."""

    name = "tally"
    default_encoder = "series_linear"

    scale: float = 1.0  # data.source.tally.scale: multiplies every value

    def decode(self, path: Path) -> dict[str, np.ndarray]:
        if path.suffix != ".tally":
            raise SampleError("unsupported file type", f"{path.name} (tallies must be .tally)")
        rows = [[float(v) for v in line.split(",")] for line in path.read_text().splitlines() if line.strip()]
        return {"data": np.asarray(rows, dtype=np.float32) * self.scale}

    def step_shape(self) -> tuple[int, ...]:
        return (2,)


class SumFusion(nn.Module):
    """A toy fusion: each modality's final GRU state projected to `dim`, summed."""

    consumes = STATES

    def __init__(self, input_dims: dict[str, int], dim: int = 8):
        super().__init__()
        self.proj = nn.ModuleDict({m: nn.Linear(d, dim) for m, d in input_dims.items()})
        self.out_features = dim

    def forward(self, inputs: dict[str, FusionInput]) -> Tensor:
        return sum(self.proj[m](x.state) for m, x in inputs.items())


@pytest.fixture
def tally_kind():
    kinds.register(Tally)  # what adding it to gru_mm/data/kinds/__init__.py's list does
    yield Tally
    kinds.unregister(Tally.name)


def _corpus(root: Path, n: int = 30) -> Path:
    """Two classes told apart by the tallies' mean; a series column beside them (a built-in kind)."""
    rng = np.random.default_rng(0)
    lines = ["id,label,tally,series"]
    for i in range(n):
        label = i % 2
        steps = rng.normal(2.0 * label, 0.3, size=(3 + i % 5, 2))
        (root / f"{i}.tally").write_text("\n".join(",".join(f"{v:.3f}" for v in row) for row in steps))
        np.save(root / f"{i}.npy", rng.normal(size=(4 + i % 3, 3)).astype(np.float32))
        lines.append(f"s{i:02d},{'ab'[label]},{i}.tally,{i}.npy")
    (root / "tallies.csv").write_text("\n".join(lines) + "\n")
    return root / "tallies.csv"


def test_an_unregistered_kind_is_refused_by_name(tmp_path):
    with pytest.raises(
        DataError, match=r"data\.source\.columns\.x='tally' is not one of audio, frames, text, series"
    ):
        Manifest(tmp_path / "m.csv", columns={"x": "tally"})
    with pytest.raises(
        DataError, match=r"data\.source\.tally is neither a manifest setting nor a modality kind"
    ):
        Manifest(tmp_path / "m.csv", tally={"scale": 2.0})


def test_a_registered_kind_decodes_its_column_with_its_settings(tmp_path, tally_kind):
    path = _corpus(tmp_path)
    source = Manifest(
        path, cache_dir=tmp_path / "cache", tally={"scale": 10.0}, split_fractions=[0.6, 0.2, 0.2]
    )
    assert source.problems == [] and source.feature_shapes == {"tally": (2,), "series": (3,)}
    sample = next(s for s in source.split("train") if s.id == "s03")
    expected = np.loadtxt(tmp_path / "3.tally", delimiter=",", dtype=np.float32) * 10.0
    np.testing.assert_allclose(sample.modalities["tally"], expected, rtol=1e-6)
    assert source.state()["kinds"] == {"tally": "tally", "series": "series"}
    with pytest.raises(DataError, match=r"data\.source\.tally has an unknown setting"):
        Manifest(path, tally={"offset": 1})
    (tmp_path / "bad.csv").write_text("id,label,tally\nx,a,3.npy\n")
    problems = Manifest(tmp_path / "bad.csv").problems
    assert [(p.id, p.modality, p.kind) for p in problems][0] == ("x", "tally", "unsupported file type")


@pytest.mark.slow
def test_a_new_kind_and_a_new_fusion_train_end_to_end(tmp_path, tally_kind):
    from gru_mm.checkpoints import CheckpointError
    from gru_mm.serving.predictor import Predictor
    from gru_mm.train import train

    data = tmp_path / "data"
    data.mkdir()
    path = _corpus(data)
    conf = tmp_path / "conf"  # the user's own config folder, on Hydra's search path
    (conf / "model" / "fusion").mkdir(parents=True)
    (conf / "model" / "fusion" / "sum.yaml").write_text(
        f"_target_: {SumFusion.__module__}.SumFusion\n_partial_: true\ndim: 6\n"
    )
    overrides = [
        f"hydra.searchpath=[file://{conf}]",
        "model/fusion=sum",
        "data=manifest",
        f"data.path={path}",
        "+data.source.tally={scale: 2.0}",
        "+model/encoder@model.encoders.tally=series_linear",
        "+model/encoder@model.encoders.series=series_linear",
        f"paths.root={tmp_path}",
        f"paths.output_dir={tmp_path / 'run'}",
        "logger=csv",
        "trainer.max_epochs=2",
        "data.batch_size=8",
        "model.gru.hidden_size=8",
        "model.head.hidden=8",
        "trainer.enable_progress_bar=false",
        "log_model=false",
    ]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    objective = train(cfg)
    assert objective is not None and np.isfinite(objective)
    best = [p for p in (tmp_path / "run" / "checkpoints").glob("*.ckpt") if p.name != "last.ckpt"]
    assert len(best) == 1
    ckpt = torch.load(best[0], map_location="cpu", weights_only=True)
    assert ckpt["gru_mm_data"]["kinds"] == {"tally": "tally", "series": "series"}
    assert ckpt["gru_mm_data"]["feature_shapes"] == {"tally": [2], "series": [3]}
    model = ckpt["gru_mm"]["config"]["model"]
    assert model["fusion"]["_target_"] == f"{SumFusion.__module__}.SumFusion" and model["fusion"]["dim"] == 6
    weights = ckpt["state_dict"]
    assert (
        weights["net.encoders.tally.proj.0.weight"].shape[1] == 2
    )  # the size the tally kind gave its encoder
    assert weights["net.fusion.proj.tally.weight"].shape == (
        6,
        8,
    )  # the toy fusion trained, on the GRU states
    # a checkpoint builds only classes inside gru_mm (its allow-list): the README says where a fusion goes
    with pytest.raises(CheckpointError, match=r"model\.fusion\._target_"):
        Predictor.from_checkpoint(best[0])
