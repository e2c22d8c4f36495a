"""Output parsers, tracker, log follower and payload checks on real-looking output (no server)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from dgx_spark.progress.parsers import OutputParser, parse_text, strip_ansi
from dgx_spark.progress.payload import (
    MAX_BODY_BYTES,
    PayloadError,
    load_body,
    parse_report,
)
from dgx_spark.progress.probe import (
    LogFollower,
    TrainerStateReader,
    epochs_from_command,
    output_dir_from_command,
    parse_trainer_state,
)
from dgx_spark.progress.report import build_report
from dgx_spark.progress.tracker import ProgressTracker, ProgressUpdate

# --- tqdm -----------------------------------------------------------------------

TQDM_REDRAWS = (
    "\r  0%|          | 0/1000 [00:00<?, ?it/s]"
    "\r 10%|█         | 100/1000 [00:13<02:00,  7.48it/s, loss=0.912]"
    "\r 45%|████▌     | 450/1000 [01:02<01:15,  7.20it/s, loss=0.342]"
)


def test_tqdm_bar_gives_progress_step_rate_and_loss() -> None:
    state = parse_text("45%|████      | 450/1000 [01:02<01:15, 7.2it/s, loss=0.342]")
    assert state.progress == pytest.approx(0.45)
    assert (state.step, state.total_steps) == (450, 1000)
    assert state.throughput == pytest.approx(7.2)
    assert state.metrics["train_loss"] == pytest.approx(0.342)


def test_a_metric_name_that_is_not_valid_utf8_is_not_kept() -> None:
    """A JSON line's lone surrogate (json.dumps writes "\\ud800") never becomes a metric: it could not be shown."""
    line = json.dumps({"loss\ud800": 0.5, "accuracy": 0.9, "tab\tname": 1.0})
    update = parse_text(line + "\n")
    assert update.metrics == {"accuracy": 0.9}
    json.dumps(update.metrics, ensure_ascii=False).encode("utf-8")


def test_tqdm_carriage_return_redraws_keep_the_latest() -> None:
    parser = OutputParser()
    parser.feed(TQDM_REDRAWS.encode())
    # The last redraw has no line end yet; it is read because it looks whole.
    assert parser.state.progress == pytest.approx(0.45)
    assert parser.state.metrics["train_loss"] == pytest.approx(0.342)


def test_tqdm_bar_split_across_reads_is_not_misread() -> None:
    parser = OutputParser()
    parser.feed(b"\r 45%|\xe2\x96\x88\xe2\x96\x88\xe2\x96")  # cut inside a UTF-8 block character
    parser.feed(b"\x88      | 450/10")
    assert parser.state.progress is None  # "450/10" must not count
    parser.feed(b"00 [01:02<01:15,  7.20it/s, loss=0.342]")
    assert parser.state.progress == pytest.approx(0.45)
    assert parser.state.total_steps == 1000


def test_tqdm_seconds_per_iteration_and_scaled_counts() -> None:
    state = parse_text("train: 50%|#####     | 5/10 [00:10<00:10,  2.00s/it]")
    assert state.throughput == pytest.approx(0.5)
    state = parse_text("steps: 12%|█▏        | 1.20k/10.0k [00:10<01:13, 120it/s]")
    assert (state.step, state.total_steps) == (1200, 10000)


def test_tqdm_with_ansi_colours_and_epoch_description() -> None:
    line = "\x1b[32mEpoch 3/10:\x1b[0m  50%|\x1b[34m█████     \x1b[0m| 5/10 [00:01<00:01, 4.1it/s, loss=0.25]\n"
    state = parse_text(line)
    assert state.epoch == 3
    assert state.total_epochs == 10
    assert state.progress == pytest.approx((2 + 0.5) / 10)
    assert state.metrics["train_loss"] == pytest.approx(0.25)


def test_evaluation_and_download_bars_are_not_training_progress() -> None:
    parser = OutputParser()
    parser.feed(" 45%|████▌     | 450/1000 [01:02<01:15,  7.20it/s]\n")
    parser.feed("Evaluating: 80%|████████  | 40/50 [00:02<00:00, 20.1it/s]\n")
    parser.feed("Downloading model.safetensors: 60%|██████    | 300M/500M [00:05<00:03, 60MB/s]\n")
    assert parser.state.progress == pytest.approx(0.45)


def test_tqdm_without_total_gives_steps_and_rate_only() -> None:
    state = parse_text("450it [01:02, 7.20it/s, loss=0.5]\n")
    assert state.progress is None
    assert state.step == 450
    assert state.throughput == pytest.approx(7.2)
    assert state.metrics["train_loss"] == pytest.approx(0.5)


# --- Keras ------------------------------------------------------------------------

KERAS2 = (
    "Epoch 1/10\n"
    "  1/313 [..............................] - ETA: 1:02 - loss: 2.3026 - accuracy: 0.0938"
    "\x08" * 80 + "\r"
    "120/313 [==========>...................] - ETA: 1s - loss: 0.4100 - accuracy: 0.8800"
    "\x08" * 80 + "\r"
    "313/313 [==============================] - 2s 5ms/step - loss: 0.3421 - accuracy: 0.9012 - val_loss: 0.2"
    "\nEpoch 2/10\n"
    "157/313 [==============>...............] - ETA: 0s - loss: 0.2100"
)


def test_keras_epochs_and_step_lines() -> None:
    parser = OutputParser()
    parser.feed(KERAS2)
    state = parser.state
    assert (state.epoch, state.total_epochs) == (2, 10)
    assert state.metrics["accuracy"] == pytest.approx(0.9012)
    assert state.metrics["val_loss"] == pytest.approx(0.2)
    assert state.throughput == pytest.approx(200.0)  # 5ms/step
    parser.feed("\n")
    assert state.progress == pytest.approx((1 + 157 / 313) / 10)
    assert state.metrics["train_loss"] == pytest.approx(0.21)


def test_keras3_box_drawing_bar() -> None:
    state = parse_text(
        "Epoch 4/5\n\x1b[1m313/313\x1b[0m \x1b[32m━━━━━━━━━━━━━━━━━━━━\x1b[0m\x1b[37m\x1b[0m "
        "\x1b[1m2s\x1b[0m 6ms/step - accuracy: 0.9712 - loss: 0.0951\n"
    )
    assert (state.epoch, state.total_epochs) == (4, 5)
    assert state.progress == pytest.approx(4 / 5)
    assert state.metrics["train_loss"] == pytest.approx(0.0951)


# --- Hugging Face Trainer ------------------------------------------------------------

HF_OUTPUT = """***** Running training *****
  Num examples = 8,000
  Num Epochs = 3
  Instantaneous batch size per device = 8
  Total optimization steps = 3,000
  0%|          | 0/3000 [00:00<?, ?it/s]\r 17%|█▋        | 500/3000 [01:02<05:12,  8.01it/s]\r{'loss': 0.6931, 'grad_norm': 2.41, 'learning_rate': 4.2e-05, 'epoch': 0.5}
 17%|█▋        | 500/3000 [01:02<05:12,  8.01it/s]
 {'eval_loss': 0.5123, 'eval_runtime': 3.2, 'epoch': 1.0}
 20%|██        | 42/210 [00:01<00:04, 40.2it/s]\r 50%|█████     | 1500/3000 [03:07<03:07,  8.00it/s]\r{'loss': 0.342, 'grad_norm': 1.8, 'learning_rate': 2.5e-05, 'epoch': 1.5}
"""


def test_hugging_face_trainer_dicts_banner_and_global_bar() -> None:
    state = parse_text(HF_OUTPUT)
    assert state.total_epochs == 3
    assert state.total_steps == 3000
    assert state.epoch == pytest.approx(1.5)
    assert state.progress == pytest.approx(0.5)
    assert state.metrics["train_loss"] == pytest.approx(0.342)
    assert state.metrics["eval_loss"] == pytest.approx(0.5123)
    assert state.metrics["learning_rate"] == pytest.approx(2.5e-05)
    assert state.throughput == pytest.approx(8.0)
    assert state.step == 1500  # the evaluation bar (42/210) did not count


def test_hugging_face_final_summary() -> None:
    state = parse_text(
        "  Num Epochs = 3\n{'train_runtime': 612.3, 'train_samples_per_second': 39.2, "
        "'train_steps_per_second': 4.9, 'train_loss': 0.4012, 'epoch': 3.0}\n"
    )
    assert state.progress == pytest.approx(1.0)
    assert state.metrics["train_loss"] == pytest.approx(0.4012)


# --- Lightning -----------------------------------------------------------------------

LIGHTNING = (
    "Sanity Checking DataLoader 0: 100%|██████████| 2/2 [00:00<00:00, 12.1it/s]\n"
    "Epoch 0: 100%|██████████| 1000/1000 [02:10<00:00,  7.66it/s, v_num=0, train_loss=0.812]\n"
    "Validation DataLoader 0:  30%|███       | 30/100 [00:01<00:03, 25.0it/s]\x1b[A\n"
    "\rEpoch 3:  45%|████▌     | 450/1000 [01:02<01:15,  7.20it/s, v_num=0, train_loss=0.342]"
)


def test_lightning_epoch_bar_without_known_epoch_count() -> None:
    state = parse_text(LIGHTNING)
    assert state.epoch == 4  # Lightning's 0-based "Epoch 3" is the fourth epoch
    assert state.progress is None  # the run's length is unknown
    assert state.metrics["train_loss"] == pytest.approx(0.342)
    assert "v_num" not in state.metrics
    assert state.throughput == pytest.approx(7.2)


def test_lightning_with_epoch_count_from_the_command_line() -> None:
    parser = OutputParser()
    parser.state.total_epochs = epochs_from_command(["python", "fit.py", "--trainer.max_epochs=10"])
    parser.feed(LIGHTNING + "\n")
    assert parser.state.progress == pytest.approx((3 + 0.45) / 10)


# --- JSON lines and plain epoch lines ------------------------------------------------------


def test_json_lines() -> None:
    parser = OutputParser()
    parser.feed('{"epoch": 3, "total_epochs": 10, "loss": 0.5, "accuracy": 0.8}\n')
    assert parser.state.progress == pytest.approx(0.3)
    assert parser.state.metrics == {"train_loss": 0.5, "accuracy": 0.8}
    parser.feed('{"progress": 0.42, "step": 420, "total_steps": 1000, "train_loss": 0.3}\n')
    assert parser.state.progress == pytest.approx(0.42)
    assert parser.state.step == 420
    parser.feed('{"progress": NaN, "loss": Infinity}\n{"progress": "0.9"}\n')
    assert parser.state.progress == pytest.approx(0.42)
    assert parser.state.metrics["train_loss"] == pytest.approx(0.3)


def test_json_line_split_across_reads() -> None:
    parser = OutputParser()
    parser.feed(b'{"epoch": 2, "total_epo')
    assert parser.state.epoch is None
    parser.feed(b'chs": 4, "loss": 0.25}\n')
    assert (parser.state.epoch, parser.state.total_epochs) == (2, 4)


def test_epoch_header_summary_and_tutorial_lines() -> None:
    assert parse_text("Epoch 3/10\n").progress == pytest.approx(0.2)  # epoch 3 begins
    summary = parse_text("Epoch 3/10 - loss: 0.3333\n")  # epoch 3 is done
    assert summary.progress == pytest.approx(0.3)
    assert summary.metrics["train_loss"] == pytest.approx(0.3333)
    tutorial = parse_text("Epoch [2/5], Step [300/600], Loss: 0.2345\n")
    assert tutorial.progress == pytest.approx((1 + 0.5) / 5)
    header_then_bar = parse_text("Epoch 2/4\n 50%|█████     | 25/50 [00:05<00:05, 5.0it/s]\n")
    assert header_then_bar.progress == pytest.approx((1 + 0.5) / 4)


def test_noise_is_ignored_and_overlong_lines_dropped() -> None:
    parser = OutputParser()
    assert not parser.feed("hello world\nloading 3/4 shards\nWARNING something 45% done\n")
    assert parser.state.is_empty()
    parser.feed("x" * 100_000)
    parser.feed("\nEpoch 1/2\n")
    assert parser.state.epoch == 1


def test_strip_ansi() -> None:
    assert strip_ansi("\x1b[1;32mok\x1b[0m \x1b]0;title\x07done\x1b[2K") == "ok done"


# --- log follower, trainer_state.json, command hints ----------------------------------------


def test_log_follower_reads_only_new_bytes_and_survives_truncation_and_rotation(tmp_path: Path) -> None:
    log = tmp_path / "job.log"
    log.write_bytes(b"one\n")
    follower = LogFollower(str(log))
    assert follower.read_new() == (b"one\n", False)
    assert follower.read_new() == (b"", False)
    with log.open("ab") as handle:
        handle.write(b"two\n")
    assert follower.read_new() == (b"two\n", False)
    log.write_bytes(b"3\n")  # truncated and rewritten in place
    assert follower.read_new() == (b"3\n", True)
    log.rename(tmp_path / "job.log.1")
    log.write_bytes(b"fresh\n")  # rotated: a new file at the same path
    assert follower.read_new() == (b"fresh\n", True)


def test_log_follower_starts_near_the_end_of_a_big_log(tmp_path: Path) -> None:
    log = tmp_path / "big.log"
    log.write_bytes(b"x" * 10_000 + b"\nEpoch 7/9\n")
    follower = LogFollower(str(log), max_read=1000)
    data, restarted = follower.read_new()
    assert restarted and len(data) == 1000 and data.endswith(b"Epoch 7/9\n")


def test_trainer_state_json(tmp_path: Path) -> None:
    state = {
        "global_step": 750,
        "max_steps": 1000,
        "num_train_epochs": 4,
        "epoch": 3.0,
        "log_history": [
            {"loss": 0.9, "learning_rate": 5e-05, "epoch": 1.0, "step": 250},
            {"eval_loss": 0.61, "epoch": 2.0, "step": 500},
            {"loss": 0.4, "learning_rate": 2e-05, "epoch": 3.0, "step": 750},
        ],
    }
    update = parse_trainer_state(state)
    assert update is not None
    assert update.progress == pytest.approx(0.75)
    assert (update.epoch, update.total_epochs) == (3.0, 4)
    assert update.metrics == {"train_loss": 0.4, "eval_loss": 0.61, "learning_rate": 2e-05}
    checkpoint = tmp_path / "out" / "checkpoint-750"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text(json.dumps(state))
    reader = TrainerStateReader(tmp_path / "out")
    assert reader.read_if_changed() is not None
    assert reader.read_if_changed() is None  # unchanged mtime: not read again
    args = ["python", "run_clm.py", "--output_dir", "out", "--num_train_epochs", "4"]
    assert output_dir_from_command(args) == "out"
    assert output_dir_from_command(["x", "--output-dir=/tmp/o"]) == "/tmp/o"
    assert epochs_from_command(args) == 4
    assert epochs_from_command(["train.py", "--epochs", "many"]) is None


# --- tracker: merge, ETA, throughput, stalled, loss history ----------------------------------


def test_tracker_prefers_reports_and_derives_eta_throughput_stalled() -> None:
    tracker = ProgressTracker(stall_seconds=60)
    tracker.update("op", "log", ProgressUpdate(progress=0.1, step=100, total_steps=1000, metrics={"train_loss": 0.9}))
    tracker.record("op", now=1000.0)
    view = tracker.view("op", now=1000.0, alive=True)
    assert view is not None and view.source == "log" and view.progress == pytest.approx(0.1)
    tracker.update("op", "api", ProgressUpdate(progress=0.2, epoch=2, total_epochs=10, metrics={"train_loss": 0.8}))
    tracker.record("op", now=1010.0)
    view = tracker.view("op", now=1010.0, alive=True)
    assert view is not None and view.source == "api" and view.progress == pytest.approx(0.2)
    assert view.total_epochs == 10 and view.step == 100  # the step still comes from the log
    tracker.update("op", "api", ProgressUpdate(progress=0.3, step=300))
    tracker.record("op", now=1020.0)
    view = tracker.view("op", now=1020.0, alive=True)
    assert view is not None
    assert view.epoch == 2  # a partial report keeps the rest of the last one
    assert view.eta_seconds == pytest.approx(70.0)  # 0.1 per 10 s, 0.7 left
    assert view.throughput == pytest.approx(10.0)  # steps 100 -> 300 in 20 s
    assert view.loss_history == (0.9, 0.8)
    assert view.stalled is False
    tracker.record("op", now=1080.0)
    later = tracker.view("op", now=1080.0, alive=True)
    assert later is not None and later.stalled is True and later.eta_seconds is None
    ended = tracker.view("op", now=1080.0, alive=False)
    assert ended is not None and ended.stalled is False
    fields = later.operation_fields({"gpu": 1})
    assert fields["metrics"] == {"gpu": 1, "train_loss": 0.8, "epoch": 2, "step": 300, "total_steps": 1000}
    tracker.forget([])
    assert tracker.view("op", now=1090.0, alive=True) is None


def test_tracker_loss_history_is_bounded_and_counts_new_values_only() -> None:
    tracker = ProgressTracker()
    for i in range(100):
        tracker.update("op", "log", ProgressUpdate(step=i, metrics={"train_loss": 1.0 / (i + 1)}))
        tracker.update("op", "log", ProgressUpdate(step=i, metrics={"train_loss": 1.0 / (i + 1)}))
        tracker.record("op", now=float(i))
        tracker.view("op", now=float(i), alive=True)
    tracker.record("op", now=100.0)
    view = tracker.view("op", now=100.0, alive=True)
    assert view is not None
    assert len(view.loss_history) == 60
    assert view.loss_history[-1] == pytest.approx(0.01)
    assert len(set(view.loss_history)) == 60


def test_tracker_view_changes_nothing() -> None:
    tracker = ProgressTracker(stall_seconds=60)
    tracker.update("op", "log", ProgressUpdate(progress=0.1, step=10, metrics={"train_loss": 0.9}))
    tracker.record("op", now=1000.0)
    tracker.update("op", "log", ProgressUpdate(progress=0.2, step=20, metrics={"train_loss": 0.8}))
    # Not recorded yet: views at any time see the same samples and never add a loss point.
    first = tracker.view("op", now=1010.0, alive=True)
    assert first is not None and first.progress == pytest.approx(0.2)
    assert first.loss_history == (0.9,) and first.eta_seconds is None
    assert tracker.view("op", now=1010.0, alive=True) == first
    assert tracker.view("op", now=1070.0, alive=True).stalled is True  # type: ignore[union-attr]
    tracker.record("op", now=1070.0)
    moved = tracker.view("op", now=1070.0, alive=True)
    assert moved is not None and moved.stalled is False and moved.loss_history == (0.9, 0.8)
    assert moved.eta_seconds == pytest.approx(560.0)  # 0.1 per 70 s, 0.8 left


def test_command_hint_alone_is_not_progress() -> None:
    tracker = ProgressTracker()
    tracker.update("op", "command", ProgressUpdate(total_epochs=5))
    assert tracker.view("op", now=0.0, alive=True) is None
    tracker.update("op", "log", ProgressUpdate(epoch=2))
    tracker.record("op", now=1.0)
    view = tracker.view("op", now=1.0, alive=True)
    assert view is not None and view.progress == pytest.approx(0.4) and view.source == "log"


# --- report bodies ----------------------------------------------------------------------


def test_report_payload_checks_name_the_field() -> None:
    update, source = parse_report(
        {"progress": 0.45, "epoch": 25, "total_epochs": 100, "step": 450, "total_steps": 1000,
         "metrics": {"train_loss": 0.342}}
    )
    assert source == "api" and update.progress == 0.45 and update.metrics == {"train_loss": 0.342}
    bad = [
        ({"progress": 1.5}, "progress"),
        ({"progress": -0.1}, "progress"),
        ({"progress": "0.5"}, "progress"),
        ({"progress": True}, "progress"),
        ({"epoch": 3, "total_epochs": 2}, "epoch"),
        ({"total_epochs": 2.5}, "total_epochs"),
        ({"step": 11, "total_steps": 10}, "step"),
        ({"metrics": {"train_loss": "low"}}, "metrics.train_loss"),
        ({"metrics": {"bad name": 1}}, "metrics.bad name"),
        ({"metrics": [1, 2]}, "metrics"),
        ({"metrics": {f"m{i}": i for i in range(40)}}, "metrics"),
        ({"progres": 0.5}, "progres"),
        ({"source": "log"}, "source"),
        ({}, "body"),
        ([0.5], "body"),
    ]
    for body, field in bad:
        with pytest.raises(PayloadError) as info:
            parse_report(body)
        assert info.value.field == field, body
    with pytest.raises(PayloadError) as info:
        parse_report(load_body(b'{"progress": NaN}'))
    assert info.value.field == "progress"
    with pytest.raises(PayloadError) as info:
        parse_report(load_body(b'{"metrics": {"train_loss": -Infinity}}'))
    assert info.value.field == "metrics.train_loss"
    with pytest.raises(PayloadError) as info:
        load_body(b"{" + b" " * MAX_BODY_BYTES + b"}")
    assert info.value.status == 413
    with pytest.raises(PayloadError) as info:
        load_body(b"[" * 10_000)
    assert info.value.status == 400


def test_helper_body_drops_what_the_api_would_refuse() -> None:
    body = build_report(
        progress=1.2, epoch=3, total_epochs=2, step=5, total_steps=10, loss=float("nan"),
        accuracy=0.9, **{"eval loss": 0.5, "note": "text"},
    )
    assert body == {
        "source": "helper", "progress": 1.0, "epoch": 3, "step": 5, "total_steps": 10,
        "metrics": {"accuracy": 0.9, "eval_loss": 0.5},
    }
    update, source = parse_report(body)
    assert source == "helper" and update.progress == 1.0


def test_helper_and_callbacks_import_nothing_heavy() -> None:
    code = (
        "import sys, dgx_spark.progress, dgx_spark.progress.callbacks; "
        "heavy = {'fastapi', 'reflex', 'psutil', 'transformers', 'lightning', 'torch', 'pydantic'}; "
        "print(sorted(heavy & set(sys.modules)))"
    )
    import subprocess

    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        cwd=Path(__file__).resolve().parents[1], env={**os.environ, "PYTHONPATH": ""},
    )
    assert out.stdout.strip() == "[]"
