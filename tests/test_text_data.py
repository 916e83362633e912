"""Tests for shared.data.text: PTB-format corpora, batchify/get_batch, load_corpus errors and
the embedded corpus built from the standard library's pydoc_data. CPU only, no network."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from shared.data import (
    EMBEDDED_REFERENCE,
    EMBEDDED_VOCAB_SIZE,
    Corpus,
    Dictionary,
    batchify,
    embedded_corpus,
    embedded_source_sha256,
    get_batch,
    load_corpus,
    write_embedded_corpus,
)
from shared.data import text as text_mod
from shared.errors import UserError

# PTB's own layout: leading and trailing space, <unk> already in the text.
TRAIN = [" the cat sat <unk> \n", " the dog ran \n"]
VALID = [" a cat ran fast \n"]
TEST = [" the <unk> bird \n", "\n"]  # a blank line still gives one <eos>, as in the original


def write_corpus(folder: Path, train=TRAIN, valid=VALID, test=TEST) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, lines in (("train", train), ("valid", valid), ("test", test)):
        (folder / f"{name}.txt").write_text("".join(lines), encoding="utf-8")
    return folder


# ---------------------------------------------------------------- Corpus / Dictionary


def test_corpus_vocabulary_order_ids_and_lengths(tmp_path):
    corpus = Corpus(write_corpus(tmp_path / "c"))
    expected_vocab = ["the", "cat", "sat", "<unk>", "<eos>", "dog", "ran",  # train
                      "a", "fast",  # valid adds its new words after train's
                      "bird"]  # test last
    assert corpus.dictionary.idx2word == expected_vocab
    assert corpus.dictionary.word2idx == {w: i for i, w in enumerate(expected_vocab)}
    assert len(corpus.dictionary) == 10

    def ids(words: str) -> list[int]:
        return [expected_vocab.index(w) for w in words.split()]

    assert corpus.train.tolist() == ids("the cat sat <unk> <eos> the dog ran <eos>")
    assert corpus.valid.tolist() == ids("a cat ran fast <eos>")
    assert corpus.test.tolist() == ids("the <unk> bird <eos> <eos>")
    for split in (corpus.train, corpus.valid, corpus.test):
        assert split.dtype == torch.long and split.dim() == 1
    assert (len(corpus.train), len(corpus.valid), len(corpus.test)) == (9, 5, 5)


def test_dictionary_add_word_returns_existing_id():
    d = Dictionary()
    assert [d.add_word(w) for w in ["x", "y", "x", "z", "y"]] == [0, 1, 0, 2, 1]
    assert d.idx2word == ["x", "y", "z"] and "y" in d and "w" not in d and len(d) == 3


def test_tokenize_reads_utf8_and_is_linear_on_a_big_file(tmp_path):
    # 200k lines (~1.4M tokens): a quadratic loader would take minutes, this one well under 10 s.
    line = " naïve café <unk> and the word 1 \n"
    folder = write_corpus(tmp_path / "big", train=[line] * 200_000)
    corpus = Corpus(folder)
    assert len(corpus.train) == 200_000 * 8
    assert "naïve" in corpus.dictionary and "café" in corpus.dictionary


# ---------------------------------------------------------------- batchify / get_batch


def test_batchify_shape_drops_tail_and_columns_are_contiguous():
    data = torch.arange(23)
    out = batchify(data, 4)
    assert out.shape == (5, 4) and out.is_contiguous()
    for b in range(4):  # column b is the contiguous stretch data[b*5:(b+1)*5]
        assert out[:, b].tolist() == list(range(b * 5, (b + 1) * 5))
    assert 20 not in out and 22 not in out  # remainder 20..22 dropped
    assert batchify(data, 4, device="cpu").device.type == "cpu"


def test_batchify_rejects_batch_larger_than_split():
    with pytest.raises(UserError, match="batch size 10 is larger"):
        batchify(torch.arange(5), 10)


def test_get_batch_targets_are_next_words_and_last_batch_is_short():
    source = batchify(torch.arange(40), 2)  # (20, 2)
    data, target = get_batch(source, 0, 7)
    assert data.shape == (7, 2) and target.shape == (14,)
    assert torch.equal(target, source[1:8].reshape(-1))
    assert torch.equal(target.view(7, 2), data + 1)  # each target is the following word
    # Walk the split like the training loop: windows at 0, 7, 14; the last has 19 - 14 = 5 rows.
    rows = [i for i in range(0, source.size(0) - 1, 7)]
    assert rows == [0, 7, 14]
    data, target = get_batch(source, 14, 7)
    assert data.shape == (5, 2) and target.shape == (10,)
    assert torch.equal(target, source[15:20].reshape(-1))
    covered = sum(get_batch(source, i, 7)[0].size(0) for i in rows)
    assert covered == source.size(0) - 1  # every word but the last is an input exactly once
    with pytest.raises(IndexError):
        get_batch(source, 19, 7)


# ---------------------------------------------------------------- load_corpus


@pytest.mark.parametrize("name,folder", [("ptb", "penn"), ("penn", "penn"), ("PTB", "penn"),
                                         ("wikitext-2", "wikitext-2"), ("wt2", "wikitext-2")])
def test_load_corpus_by_name(tmp_path, name, folder):
    write_corpus(tmp_path / folder)
    corpus = load_corpus(name, str(tmp_path))
    assert corpus.train.tolist() == Corpus(tmp_path / folder).train.tolist()


def test_load_corpus_explicit_folder(tmp_path):
    folder = write_corpus(tmp_path / "my corpus")
    assert len(load_corpus(str(folder), str(tmp_path / "unused")).dictionary) == 10


def test_missing_folder_is_one_user_error_with_folder_and_urls(tmp_path):
    with pytest.raises(UserError) as info:
        load_corpus("ptb", str(tmp_path))
    msg = str(info.value)
    assert str(tmp_path / "penn") in msg
    assert "train.txt" in msg and "valid.txt" in msg and "test.txt" in msg
    assert "awd-lstm-lm" in msg and "simple-examples.tgz" in msg and "wikitext-2-v1.zip" in msg
    assert "'embedded'" in msg

    with pytest.raises(UserError, match="nowhere"):
        load_corpus(str(tmp_path / "nowhere"), str(tmp_path))


def test_missing_files_are_named(tmp_path):
    folder = write_corpus(tmp_path / "wikitext-2")
    (folder / "valid.txt").unlink()
    (folder / "test.txt").unlink()
    with pytest.raises(UserError) as info:
        load_corpus("wt2", str(tmp_path))
    msg = str(info.value)
    assert str(folder) in msg and "lacks valid.txt, test.txt." in msg
    assert "wikitext-2-v1.zip" in msg and "'embedded'" in msg


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_train_file_is_a_user_error(tmp_path, content):
    folder = write_corpus(tmp_path / "penn", train=[content])
    with pytest.raises(UserError, match=r"train\.txt has no words"):
        load_corpus("penn", str(tmp_path))
    assert folder.is_dir()


def test_non_utf8_file_is_a_user_error(tmp_path):
    folder = write_corpus(tmp_path / "penn")
    (folder / "train.txt").write_bytes(b"caf\xe9 au lait\n")
    with pytest.raises(UserError, match="UTF-8"):
        load_corpus("ptb", str(tmp_path))


# ---------------------------------------------------------------- embedded corpus


def test_embedded_corpus_sizes_vocab_and_determinism():
    corpus = embedded_corpus()
    again = load_corpus("embedded", "unused")
    assert again is not corpus  # a fresh Corpus each call, so callers may modify it
    for split in ("train", "valid", "test"):
        assert torch.equal(getattr(corpus, split), getattr(again, split))
        assert getattr(corpus, split).dtype == torch.long and len(getattr(corpus, split)) > 0
    assert corpus.dictionary.idx2word == again.dictionary.idx2word
    vocab = corpus.dictionary
    assert len(vocab) == EMBEDDED_VOCAB_SIZE == EMBEDDED_REFERENCE["vocab"]
    assert "<unk>" in vocab and "<eos>" in vocab and "N" in vocab
    assert all(w == w.lower() or w == "N" for w in vocab.idx2word)  # lower-cased, numbers -> N
    sizes = {s: len(getattr(corpus, s)) for s in ("train", "valid", "test")}
    if embedded_source_sha256() == EMBEDDED_REFERENCE["sha256"]:
        assert sizes == EMBEDDED_REFERENCE["tokens"]  # the sizes the docstring documents
    else:  # another Python's documentation: same recipe, slightly different text
        total = sum(sizes.values())
        assert 30_000 < total < 120_000
        assert 0.7 < sizes["train"] / total < 0.9
    # Each line ends with <eos>; the split fractions are by sentence (~80/10/10).
    eos = vocab.word2idx["<eos>"]
    lines = {s: int((getattr(corpus, s) == eos).sum()) for s in sizes}
    assert all(getattr(corpus, s)[-1].item() == eos for s in sizes)
    assert 0.78 < lines["train"] / sum(lines.values()) < 0.82
    if embedded_source_sha256() == EMBEDDED_REFERENCE["sha256"]:
        assert lines == EMBEDDED_REFERENCE["sentences"]


def test_write_embedded_corpus_round_trips(tmp_path):
    folder = write_embedded_corpus(tmp_path / "embedded")
    first = (folder / "train.txt").read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith(" ") and first.endswith(" ") and "<eos>" not in first  # PTB layout
    from_files = load_corpus(str(folder), "unused")
    in_memory = embedded_corpus()
    assert from_files.dictionary.idx2word == in_memory.dictionary.idx2word
    for split in ("train", "valid", "test"):
        assert torch.equal(getattr(from_files, split), getattr(in_memory, split))


def test_embedded_tokenisation_is_ptb_like():
    words = text_mod._words("it's 3.11, don't use __init__ or u'abc' (see 1,000 built-in items).")
    assert words == ["it", "'s", "N", "do", "n't", "use", "init", "or", "u", "abc", "see", "N",
                     "built-in", "items"]


def test_missing_pydoc_data_is_a_user_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "pydoc_data.topics", None)  # makes the import fail
    text_mod._embedded_lines.cache_clear()
    try:
        with pytest.raises(UserError, match="pydoc_data"):
            embedded_corpus()
    finally:
        text_mod._embedded_lines.cache_clear()
