"""Datasets, transforms and search loaders shared by every DARTS variant."""
from .cutout import Cutout
from .datasets import get_dataset
from .digits import DigitsDataset
from .loaders import RandomBatches, search_loaders
from .names import check_dataset
from .split import TransformedSubset, search_split
from .stats import DATASET_STATS, DATASETS, IMAGE_SIZE, IN_CHANNELS, NUM_CLASSES
from .text import (
    EMBEDDED_REFERENCE,
    EMBEDDED_VOCAB_SIZE,
    EOS,
    UNK,
    Corpus,
    Dictionary,
    batchify,
    embedded_corpus,
    embedded_source_sha256,
    get_batch,
    load_corpus,
    write_embedded_corpus,
)
from .transforms import AUTO_AUGMENT_DATASETS, eval_transform, train_transform

__all__ = [
    "AUTO_AUGMENT_DATASETS",
    "DATASETS",
    "DATASET_STATS",
    "IMAGE_SIZE",
    "IN_CHANNELS",
    "NUM_CLASSES",
    "Cutout",
    "DigitsDataset",
    "RandomBatches",
    "TransformedSubset",
    "check_dataset",
    "eval_transform",
    "get_dataset",
    "search_loaders",
    "search_split",
    "train_transform",
    # word-level language-model data (RNN search)
    "EMBEDDED_REFERENCE",
    "EMBEDDED_VOCAB_SIZE",
    "EOS",
    "UNK",
    "Corpus",
    "Dictionary",
    "batchify",
    "embedded_corpus",
    "embedded_source_sha256",
    "get_batch",
    "load_corpus",
    "write_embedded_corpus",
]
