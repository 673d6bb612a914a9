"""The test report of a trained model, the same for `gru-mm-train` and `gru-mm-eval`: ablation, per-class
table, confusion counts, attributions, gradient through time and GRU gates (`report.report`).

Plain computation on the module and its test batches; `gru_mm.tracking.plots` draws the figures."""
