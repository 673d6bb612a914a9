"""Plain PyTorch building blocks: no Lightning, Hydra or MLflow imports here."""

from gru_mm.nn.gru import GRU as GRU
from gru_mm.nn.init import keras_ as keras_
from gru_mm.nn.init import l2_penalty as l2_penalty
