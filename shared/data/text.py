"""Word-level language-model data for the DARTS RNN search (Penn Treebank format).

What: the corpus, batching and BPTT-slicing helpers of DARTS ``rnn/data.py`` / ``rnn/utils.py``
(identical in SmoothDARTS ``sota/rnn/``), re-implemented for modern PyTorch, plus a small
*embedded* corpus built from text that ships with Python.

Why: the RNN search and its final training read PTB / WikiText-2 exactly the way the original
code did, so perplexities stay comparable: every line of ``train.txt``, ``valid.txt`` and
``test.txt`` is ``line.split() + ['<eos>']``, words get ids in order of first appearance (train,
then valid, then test, all into one dictionary), a split is one long id tensor that ``batchify``
cuts into ``bsz`` contiguous columns and ``get_batch`` slices into BPTT windows.  The embedded
corpus lets demos and tests run with no download (PTB's licence does not let us ship it).

A corpus folder holds the three files, already tokenised (PTB has ``<unk>`` already)::

    data/penn/{train,valid,test}.txt          # Penn Treebank (10k vocabulary)
    data/wikitext-2/{train,valid,test}.txt    # WikiText-2 (wiki.*.tokens, renamed)
"""
from __future__ import annotations

import array
import collections
import functools
import hashlib
import os
import re
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import torch

from shared.errors import UserError

EOS = "<eos>"
UNK = "<unk>"
SPLITS: tuple[str, ...] = ("train", "valid", "test")

PTB_URL = "http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz"
PTB_GETDATA_URL = "https://github.com/salesforce/awd-lstm-lm (getdata.sh)"
WIKITEXT2_URL = "https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-2-v1.zip"

# Folder (under data_root) of each known corpus name; 'embedded' is handled separately.
CORPUS_FOLDERS: dict[str, str] = {
    "ptb": "penn",
    "penn": "penn",
    "wikitext-2": "wikitext-2",
    "wt2": "wikitext-2",
}
EMBEDDED_NAME = "embedded"


class Dictionary:
    """Word <-> id map; ids are given in order of first appearance."""

    def __init__(self) -> None:
        self.word2idx: dict[str, int] = {}
        self.idx2word: list[str] = []

    def add_word(self, word: str) -> int:
        """Return the id of ``word``, giving it the next free id if it is new."""
        idx = self.word2idx.get(word)
        if idx is None:
            idx = len(self.idx2word)
            self.idx2word.append(word)
            self.word2idx[word] = idx
        return idx

    def __len__(self) -> int:
        return len(self.idx2word)

    def __contains__(self, word: object) -> bool:
        return word in self.word2idx


class Corpus:
    """The three splits of a corpus folder as 1-D ``torch.long`` id tensors.

    ``Corpus(path)`` reads ``path/train.txt``, ``valid.txt``, ``test.txt`` in that order (the
    order fixes the ids). ``Corpus()`` gives an empty corpus to fill with :meth:`tokenize` or
    :meth:`tokenize_lines` (used by the embedded corpus, which has no files).
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.dictionary = Dictionary()
        self.path: Path | None = None
        empty = torch.empty(0, dtype=torch.long)
        self.train, self.valid, self.test = empty, empty, empty
        if path is not None:
            self.path = Path(path)
            self.train = self.tokenize(self.path / "train.txt")
            self.valid = self.tokenize(self.path / "valid.txt")
            self.test = self.tokenize(self.path / "test.txt")

    def tokenize(self, path: str | os.PathLike[str]) -> torch.Tensor:
        """Ids of every word of the file, ``<eos>`` after each line, adding new words."""
        try:
            with open(path, "r", encoding="utf-8") as f:
                return self.tokenize_lines(f)
        except UnicodeDecodeError as exc:
            raise UserError(f"{path} is not UTF-8 text ({exc}); corpus files must be UTF-8"
                            ) from exc

    def tokenize_lines(self, lines: Iterable[str]) -> torch.Tensor:
        """Ids of ``line.split() + ['<eos>']`` for each line, in order, adding new words."""
        word2idx = self.dictionary.word2idx
        add_word = self.dictionary.add_word
        # A typed array (8 bytes an id) rather than a list of Python ints: one linear pass and
        # a fraction of the memory on big files; converted to a tensor with one copy at the end.
        ids = array.array("q")
        for line in lines:
            for word in line.split():
                idx = word2idx.get(word)
                ids.append(add_word(word) if idx is None else idx)
            idx = word2idx.get(EOS)
            ids.append(add_word(EOS) if idx is None else idx)
        if len(ids) == 0:
            return torch.empty(0, dtype=torch.long)
        if ids.itemsize != 8:  # 'q' is 8 bytes on every platform PyTorch supports; be safe anyway
            return torch.tensor(ids.tolist(), dtype=torch.long)
        return torch.frombuffer(ids, dtype=torch.long).clone()  # clone: own the memory

    @classmethod
    def from_lines(cls, train: Iterable[str], valid: Iterable[str],
                   test: Iterable[str]) -> "Corpus":
        """A corpus from in-memory lines (same rules as files: train, then valid, then test)."""
        corpus = cls()
        corpus.train = corpus.tokenize_lines(train)
        corpus.valid = corpus.tokenize_lines(valid)
        corpus.test = corpus.tokenize_lines(test)
        return corpus


def batchify(data: torch.Tensor, bsz: int,
             device: torch.device | str | None = None) -> torch.Tensor:
    """Cut a 1-D id tensor into ``bsz`` columns: shape ``(len(data) // bsz, bsz)``.

    The tail that does not fill a row is dropped; column ``b`` is the contiguous stretch
    ``data[b * nbatch:(b + 1) * nbatch]``, so the hidden state can be carried down a column.
    """
    if bsz < 1:
        raise UserError(f"batch size must be at least 1, got {bsz}")
    nbatch = data.size(0) // bsz
    if nbatch == 0:
        raise UserError(f"batch size {bsz} is larger than the split ({data.size(0)} tokens); "
                        "use a smaller batch size or a bigger corpus")
    data = data.narrow(0, 0, nbatch * bsz)
    data = data.view(bsz, -1).t().contiguous()
    return data if device is None else data.to(device)


def get_batch(source: torch.Tensor, i: int, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """BPTT window at row ``i``: ``(data, target)`` with target the next word, flattened.

    ``data`` is ``source[i:i+n]`` (``n x bsz``) and ``target`` is ``source[i+1:i+1+n].view(-1)``
    with ``n = min(seq_len, len(source) - 1 - i)``, so the last window may be shorter.
    """
    seq_len = min(seq_len, len(source) - 1 - i)
    if seq_len < 1 or i < 0:
        raise IndexError(f"no BPTT window at row {i} of a source with {len(source)} rows")
    data = source[i:i + seq_len]
    target = source[i + 1:i + 1 + seq_len].reshape(-1)
    return data, target


# ----------------------------------------------------------------------------- loading by name


def _where_to_get() -> str:
    return (f"Get Penn Treebank from {PTB_GETDATA_URL} or as data/ptb.{{train,valid,test}}.txt "
            f"in {PTB_URL}, WikiText-2 as wiki.{{train,valid,test}}.tokens in {WIKITEXT2_URL} "
            "(rename the files to train.txt, valid.txt, test.txt), or use the embedded corpus "
            f"(name '{EMBEDDED_NAME}'), which needs no download")


def load_corpus(name_or_path: str | os.PathLike[str],
                data_root: str | os.PathLike[str] = "data") -> Corpus:
    """Load a corpus by name or folder.

    ``'ptb'``/``'penn'`` -> ``data_root/penn``; ``'wikitext-2'``/``'wt2'`` ->
    ``data_root/wikitext-2``; ``'embedded'`` -> :func:`embedded_corpus`; anything else is a
    folder holding ``train.txt``, ``valid.txt`` and ``test.txt``. Raises one UserError naming
    the folder, the missing files and where to get the data.
    """
    key = str(name_or_path).lower()
    if key == EMBEDDED_NAME:
        return embedded_corpus()
    folder = Path(data_root) / CORPUS_FOLDERS[key] if key in CORPUS_FOLDERS else Path(name_or_path)
    if not folder.is_dir():
        raise UserError(f"corpus folder {folder} not found (it must hold "
                        f"{', '.join(s + '.txt' for s in SPLITS)}); known names: "
                        f"{', '.join([*CORPUS_FOLDERS, EMBEDDED_NAME])}. {_where_to_get()}")
    missing = [f"{s}.txt" for s in SPLITS if not (folder / f"{s}.txt").is_file()]
    if missing:
        raise UserError(f"corpus folder {folder} lacks {', '.join(missing)}. {_where_to_get()}")
    corpus = Corpus(folder)
    for split in SPLITS:
        # A split of only <eos> (empty or blank file) would give zero batches and a division
        # by zero far away in training; say so here instead.
        ids = getattr(corpus, split)
        if not any(corpus.dictionary.idx2word[i] != EOS for i in ids.unique().tolist()):
            raise UserError(f"{folder / (split + '.txt')} has no words (empty or blank file); "
                            f"each split needs text, one sentence per line")
    return corpus


# ----------------------------------------------------------------------------- embedded corpus
#
# Source: the standard library's ``pydoc_data.topics.topics`` -- the text of Python's own
# language-reference topics that ``help('if')`` shows (~465k characters in CPython 3.11).
# It is real English prose, ships with every full Python install and is freely licensed (PSF),
# so the RNN search can be demonstrated and tested offline.

EMBEDDED_VOCAB_SIZE = 2000
"""Vocabulary of the embedded corpus, ``<unk>`` and ``<eos>`` included (PTB's is 10,000).

The text has ~54.7k words (2,920 distinct); keeping 2,000 leaves ~1.8% of running words as
``<unk>`` (PTB: ~5%), and gives a softmax small enough for a CPU demo.
"""
EMBEDDED_SPLIT = (0.8, 0.1, 0.1)
"""Fractions of sentences for train/valid/test, taken as contiguous blocks in topic order
(like PTB's sections 0-20 / 21-22 / 23-24), so each split is running text."""

EMBEDDED_REFERENCE: dict[str, object] = {
    # Sizes of the embedded corpus built from CPython 3.11.7's pydoc_data (its text's sha256
    # below); other Python versions have slightly different documentation, hence sizes.
    "python": "3.11.7",
    "sha256": "6c7d68cee92383c2d38e91c095bc7f45b93d936d39b8d4c5fe1b718baf09dc63",
    "sentences": {"train": 2572, "valid": 321, "test": 323},
    "tokens": {"train": 46185, "valid": 6522, "test": 5203},  # words + <eos>: len(corpus.<split>)
    "vocab": EMBEDDED_VOCAB_SIZE,
}

# Numbers become 'N' as in PTB; "3.11" and "1,000" are one number.
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
# A token: a number, or a word of letters/digits possibly joined by apostrophes or hyphens
# ("built-in", "don't"); everything else (punctuation, quotes, underscores, operators) splits.
_TOKEN = re.compile(r"\d+(?:[.,]\d+)*(?![a-z0-9_])|[a-z0-9]+(?:['-][a-z0-9]+)*")
# PTB splits clitics off: "it's" -> "it 's", "don't" -> "do n't".
_CLITIC = re.compile(r"^(.+?)(n't|'s|'re|'ve|'ll|'d|'m)$")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_PARAGRAPH = re.compile(r"\n[ \t]*\n")
_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"'})


def _source_topics() -> dict[str, str]:
    try:
        from pydoc_data.topics import topics
    except ImportError as exc:
        raise UserError(
            "the embedded corpus is built from the standard library's pydoc_data.topics, which "
            "this Python lacks (minimal builds such as Debian's python3-minimal leave it out); "
            "install the full standard library (e.g. apt install libpython3-stdlib) or load "
            f"Penn Treebank ({PTB_GETDATA_URL}) or WikiText-2 ({WIKITEXT2_URL}) instead") from exc
    return topics


def _is_prose(paragraph: str) -> bool:
    # Rendered docs mix prose with code, grammar rules, headings and signatures. Prose
    # paragraphs end like sentences; code (">>>"), grammar ("::=") and the rest are dropped.
    if ">>>" in paragraph or "::=" in paragraph:
        return False
    end = paragraph.rstrip().rstrip("\"')]")
    return end[-1:] in (".", ":", ";", "?", "!")


def _words(sentence: str) -> list[str]:
    words: list[str] = []
    for tok in _TOKEN.findall(sentence):
        if _NUMBER.fullmatch(tok):
            words.append("N")
        elif "'" in tok:
            clitic = _CLITIC.match(tok)
            if clitic:
                words.extend(part for part in clitic.groups())
            else:  # a quoted literal like u'abc': the quotes are punctuation
                words.extend(part for part in tok.split("'") if part)
        else:
            words.append(tok)
    return words


def _sentences(topics: dict[str, str]) -> Iterator[list[str]]:
    for key in sorted(topics):  # sorted: same order whatever the dict's order
        text = topics[key].replace("\r\n", "\n").translate(_QUOTES).lower()
        for paragraph in _PARAGRAPH.split(text):
            if not paragraph.strip() or not _is_prose(paragraph):
                continue
            for sentence in _SENTENCE_END.split(" ".join(paragraph.split())):
                words = _words(sentence)
                if len(words) >= 2:  # one-word "sentences" are headings/labels, not text
                    yield words


@functools.lru_cache(maxsize=1)
def _embedded_lines() -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """Train/valid/test lines of the embedded corpus (words joined by spaces, no <eos>)."""
    sentences = list(_sentences(_source_topics()))
    counts = collections.Counter(w for s in sentences for w in s)
    # Most frequent first, ties alphabetical, so the cut is deterministic; 2 slots are kept
    # for <unk> and <eos>.
    ranked = sorted(counts, key=lambda w: (-counts[w], w))
    keep = set(ranked[:EMBEDDED_VOCAB_SIZE - 2])
    lines = [" ".join(w if w in keep else UNK for w in s) for s in sentences]
    n_train = int(len(lines) * EMBEDDED_SPLIT[0])
    n_valid = int(len(lines) * EMBEDDED_SPLIT[1])
    return (tuple(lines[:n_train]), tuple(lines[n_train:n_train + n_valid]),
            tuple(lines[n_train + n_valid:]))


def embedded_source_sha256() -> str:
    """sha256 of the source text (topics in sorted order), to tell which sizes apply."""
    topics = _source_topics()
    digest = hashlib.sha256()
    for key in sorted(topics):
        digest.update(key.encode("utf-8") + b"\0" + topics[key].encode("utf-8") + b"\0")
    return digest.hexdigest()


def embedded_corpus() -> Corpus:
    """The embedded corpus: Python's documentation topics as PTB-style text.

    Built deterministically from ``pydoc_data.topics`` (standard library): topics in sorted
    order; paragraphs that do not read as prose (code, grammar, headings) dropped; lower-cased;
    split into sentences at ``. ! ?``; tokens are words of letters/digits/apostrophes/hyphens
    with PTB's conventions (numbers -> ``N``, no punctuation, clitics split: ``do n't``); the
    1,998 most frequent words kept, the rest ``<unk>``; sentences split 80/10/10 in order.

    Sizes with CPython 3.11.7's pydoc_data (``EMBEDDED_REFERENCE``; other Python versions
    document slightly different text, so their sizes differ a little):

    =====  =========  ======================  ==========
    split  sentences  tokens (incl. <eos>)    <unk> rate
    =====  =========  ======================  ==========
    train      2,572                  46,185       1.7%
    valid        321                   6,522       2.4%
    test         323                   5,203       1.8%
    =====  =========  ======================  ==========

    Vocabulary: 2,000 words including ``<unk>`` and ``<eos>`` (PTB: 10,000; 929k/73k/82k).

    The text is built once per process (cached); each call returns a fresh Corpus, so
    callers may move or modify its tensors freely.
    """
    train, valid, test = _embedded_lines()
    return Corpus.from_lines(train, valid, test)


def write_embedded_corpus(folder: str | os.PathLike[str]) -> Path:
    """Write the embedded corpus as ``folder/{train,valid,test}.txt`` in PTB's format.

    PTB's layout: one sentence a line, words separated by single spaces, with a leading and
    trailing space as in ``ptb.train.txt``. ``Corpus(folder)`` reads back the same ids.
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    for split, lines in zip(SPLITS, _embedded_lines()):
        with open(out / f"{split}.txt", "w", encoding="utf-8", newline="\n") as f:
            f.writelines(f" {line} \n" for line in lines)
    return out


__all__: Sequence[str] = [
    "EOS",
    "UNK",
    "Corpus",
    "Dictionary",
    "EMBEDDED_REFERENCE",
    "EMBEDDED_VOCAB_SIZE",
    "batchify",
    "embedded_corpus",
    "embedded_source_sha256",
    "get_batch",
    "load_corpus",
    "write_embedded_corpus",
]
