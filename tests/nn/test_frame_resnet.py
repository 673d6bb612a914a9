"""The default frame encoder sizes itself to the frames: 8 px to 224 px, down to a few pixels."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gru_mm.nn.encoders import FrameResNetEncoder


@pytest.mark.parametrize("size,channels", [(8, 1), (32, 3), (64, 3), (96, 1), (224, 3)])
def test_stages_reach_a_few_pixels_whatever_the_frame_size(size, channels):
    encoder = FrameResNetEncoder(in_channels=channels, image_size=size, out_features=24).eval()
    convs = nn.Sequential(*list(encoder.cnn.children())[:-4])  # up to the global pool
    with torch.no_grad():
        last_map = convs(torch.rand(2, channels, size, size))
        assert 2 <= last_map.shape[-1] <= 4  # every output feature sees the whole frame
        y, lengths = encoder(torch.rand(2, 3, channels, size, size), torch.tensor([3, 1]))
    assert y.shape == (2, 3, 24) and not y[1, 1:].any()  # padded frames are zeros


def test_it_learns_where_the_ink_is_not_only_how_much():
    """Two classes of the same bar, on the left or the right half of the frame: telling them apart needs
    the layout, which the stages keep down to 4 px."""
    torch.manual_seed(0)
    x = torch.zeros(64, 1, 1, 32, 32)
    y = torch.arange(64) % 2
    for i in range(64):  # class 0: a bar on the left half, class 1: on the right half; random height
        top, col = int(torch.randint(0, 24, ())), int(torch.randint(0, 12, ())) + 16 * int(y[i])
        x[i, 0, 0, top : top + 8, col : col + 4] = 1
    encoder = FrameResNetEncoder(in_channels=1, image_size=32, out_features=2)
    opt = torch.optim.Adam(encoder.parameters(), 3e-3)
    for _ in range(30):
        loss = nn.functional.cross_entropy(encoder(x, torch.ones(64, dtype=torch.long))[0][:, 0], y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    encoder.eval()
    with torch.no_grad():
        acc = (encoder(x, torch.ones(64, dtype=torch.long))[0][:, 0].argmax(1) == y).float().mean()
    assert acc >= 0.95
