"""What reaches the console: wordpool's own lines; everything else goes to the run's logs.

Ranks run under torchrun as child processes; their output and torchrun's is piped through `LoggedChild`,
which writes every line to a log file and shows only progress lines (`[train] step …`, `[eval ] step …`,
warnings, wordpool's own messages). Library noise of this process (Ray, mosaicml-streaming, DeepSpeed,
Python warnings) goes to a log file through `quiet_libraries`. `wordpool -v` (WORDPOOL_VERBOSE=1, which
child processes inherit) shows everything, as before."""
from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import threading
import warnings
from pathlib import Path

VERBOSE_ENV = "WORDPOOL_VERBOSE"
# the lines a user reads: the trainer's metric lines, its own notices, and wordpool's messages
PROGRESS = re.compile(r"^(\[[a-z_]+ *\] step +\d|resumed from |stop requested|warning: |wordpool[ :]|== )")
LIBRARY_LOGGERS = ("ray", "ray.data", "ray.train", "streaming", "deepspeed", "DeepSpeed", "torch", "py.warnings",
                   "urllib3", "filelock", "wandb", "lm_eval", "datasets", "transformers", "huggingface_hub")


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def set_verbose(on: bool) -> None:
    if on:
        os.environ[VERBOSE_ENV] = "1"


def is_progress(line: str) -> bool:
    return bool(PROGRESS.match(line))


class LoggedChild:
    """A child process whose stdout and stderr go, line by line, to `log` (all of it) and to this process's
    stdout and stderr (progress lines; every line when verbose). `popen` takes subprocess.Popen's other
    arguments."""

    def __init__(self, cmd: list[str], log: Path, show_all: bool | None = None, **popen):
        self.log = Path(log)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.show_all = verbose() if show_all is None else show_all
        self._out = open(self.log, "a")
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                     text=True, errors="replace", bufsize=1, **popen)
        self._copiers = [threading.Thread(target=self._copy, args=(pipe, console), daemon=True)
                         for pipe, console in ((self.proc.stdout, sys.stdout), (self.proc.stderr, sys.stderr))]
        for thread in self._copiers:
            thread.start()

    def _copy(self, pipe, console) -> None:
        for line in pipe:
            with self._lock:
                self._out.write(line)
                self._out.flush()
            if self.show_all or is_progress(line):
                console.write(line)
                console.flush()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> int | None:
        return self.proc.poll()

    def wait(self, timeout: float | None = None) -> int:
        rc = self.proc.wait(timeout)
        for thread in self._copiers:  # the last lines, before the caller prints its summary
            thread.join(timeout=10)
        self._out.close()
        return rc


def quiet_libraries(log: Path | None) -> None:
    """This process's library logging and Python warnings -> `log` instead of the console (nothing when
    verbose). Ray's own loggers are configured at ray.init (data_pipeline/job.py), then moved here too."""
    if verbose():
        return
    handler: logging.Handler = logging.NullHandler()
    if log is not None:
        Path(log).parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logging.captureWarnings(True)
    warnings.simplefilter("default")  # each warning once, into the log
    for name in LIBRARY_LOGGERS:
        _to_file_only(logging.getLogger(name), handler)
        logging.getLogger(name).propagate = False
    _to_file_only(logging.getLogger(), handler)  # libraries that log through the root logger (streaming's merge_index)


def quiet_beside(checkpoint: str | None, command: str) -> Path | None:
    """Library output of a command that reads a checkpoint -> a new log in its run's logs/ (an export or a
    folder outside a run keeps none); returns that log."""
    from pretrain.run_dir import CHECKPOINTS, RunDir

    folder = Path(checkpoint) if checkpoint else None
    run = folder.parent.parent if folder and folder.parent.name == CHECKPOINTS else None
    log = RunDir(run).log_file(command) if run and run.is_dir() else None
    quiet_libraries(log)
    return log


def _to_file_only(logger: logging.Logger, handler: logging.Handler) -> None:
    """`logger` loses its console handlers (libraries' own print plainly: any handler but a file's) and gets
    `handler`."""
    for old in list(logger.handlers):
        if not isinstance(old, (logging.FileHandler, logging.NullHandler)):
            logger.removeHandler(old)
    logger.addHandler(handler)
