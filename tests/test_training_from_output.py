"""A program whose own output reads like training is shown as a training job with its progress.

Real processes started like ``nohup python job.py > out.log`` (own session, stdout to a
file), real discovery, the real progress probe; no timed assertions.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from dgx_spark.collector.discovery import Discovery
from dgx_spark.collector.model import Operation
from dgx_spark.collector.output import OutputHandles
from dgx_spark.collector.rules import build_table
from dgx_spark.collector.sampler import Sampler
from dgx_spark.progress.parsers import parse_text
from dgx_spark.progress.probe import ProgressProbe
from dgx_spark.progress.tracker import ProgressTracker, reads_like_training
from tests.support import workloads
from tests.support.dashboard import wait_until

# tqdm bars per epoch, redrawn with \r, like `for epoch in ...: for batch in tqdm(..., desc=f"Epoch {e}/200")`.
EPOCH_BARS = r"""
import sys, time
ready()
for epoch in range(1, 201):
    for batch in range(1, 21):
        pct = batch * 100 // 20
        sys.stdout.write(f"\rEpoch {epoch}/200: {pct:3d}%|{'#' * (batch // 2):<10}| {batch}/20 "
                         f"[00:02<00:03, 3.1it/s, loss={1.0 / (epoch * 20 + batch):.4f}]")
        sys.stdout.flush()
        time.sleep(0.05)
    sys.stdout.write("\n")
"""
# The same kind of bar about files, with no loss and no epochs: not training.
FILE_BARS = r"""
import sys, time
ready()
while True:
    for n in range(1, 21):
        sys.stdout.write(f"\r{n * 5:3d}%|{'#' * (n // 2):<10}| {n}/20 [00:02<00:03, 3.1it/s]")
        sys.stdout.flush()
        time.sleep(0.05)
    sys.stdout.write("\n")
"""


@pytest.mark.parametrize(
    ("text", "training"),
    [
        ("Epoch 3/200: 45%|####5     | 9/20 [00:02<00:03, 3.1it/s, loss=0.5]", True),
        ("Epoch 3/200", True),
        ("Epoch [1/5], Step [100/600], Loss: 0.2345", True),
        ('{"step": 10, "loss": 0.7}', True),
        ("Epoch 3: 45%|####5     | 9/20 [00:02<00:03, 3.1it/s, loss=0.5, v_num=1]", True),  # Lightning
        (" 45%|####5     | 9/20 [00:02<00:03, 3.1it/s]", False),  # a bar over anything
        ("Downloading: 45%|####5     | 9/20 [00:02<00:03, 3.1it/s]", False),
        ("loss: 0.5", False),  # a loss with no step or epoch
        ("hello world", False),
    ],
)
def test_what_reads_like_training(text: str, training: bool) -> None:
    assert reads_like_training(parse_text(text)) is training


class Harness:
    """Discovery and the progress probe, sampled by hand."""

    def __init__(self) -> None:
        self.sampler = Sampler(
            Discovery(build_table(), min_age=0.0),
            probes=[ProgressProbe(tracker=ProgressTracker(), handles=OutputHandles())],
        )

    def rooted(self, pid: int) -> Operation | None:
        """A snapshot's operation rooted at ``pid``."""
        return next((op for op in self.sampler.sample_once().operations if op.pid == pid), None)


def test_nohup_python_job_printing_epochs_becomes_a_job_with_progress(tmp_path: Path) -> None:
    script = workloads.write_script(tmp_path, "job.py", workloads._READY + EPOCH_BARS)
    with workloads.spawn([sys.executable, str(script)], tmp_path, script=script, ready=True) as job:
        harness = Harness()
        first = wait_until(lambda: harness.rooted(job.pid), 30, 0.1, message="never listed")
        assert first.type == "program" or first.type_source == "output"  # by its command line: a program
        op = wait_until(lambda: (o := harness.rooted(job.pid)) and o.type == "job" and o.progress and o, 60, 0.1,
                        message="its epochs never made it a job")
        assert op.type_source == "output" and op.progress_source == "log"
        assert op.total_epochs == 200
        assert op.throughput == pytest.approx(3.1)
        assert op.metrics is not None and 0 < op.metrics["train_loss"] < 1 and op.metrics["epoch"] >= 1
        assert op.to_api(0)["type_source"] == "output"
        # It stays a job, and its progress moves on.
        later = wait_until(lambda: (o := harness.rooted(job.pid)) and o.progress > op.progress and o, 60, 0.1)
        assert later.type == "job"


def test_a_program_with_a_plain_progress_bar_stays_a_program(tmp_path: Path) -> None:
    script = workloads.write_script(tmp_path, "copy_files.py", workloads._READY + FILE_BARS)
    with workloads.spawn([sys.executable, str(script)], tmp_path, script=script, ready=True) as work:
        harness = Harness()
        wait_until(lambda: harness.rooted(work.pid), 30, 0.1, message="never listed")
        log = work.log_path
        assert log is not None
        # Sample until the program has printed a few whole bars, each read by the probe.
        for _ in range(3):
            size = log.stat().st_size
            wait_until(lambda: log.stat().st_size > size + 200, 30, 0.05)  # noqa: B023 - the size just read
            op = harness.rooted(work.pid)
            assert op is not None
            assert (op.type, op.type_source, op.progress) == ("program", None, None)
