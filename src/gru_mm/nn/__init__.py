"""Plain PyTorch building blocks: no Lightning, Hydra or MLflow imports here."""

from gru_mm.nn.gru import GRU
