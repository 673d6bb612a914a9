"""Using a trained model: predictions from a checkpoint, and the MLflow model logged with each run."""
