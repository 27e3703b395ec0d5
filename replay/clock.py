"""Replay clock: maps wall-clock time to replay time.

Replay time (ms since epoch UTC) starts at ``start_wall_ms`` (default: the wall clock at
construction) and then advances ``speed`` times as fast as wall time. Pausing freezes it; resuming
continues from the frozen value; changing the speed re-anchors at the current replay time, so
replay time is continuous and never goes backwards (:meth:`advance` only jumps forward).

Elapsed wall time is measured with ``time.monotonic()`` (immune to NTP steps); :meth:`wall_ms`
is ``time.time()`` and is what the server reports as ``serverTime`` (Binance compares signed
requests' ``timestamp`` with its wall clock, so the venue's clock must be the real one).

Thread-safe: the server's event loop and test threads may call it concurrently.
"""
from __future__ import annotations

import threading
import time
from typing import Callable


class ReplayClock:
    """Replay time = ``start_wall_ms`` + ``speed`` x (wall time elapsed while not paused).

    Args:
        speed: replay ms per wall ms (``> 0``; 60 = one replay minute per wall second).
        start_wall_ms: replay time at construction, ms since epoch UTC; default = wall now.
        paused: start frozen at ``start_wall_ms``.
        monotonic: wall-elapsed source in seconds (injectable for tests); default ``time.monotonic``.
        wall: wall-clock source in seconds since epoch; default ``time.time``.
    """

    def __init__(
        self,
        speed: float = 1.0,
        start_wall_ms: int | None = None,
        paused: bool = False,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ):
        if not speed > 0:
            raise ValueError("speed must be > 0")
        self._mono = monotonic
        self._wall = wall
        self._lock = threading.Lock()
        self.start_wall_ms = int(start_wall_ms if start_wall_ms is not None else wall() * 1000)
        self._speed = float(speed)
        self._paused = bool(paused)
        self._anchor_replay = float(self.start_wall_ms)
        self._anchor_mono = monotonic()

    # -- reading ---------------------------------------------------------------------------------
    def _now_locked(self) -> float:
        if self._paused:
            return self._anchor_replay
        return self._anchor_replay + (self._mono() - self._anchor_mono) * 1000.0 * self._speed

    def now_ms(self) -> int:
        """Current replay time, integer ms since epoch UTC (floor)."""
        with self._lock:
            return int(self._now_locked())

    def wall_ms(self) -> int:
        """Current wall-clock time, ms since epoch UTC (Binance ``serverTime``)."""
        return int(self._wall() * 1000)

    @property
    def speed(self) -> float:
        """Replay ms per wall ms."""
        return self._speed

    @property
    def paused(self) -> bool:
        """True while replay time is frozen."""
        return self._paused

    # -- control ---------------------------------------------------------------------------------
    def _reanchor(self) -> None:
        self._anchor_replay = self._now_locked()
        self._anchor_mono = self._mono()

    def set_speed(self, speed: float) -> None:
        """Change the speed from now on; replay time stays continuous."""
        if not speed > 0:
            raise ValueError("speed must be > 0")
        with self._lock:
            self._reanchor()
            self._speed = float(speed)

    def pause(self) -> None:
        """Freeze replay time at its current value (idempotent)."""
        with self._lock:
            if not self._paused:
                self._reanchor()
                self._paused = True

    def resume(self) -> None:
        """Continue from the frozen replay time (idempotent)."""
        with self._lock:
            if self._paused:
                self._anchor_mono = self._mono()
                self._paused = False

    def advance(self, ms: int) -> int:
        """Jump replay time forward by ``ms`` (>= 0) and return the new replay time."""
        if ms < 0:
            raise ValueError("the replay clock only moves forward")
        with self._lock:
            self._reanchor()
            self._anchor_replay += ms
            return int(self._anchor_replay)

    def state(self) -> dict:
        """Snapshot for the control API: replay/wall time (ms), speed, paused, start."""
        with self._lock:
            now = int(self._now_locked())
        return {
            "replay_time_ms": now,
            "wall_time_ms": self.wall_ms(),
            "speed": self._speed,
            "paused": self._paused,
            "start_wall_ms": self.start_wall_ms,
        }

    def __repr__(self) -> str:
        return f"<ReplayClock now={self.now_ms()} speed={self._speed} paused={self._paused}>"
