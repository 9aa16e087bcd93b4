"""NAR, the Neural Architecture Ranker (Guo et al., ACM MM 2022), on NAS-Bench-101 and NAS-Bench-201.

``encoding`` (cell feature tensors with per-op FLOPs/params), ``data`` (benchmark tables as training data),
``model`` (the ranker), ``train`` (``NARConfig``, ``NARRun``, metrics), ``search`` (tier-guided sampling),
``trainable`` (``NARTrainable`` for Ray Tune, tracked in MLflow), ``experiment`` (experiment files with an
Optuna ``tune:`` block), ``cli`` (``raynas rank``).
"""
