"""The Critic: reads a window of live traces and files findings, one detector per module.

- `window`: `Window` (the traces a scan reads, through `reflection`'s query path, and the
  live version of each workflow in it; its `profile()`, the one aggregate per scan the
  detectors share), `build_window`, `CriticSettings`, the `Detector` protocol every
  detector follows.
- `contrast`: the BubbleUp contrast of a step's failing against its ok attempts.
- `retry`, `timeout`, `cache`, `node_version`, `drift`: the detectors; `scan`: all of
  them over one window.
"""

from evolution.critic.cache import CacheDetector
from evolution.critic.contrast import contrast
from evolution.critic.drift import DriftDetector
from evolution.critic.node_version import NodeVersionDetector
from evolution.critic.retry import RetryDetector
from evolution.critic.scan import DETECTORS, Scan, covered, scan
from evolution.critic.timeout import TimeoutDetector
from evolution.critic.window import (
    Ask,
    AttemptGroup,
    CriticSettings,
    Detector,
    Profile,
    StepContext,
    StepProfile,
    Window,
    WorkflowContext,
    build_window,
    cacheable,
    context_of,
    load_context,
    readable_duration,
)

__all__ = [
    "DETECTORS",
    "Ask",
    "AttemptGroup",
    "CacheDetector",
    "CriticSettings",
    "Detector",
    "DriftDetector",
    "Profile",
    "NodeVersionDetector",
    "RetryDetector",
    "Scan",
    "StepContext",
    "StepProfile",
    "TimeoutDetector",
    "Window",
    "WorkflowContext",
    "build_window",
    "cacheable",
    "context_of",
    "contrast",
    "covered",
    "load_context",
    "readable_duration",
    "scan",
]
