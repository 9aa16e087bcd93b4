"""MLflow tracking: one parent run per raynas experiment, one child run per search trial.

- :mod:`~raynas.tracking.store`: where the store is (default URIs, ``raynas server``), whether it
  answers, the client and the driver's run-level calls.
- :mod:`~raynas.tracking.journal`: the offline journal of operations queued while the server was
  unreachable, and :func:`sync` to deliver them.
- :mod:`~raynas.tracking.trial_log`: :class:`TrialTracker`, NAS-aware logging of one trial.
- :mod:`~raynas.tracking.compare`: methods side by side over an experiment's finished runs.
"""

from raynas.tracking.compare import compare, compare_to_files
from raynas.tracking.journal import finish_parent, sync
from raynas.tracking.store import (TrackingError, check_reachable, clean_key, default_artifact_root,
                                   default_tracking_uri, ensure_experiment, find_trial_run, finish_run,
                                   log_metric_on, provenance_tags, server_command, start_parent_run)
from raynas.tracking.trial_log import TrialTracker, epoch_metrics

__all__ = ["TrackingError", "TrialTracker", "check_reachable", "clean_key", "compare", "compare_to_files",
           "default_artifact_root", "default_tracking_uri", "ensure_experiment", "epoch_metrics",
           "find_trial_run", "finish_parent", "finish_run", "log_metric_on", "provenance_tags", "server_command",
           "start_parent_run", "sync"]
