"""TensorBoard event files for a training run, through ``tensorboardX`` (an optional
extra): the train and test outputs, the learning rate and the images per second, each run
in its own folder named by its snapshot prefix."""

from __future__ import annotations

import os
import time
from pathlib import Path

from ..errors import MissingPackage


class Events:
    """One run's events in ``folder/NAME`` (NAME: the snapshot prefix's file name). A
    resumed run starting at ``step`` drops the events an earlier run logged from there on
    (TensorBoard's purge), so each step is shown once."""

    def __init__(self, folder: str | Path, prefix: str, step: int = 0) -> None:
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            raise MissingPackage("--tensorboard", "tensorboard", "tensorboardX") from None
        self.folder = Path(folder) / Path(prefix).name
        # the file name's own stamp is in whole seconds: a run resumed within the second
        # would overwrite the first run's events
        unique = f".{time.time_ns()}.{os.getpid()}"
        self.writer = SummaryWriter(logdir=str(self.folder), purge_step=step or None, filename_suffix=unique)

    def scalars(self, group: str, values: dict[str, float], step: int) -> None:
        for name, value in values.items():
            self.writer.add_scalar(f"{group}/{name}", float(value), step)

    def close(self) -> None:
        self.writer.close()
