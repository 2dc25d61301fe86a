"""Re-identification evaluation: CMC, mAP, mINP, VehicleID protocol, re-ranking, ROC.

One implementation of the ranking metrics, ``evaluate``: exact (a stable ordering of
the gallery by distance, ties broken by gallery index), vectorised over chunks of
queries, with bounded memory. The other functions build on it or sit beside it, one
module each (fast-reid's ``evaluation/`` layout):

* ``rank``: ``evaluate`` -> ``RankResult`` (CMC, mAP, mINP).
* ``vehicleid``: ``evaluate_vehicleid``, one random gallery image per identity, repeated.
* ``rerank``: ``re_ranking`` / ``re_ranking_features``, k-reciprocal re-ranking (Zhong et
  al., CVPR 2017) with the numbers of torchreid's reference code, from distance matrices
  or, in memory linear in Q + G, from features.
* ``roc``: ``verification_roc``, pair verification ROC over query x gallery pairs.
* ``distance``: ``pairwise_distance``, cosine or Euclidean query x gallery distances with
  torch matmul.

Every public name is importable from ``esnet.metrics``. A module-level constant is read
from the module that uses it (``rank._SPARSE_WORK_RATIO``, ``rerank.MAX_RERANK_ITEMS``,
``rerank.CHUNK_BYTES``, ...): a test patches it there, not on the package. Only numpy and torch (scikit-learn for the ROC,
imported when called).
"""
from esnet.metrics._inputs import CHUNK_BYTES
from esnet.metrics.distance import METRICS, pairwise_distance
from esnet.metrics.rank import RankResult, evaluate
from esnet.metrics.rerank import MAX_RERANK_ITEMS, re_ranking, re_ranking_features
from esnet.metrics.roc import MAX_ROC_PAIRS, VerificationResult, verification_roc
from esnet.metrics.vehicleid import VehicleIDResult, evaluate_vehicleid

__all__ = [
    "CHUNK_BYTES",
    "MAX_RERANK_ITEMS",
    "MAX_ROC_PAIRS",
    "METRICS",
    "RankResult",
    "VehicleIDResult",
    "VerificationResult",
    "evaluate",
    "evaluate_vehicleid",
    "pairwise_distance",
    "re_ranking",
    "re_ranking_features",
    "verification_roc",
]
