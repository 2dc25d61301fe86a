"""Datasets, demo data, transforms and samplers."""
from esnet.data.check import CheckReport, Problem, SplitStats, check_dataset
from esnet.data.datasets import DATASETS, load_dataset
from esnet.data.types import SPLITS, DatasetError, ReidData, Sample

__all__ = [
    "DATASETS",
    "SPLITS",
    "CheckReport",
    "DatasetError",
    "Problem",
    "ReidData",
    "Sample",
    "SplitStats",
    "check_dataset",
    "load_dataset",
]
