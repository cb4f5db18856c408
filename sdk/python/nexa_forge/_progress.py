"""The progress bar ``wait()`` draws on a terminal (tqdm-style, standard library only).

    job_01J...  train  running  [██████████░░░░░░░░░░]  52%  step 120  loss 2.3141  ETA 0:41

One line on stderr, redrawn in place with ``\\r`` at most every 0.2 s, finished with a
newline. Only drawn when the stream is a terminal (``wait(progress=None)`` decides), so logs
and pipes never see it. For ``train`` and ``distill`` jobs it reads the job's metric
points as they come (only the new ones each time) for the step and the latest loss; any
failure to read them just leaves those out - a progress bar never breaks a wait.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Callable, Dict, Optional, TextIO

_WIDTH = 20
_REDRAW_S = 0.2
_METRIC_TYPES = ("train", "distill")


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds + 0.5))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def render(job: Dict[str, Any], step: Optional[int], loss: Optional[float],
           eta_s: Optional[float], width: int = _WIDTH) -> str:
    """The bar's text for a job (pure: the unit tests call it)."""
    progress = job.get("progress")
    frac = min(1.0, max(0.0, float(progress))) if isinstance(progress, (int, float)) else 0.0
    filled = int(round(frac * width))
    parts = [str(job.get("job_id", "")), str(job.get("job_type", "")),
             str(job.get("status", "")), "[" + "█" * filled + "░" * (width - filled) + "]",
             f"{frac * 100:3.0f}%"]
    if step is not None:
        parts.append(f"step {step}")
    if loss is not None:
        parts.append(f"loss {loss:.4f}")
    if eta_s is not None:
        parts.append(f"ETA {_clock(eta_s)}")
    return "  ".join(parts)


class WaitProgress:
    """Draws a job's progress while ``wait()`` polls it. ``fetch(path, params)`` reads an
    API page (the client's GET)."""

    def __init__(self, fetch: Callable[[str, Dict[str, Any]], Dict[str, Any]],
                 stream: Optional[TextIO] = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._fetch = fetch
        self._stream = stream if stream is not None else sys.stderr
        self._clock = clock
        self._cursor: Optional[str] = None
        self._step: Optional[int] = None
        self._loss: Optional[float] = None
        self._start: Optional[float] = None  # first seen running, with its progress
        self._start_frac = 0.0
        self._drawn = 0.0
        self._width = 0
        self._metrics_ok = True

    def _read_metrics(self, job_id: str) -> None:
        while self._metrics_ok:
            params: Dict[str, Any] = {"limit": 1000}
            if self._cursor:
                params["cursor"] = self._cursor
            try:
                page = self._fetch(f"/api/jobs/{job_id}/metrics", params)
            except Exception:  # noqa: BLE001 - an older server, a hiccup: no step shown
                self._metrics_ok = False
                return
            for point in page.get("data") or []:
                values = point.get("values") or {}
                if isinstance(point.get("step"), int):
                    self._step = point["step"]
                loss = values.get("train_loss")
                if isinstance(loss, (int, float)):
                    self._loss = float(loss)
            if page.get("next_cursor"):
                self._cursor = page["next_cursor"]
            if not page.get("has_more"):
                return

    def _eta(self, job: Dict[str, Any]) -> Optional[float]:
        progress = job.get("progress")
        if job.get("status") != "running" or not isinstance(progress, (int, float)):
            return None
        now = self._clock()
        if self._start is None:
            self._start, self._start_frac = now, float(progress)
            return None
        done = float(progress) - self._start_frac
        if done <= 0 or progress >= 1:
            return None
        return (now - self._start) * (1.0 - float(progress)) / done

    def update(self, job: Dict[str, Any], force: bool = False) -> None:
        """Redraws for this job state (at most every 0.2 s unless ``force``)."""
        now = self._clock()
        if not force and now - self._drawn < _REDRAW_S:
            return
        self._drawn = now
        if job.get("job_type") in _METRIC_TYPES and job.get("status") != "queued":
            self._read_metrics(str(job.get("job_id")))
        text = render(job, self._step, self._loss, self._eta(job))
        pad = " " * max(0, self._width - len(text))
        self._width = len(text)
        try:
            self._stream.write("\r" + text + pad)
            self._stream.flush()
        except (OSError, ValueError):
            pass

    def close(self, job: Optional[Dict[str, Any]] = None) -> None:
        """The final state, then a newline."""
        if job is not None:
            self.update(job, force=True)
        try:
            self._stream.write("\n")
            self._stream.flush()
        except (OSError, ValueError):
            pass


def is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
