"""Stopping training on a signal: SIGTERM, SIGUSR1 and SIGINT (Ctrl-C) save the last step computed.

Batch schedulers (SLURM, Kubernetes, preemptible cloud VMs) send SIGTERM, or SIGUSR1 when asked to
warn ahead, some time before they kill a job. While training runs, `StopRequests` turns each of
these signals into a request that the loop reads between steps: it finishes the steps already
started, saves a checkpoint of the last one (through the same checked path as every checkpoint),
waits until it is written, and raises `cli.Stopped`, which ends the program with
`cli.EXIT_STOPPED`. With several processes, whether any of them has a request is decided by a
collective after every step (`sharding.any_process`), read one step later so that the host never
waits on the step it just started: all processes stop after the same step, also when the signal
reaches one host first. Further signals are only counted: the save under way completes (`kill -9`
stops at once; a save it interrupts is passed over when resuming).

Before the loop starts (data loading, restoring, compiling) nothing has been computed that a
checkpoint would keep, so a signal stops at once (as `KeyboardInterrupt`). JAX's own preemption
service, which would take SIGTERM for sync points of its own, is switched off when the processes
join (`sharding.start_processes`).
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


class StopRequests:
    """The signals received while it is entered (`with StopRequests() as stops:`), main thread only.

    Until `deferring` is set, a signal raises `KeyboardInterrupt` at once; after, it is recorded in
    `received` for the loop to act on.
    """

    def __init__(self) -> None:
        self.received: list[signal.Signals] = []
        self.deferring = False
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():  # Python runs handlers there only
            self._previous = {number: signal.signal(number, self._receive) for number in SIGNALS}
        return self

    def __exit__(self, *exc_info) -> None:
        for number, handler in self._previous.items():  # None: a handler not set from Python
            signal.signal(number, handler if handler is not None else signal.SIG_DFL)

    def _receive(self, number: int, frame: FrameType | None) -> None:
        # Nothing but recording: the handler interrupts arbitrary code (printing included).
        self.received.append(signal.Signals(number))
        if not self.deferring:
            raise KeyboardInterrupt

    @property
    def requested(self) -> bool:
        """Whether this process received a signal."""
        return bool(self.received)

    def cause(self) -> str:
        """What made the run stop, for a message: the first signal, or another process's."""
        return f"{self.received[0].name} received" if self.received else "another process received a signal"


def stopped_message(stops: StopRequests, step: int, validation_owed: bool) -> str:
    """What a run stopped after `step` with its checkpoint saved tells the user."""
    owed = "; the validation due at that step runs first when resuming" if validation_owed else ""
    return (
        f"{stops.cause()}; saved checkpoint {step}, the last step computed, with the data position and "
        f"the logging window{owed}. Run the same command again to resume from it; no step is computed "
        f"twice."
    )


def not_started_message(stops: StopRequests, newest_checkpoint: int | None) -> str:
    """What a run stopped before its first step tells the user."""
    cause = stops.cause() if stops.received else "interrupted"
    if newest_checkpoint is None:
        return f"{cause} before training began; no checkpoint yet, so the same command starts again from step 0."
    return (
        f"{cause} before training began; nothing new was saved, and the same command resumes from "
        f"checkpoint {newest_checkpoint}."
    )
