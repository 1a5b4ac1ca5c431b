"""Ctrl-C / SIGTERM take effect between store writes, never inside one."""

from __future__ import annotations

import os
import signal

import pytest

from agora.interrupts import interruptible, uninterrupted


def test_a_signal_inside_an_uninterrupted_block_waits_for_its_end():
    done = []
    with interruptible():
        with pytest.raises(KeyboardInterrupt):
            with uninterrupted():
                os.kill(os.getpid(), signal.SIGTERM)
                with uninterrupted():  # nested: still held
                    done.append("inner")
                done.append("outer")  # the write finishes
        assert done == ["inner", "outer"]
        with pytest.raises(KeyboardInterrupt):  # outside any block: at once
            os.kill(os.getpid(), signal.SIGINT)
            done.append("never")
        with uninterrupted():  # nothing pending is left behind
            done.append("clean")
    assert done == ["inner", "outer", "clean"]
    assert (
        signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    )


def test_the_blocks_own_exception_wins_over_a_held_signal():
    with interruptible():
        with pytest.raises(ValueError):
            with uninterrupted():
                os.kill(os.getpid(), signal.SIGTERM)
                raise ValueError("the write failed")
        with uninterrupted():  # the held signal went with the error
            pass


def test_tracker_store_calls_complete_before_the_interrupt(tracking_uri):
    from agora.tracking import Tracker
    from mlflow import MlflowClient

    tracker = Tracker(tracking_uri, "e", "r")
    method = tracker.client._client.log_batch
    tracker.client._client.log_batch = lambda *a, **k: (os.kill(os.getpid(), signal.SIGTERM), method(*a, **k))[1]
    tracker.log_metrics({"m": 1.0}, step=0)
    with interruptible():
        with pytest.raises(KeyboardInterrupt):
            tracker.flush()  # SIGTERM arrives inside the store write
    tracker.client._client.log_batch = method
    assert [m.value for m in MlflowClient(tracking_uri).get_metric_history(tracker.run_id, "m")] == [
        1.0
    ]  # written whole
    tracker.end("KILLED")  # the store is not left locked
    assert MlflowClient(tracking_uri).get_run(tracker.run_id).info.status == "KILLED"
