"""The Numenta Anomaly Benchmark (NAB), scored the way NAB scores it.

- ``corpus``: finds and loads the data files, their anomaly windows and the profiles.
- ``scoring``: NAB's windowed, sigmoid-weighted score, the corpus-wide threshold sweep
  per profile, and the normalisation of the null detector to 0 and perfect to 100.
- ``detectors``: what gets scored: krakenfeed's ``LikelihoodScorer`` and the
  reference detectors (null, labels, windowed Gaussian) that prove the scorer.
- ``run``: the ``nab`` benchmark of ``python -m benchmarks``.
"""
