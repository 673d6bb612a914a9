"""CPU, memory, disk, network and GPU use while training, logged to the MLflow run as `system/...`.

MLflow's own sampler does the work (the MLflow UI draws these in the run's "System metrics" tab);
Lightning's MLFlowLogger never starts it. One sampler, on rank 0, while fitting (the sampler stops
by itself once the run is marked finished, which Lightning does when fitting ends); GPU metrics
need nvidia-ml-py and an NVIDIA driver.
"""

from __future__ import annotations

import logging

import pytorch_lightning as pl

from gru_mm.tracking.run import mlflow_logger
from gru_mm.tracking.store import check_reachable

log = logging.getLogger("gru_mm.train")


class SystemMetrics(pl.Callback):
    def __init__(self, interval_s: float = 10.0):
        self.interval_s = interval_s
        self._monitor = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        logger = mlflow_logger(trainer.loggers)
        if self._monitor is not None or logger is None or not trainer.is_global_zero:
            return
        logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)  # no start/stop lines per stage
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            # resume_logging: steps continue after fit's (and a resumed run's) samples
            self._monitor = SystemMetricsMonitor(
                logger.run_id,
                sampling_interval=self.interval_s,
                resume_logging=True,
                tracking_uri=logger._tracking_uri,
            )
        except ImportError as err:  # psutil missing: the run goes on without system metrics
            log.warning("no system metrics: %s", err)
            return
        self._monitor.start()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        monitor, self._monitor = self._monitor, None
        if monitor is None:
            return
        try:
            check_reachable(monitor._tracking_uri, timeout=2.0)
        except ConnectionError:  # its thread may sit in MLflow's minutes of retries: do not wait for it
            monitor._shutdown_event.set()
            log.warning("system metrics: the tracking server does not answer; their last samples are dropped")
            return
        monitor.finish()  # stops the sampler thread, which logs only whole intervals
        try:  # so one closing sample: a stage shorter than the interval is not left out
            monitor.collect_metrics()
            monitor.publish_metrics(monitor.aggregate_metrics())
            monitor.mlflow_logger.flush()
        except Exception as err:  # a store that went away: the run's own data is already logged
            log.warning("could not log the last system metrics sample: %s", err)
