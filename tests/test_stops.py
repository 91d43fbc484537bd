"""What stopped a process's work is recorded for the block that runs it and ends with it: no
state outlives a command (the next one in the same process starts clean)."""

import os
import signal
import time

import pytest

from lrexp.engine import interrupts
from lrexp.run import stops
from lrexp.run.life import EXIT_INTERRUPTED, EXIT_TERMINATED


def test_a_record_lasts_as_long_as_its_outermost_block():
    assert stops.current() is None
    with stops.recording() as outer:
        outer.sweep_interrupted = True
        with stops.recording() as inner:  # a job run inside the command shares its record
            assert inner is outer
    assert stops.current() is None
    with stops.recording() as next_command:
        assert not next_command.sweep_interrupted


def test_sigterm_is_taken_as_ctrl_c_and_recorded_with_its_exit_code():
    before = signal.getsignal(signal.SIGTERM)
    with stops.sigterm_as_interrupt() as record:
        assert record.interrupted_exit_code == EXIT_INTERRUPTED and record.stop_cause() == "Ctrl-C"
        with pytest.raises(stops.Terminated):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises at once
        assert record.terminated and record.interrupted_exit_code == EXIT_TERMINATED
        assert record.stop_cause() == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_schedulers_job_takes_its_stop_signals_and_says_why():
    scheduler = stops.Scheduler((signal.SIGUSR2,), lambda signum: "SLURM time limit")
    with stops.scheduled_job(scheduler) as record, stops.sigterm_as_interrupt():
        with pytest.raises(stops.Terminated):
            os.kill(os.getpid(), signal.SIGUSR2)
            time.sleep(5)
        assert record.stop_cause() == "SLURM time limit"
    assert record.scheduler is None


def test_a_part_released_from_the_hold_takes_a_stop_at_once():
    # the tracker's flush among a point's records: the step is buffered already, and a store
    # that hangs must not keep SIGTERM waiting until SLURM's SIGKILL
    with (stops.sigterm_as_interrupt(), interrupts.held(), pytest.raises(stops.Terminated),
          interrupts.released()):
        signal.raise_signal(signal.SIGTERM)
        pytest.fail("SIGTERM was held inside released()")


def test_a_stop_held_before_a_released_part_is_raised_as_it_starts():
    with stops.sigterm_as_interrupt(), interrupts.held():
        signal.raise_signal(signal.SIGTERM)  # held: the point's records go on
        with pytest.raises(stops.Terminated), interrupts.released():
            pytest.fail("the held SIGTERM waited past the released part's start")
