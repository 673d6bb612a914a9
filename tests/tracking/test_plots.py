"""The figures render what they are given: the confusion matrix, GRU gates, attributions, gradient reach."""

from __future__ import annotations

import numpy as np
import torch

from gru_mm.tracking.plots import attribution_figure, confusion_figure, gates_figure, gradient_figure


def test_confusion_figure_renders(tmp_path):
    counts = np.array([[5, 1, 0, 0], [0, 4, 2, 0], [1, 0, 6, 1], [0, 0, 0, 3]])
    fig = confusion_figure(counts, ["a", "b", "c", "d"])
    fig.savefig(tmp_path / "cm.png")
    assert (tmp_path / "cm.png").stat().st_size > 1000
    assert "accuracy 0.783" in fig.axes[0].get_title()  # 18 of 23 on the diagonal
    np.testing.assert_allclose(fig.axes[0].images[0].get_array()[1], [0, 4 / 6, 2 / 6, 0])  # rows: true share


def test_gate_figure_renders_each_sample_up_to_its_length(tmp_path):
    z = torch.rand(1, 2, 9, 5)
    gates = {"z": z, "r": torch.rand_like(z), "lengths": torch.tensor([9, 4])}
    fig = gates_figure(gates, ["a", "b"], "audio")
    fig.savefig(tmp_path / "gates.png")
    assert (tmp_path / "gates.png").stat().st_size > 1000
    images = [ax.images[0].get_array().shape for ax in fig.axes if ax.images]
    assert images == [(5, 9), (5, 4), (5, 9), (5, 4)]  # [hidden units, real steps] per sample, z then r
    assert "a (9 steps)" in fig.axes[0].get_title()


def test_attribution_figure_draws_real_steps_with_the_share(tmp_path):
    result = {
        "audio": {
            "steps": torch.rand(2, 6),
            "lengths": torch.tensor([6, 0]),
            "share": torch.tensor([0.25, 0.0]),
        }
    }
    fig = attribution_figure(result, ["a", "b"])
    fig.savefig(tmp_path / "attribution.png")
    assert [len(ax.patches) for ax in fig.axes] == [1, 0]  # an absent modality: nothing drawn
    values, edges, _ = fig.axes[0].patches[0].get_data()  # one step per real step, centred on it
    assert values.tolist() == result["audio"]["steps"][0].tolist() and edges.tolist() == [
        i - 0.5 for i in range(7)
    ]
    assert [ax.get_title() for ax in fig.axes] == ["a: audio 25%", "b: no audio"]


def test_gradient_figure_draws_a_line_per_modality_with_gradient(tmp_path):
    curves = {"audio": (np.arange(3), np.array([1.0, 0.5, 0.25])), "video": (np.arange(2), np.zeros(2))}
    fig = gradient_figure(curves)
    fig.savefig(tmp_path / "gradient.png")
    (line,) = fig.axes[0].lines  # video has no gradient at all: nothing to draw on a log scale
    assert line.get_label() == "audio" and line.get_ydata().tolist() == [1.0, 0.5, 0.25]
