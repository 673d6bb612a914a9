"""gru-mm: GRU-based multimodal sequence models with Hydra, Lightning and MLflow."""

__version__ = "0.1.0"
