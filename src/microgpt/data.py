"""Names in, token batches out: where the dataset comes from, its vocabulary, docs/protocol.md's splits, packed batches.

A name of n characters is the sequence BOS c1 .. cn BOS and gives n+1 predictions. Batches pack several names into
one row with a block-diagonal causal mask and positions restarting at 0 for each name, so no step computes on padding
beyond the tail of a row, and the model sees each name exactly as if it were alone.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import random
import urllib.request
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np
import torch

from .config import DATA_ENV, MAX_CHARS, UsageError
from .protocol import SPLIT_SEED
from .files import write_atomic

NAMES_URL = "https://raw.githubusercontent.com/karpathy/makemore/988aa59/names.txt"
NAMES_SHA256 = "0a30b5557f192f32ab962680889aac5f6fda0f4cecf40a6d0b5694f58ea8cc4d"
MIN_EXAMPLES = 10  # the smallest file whose splits are non-empty: 1 test, 1 val, 8 train


def cache_path() -> Path:
    """Where the downloaded names.txt is kept: $XDG_CACHE_HOME/microgpt or ~/.cache/microgpt."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "microgpt" / "names.txt"


def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def resolve_data_path(path: str | os.PathLike | None = None, download: bool = True) -> Path:
    """The dataset file: path if given, else $MICROGPT_DATA, else the user cache, else a verified download into it."""
    if path:
        return Path(path)
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV])
    cached = cache_path()
    if cached.is_file():
        if sha256_of(cached) != NAMES_SHA256:
            raise UsageError(f"cached dataset {cached} does not match sha256 {NAMES_SHA256}: delete it to re-download")
        return cached
    if not download:
        raise UsageError(f"no dataset: --data not given, ${DATA_ENV} not set, {cached} missing")
    try:
        _download(NAMES_URL, cached, NAMES_SHA256)
    except (OSError, ValueError) as err:
        raise UsageError(
            f"no dataset: --data not given, ${DATA_ENV} not set, {cached} missing, and downloading {NAMES_URL} failed "
            f"({err}); pass --data PATH or set {DATA_ENV}=PATH"
        ) from None
    return cached


def _download(url: str, dest: Path, sha256: str) -> None:
    """Fetch url into dest atomically, only if its sha256 matches."""
    with urllib.request.urlopen(url, timeout=30) as response:
        payload = response.read()
    digest = hashlib.sha256(payload).hexdigest()
    if digest != sha256:
        raise ValueError(f"sha256 {digest} != expected {sha256}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(dest, payload)


def load_words(path: str | os.PathLike, max_chars: int = MAX_CHARS) -> list[str]:
    """The file's lines, stripped, empty ones dropped, order kept; UsageError on anything that is not such a file, or
    on a line longer than max_chars."""
    if max_chars < 1:
        raise UsageError(f"--max-chars must be >= 1, got {max_chars}")
    path = Path(path)
    if not path.exists():
        raise UsageError(f"data file not found: {path} (pass --data PATH to a one-example-per-line text file)")
    if path.is_dir():
        raise UsageError(f"data path is a directory, not a file: {path} (pass --data PATH to a text file)")
    raw = path.read_bytes()
    if b"\x00" in raw:
        line = raw[: raw.index(b"\x00")].count(b"\n") + 1
        raise UsageError(f"data file {path} contains a NUL byte on line {line}: it is binary, not one example per line")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise UsageError(f"data file {path} is not UTF-8 (byte 0x{raw[err.start]:02x} on line {line}): re-encode it as UTF-8") from None
    words = [line.strip() for line in text.splitlines()]
    for lineno, word in enumerate(words, start=1):
        if len(word) > max_chars:
            raise UsageError(f"data file {path} line {lineno} has {len(word):,} characters, more than --max-chars "
                             f"{max_chars}: fix the line, or pass --max-chars {len(word)} if examples that long are "
                             "meant")
    words = [w for w in words if w]
    if not words:
        raise UsageError(f"data file {path} is empty or whitespace-only: it needs one example per line")
    return words


@dataclass(frozen=True)
class Tokenizer:
    """Characters of the data, sorted, are ids 0..len-1; BOS, the boundary token, is the last id."""

    chars: tuple[str, ...]

    @classmethod
    def from_words(cls, words: list[str]) -> "Tokenizer":
        return cls(tuple(sorted(set("".join(words)))))

    @property
    def bos(self) -> int:
        return len(self.chars)

    @property
    def vocab_size(self) -> int:
        return len(self.chars) + 1

    def encode(self, word: str) -> list[int]:
        index = self._index
        return [index[ch] for ch in word]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.chars[i] for i in ids if i != self.bos)

    @property
    def _index(self) -> dict[str, int]:
        cached = self.__dict__.get("_index_cache")
        if cached is None:
            cached = {ch: i for i, ch in enumerate(self.chars)}
            object.__setattr__(self, "_index_cache", cached)
        return cached


def split_words(words: list[str], seed: int = SPLIT_SEED) -> tuple[list[str], list[str], list[str]]:
    """(train, val, test) exactly as docs/protocol.md: makemore's randperm, test = its last n_test, val the n_test before."""
    if len(words) < MIN_EXAMPLES:
        raise UsageError(
            f"the splits need at least {MIN_EXAMPLES} examples (1 test, 1 val, 8 train); the data has {len(words)}"
        )
    generator = torch.Generator().manual_seed(seed)  # same stream as torch.manual_seed(seed) on the default generator
    perm = torch.randperm(len(words), generator=generator).tolist()
    n_test = min(1000, int(0.1 * len(words)))
    test = [words[i] for i in perm[-n_test:]]
    rest = perm[:-n_test]
    val = [words[i] for i in rest[-n_test:]]
    train = [words[i] for i in rest[:-n_test]]
    return train, val, test


@dataclass
class Dataset:
    """One loaded dataset: its source, vocabulary and the three splits (docs/protocol.md)."""

    path: str
    sha256: str
    words: list[str]
    tokenizer: Tokenizer
    train: list[str]
    val: list[str]
    test: list[str]
    split_seed: int
    max_chars: int = MAX_CHARS  # the longest example load_words accepted (sampling a run reloads its data with it)

    @functools.cached_property
    def max_len(self) -> int:
        """Characters in the longest example; the context must hold max_len + 1 inputs."""
        return max(len(w) for w in self.words)

    def check_block_size(self, block_size: int) -> None:
        """UsageError naming the first example whose n+1 inputs do not fit into block_size positions."""
        for lineno, word in enumerate(self.words, start=1):
            if len(word) + 1 > block_size:
                raise UsageError(
                    f"example {lineno} ({word[:40]!r}) has {len(word)} characters and needs a context of "
                    f"{len(word) + 1}, but --block-size is {block_size}: raise --block-size to at least {self.max_len + 1}"
                )

    def split(self, name: str) -> list[str]:
        return {"train": self.train, "val": self.val, "test": self.test}[name]

    def encoded(self, name: str) -> list[list[int]]:
        """A split's names as token ids, computed once per Dataset (sweep workers reuse it across runs)."""
        cache = self.__dict__.setdefault("_encoded", {})
        if name not in cache:
            cache[name] = [self.tokenizer.encode(w) for w in self.split(name)]
        return cache[name]

    def eval_batches(self, name: str) -> list["Batch"]:
        """A split packed for evaluation, computed once per Dataset."""
        cache = self.__dict__.setdefault("_eval_batches", {})
        if name not in cache:
            cache[name] = eval_batches(self.split(name), self.tokenizer)
        return cache[name]

    def with_split(self, split_seed: int) -> "Dataset":
        """The same examples split with another seed (this dataset if it already is); kept for reuse across runs."""
        if split_seed == self.split_seed:
            return self
        cache = self.__dict__.setdefault("_other_splits", {})
        if split_seed not in cache:
            train, val, test = split_words(self.words, split_seed)
            cache[split_seed] = dataclasses.replace(self, train=train, val=val, test=test, split_seed=split_seed)
        return cache[split_seed]

    def microgpt_docs(self, rng: random.Random) -> list[str]:
        """microgpt.py's training order: every example, shuffled by the given Python RNG."""
        docs = list(self.words)
        rng.shuffle(docs)
        return docs


def load_dataset(path: str | os.PathLike | None = None, split_seed: int = SPLIT_SEED, max_chars: int = MAX_CHARS) -> Dataset:
    """Resolve, read, tokenize and split the dataset."""
    resolved = resolve_data_path(path)
    words = load_words(resolved, max_chars)
    train, val, test = split_words(words, split_seed)
    return Dataset(
        path=str(resolved),
        sha256=sha256_of(resolved),
        words=words,
        tokenizer=Tokenizer.from_words(words),
        train=train,
        val=val,
        test=test,
        split_seed=split_seed,
        max_chars=max_chars,
    )


@dataclass
class Batch:
    """Packed names. Rows of width W; target -1 marks padding, which the loss skips."""

    idx: torch.Tensor      # (R, W) input token ids
    targets: torch.Tensor  # (R, W) next-token ids, -1 on padding
    pos: torch.Tensor      # (R, W) position of each token inside its own name
    mask: torch.Tensor | None  # (R, 1, W, W) True where attention is allowed; None = plain causal (one name a row)
    n_tokens: int          # real predictions in the batch

    def to(self, device: torch.device | str) -> "Batch":
        if str(device) == "cpu":
            return self
        mask = None if self.mask is None else self.mask.to(device, non_blocking=True)
        return Batch(self.idx.to(device, non_blocking=True), self.targets.to(device, non_blocking=True),
                     self.pos.to(device, non_blocking=True), mask, self.n_tokens)


def pack(seqs: list[list[int]], bos: int, width: int | None = None) -> Batch:
    """Pack encoded names (ids without BOS) into rows of up to `width` tokens, best fit by decreasing length.

    Rows are never narrower than the longest name nor wider than the batch's total, so one name is one unpadded row.
    A width of the dataset's longest name + 1 measured fastest (benchmarks/train_speed.py; BENCHMARKS.md).
    """
    return pack_examples([frame(s, bos) for s in seqs], bos, width)


def frame(seq: list[int], bos: int) -> tuple[list[int], list[int]]:
    """A name's (inputs, targets) as docs/protocol.md frames it: BOS c1..cn -> c1..cn BOS."""
    return [bos, *seq], [*seq, bos]


def pack_examples(examples: list[tuple[list[int], list[int]]], bos: int, width: int | None = None) -> Batch:
    """pack() for explicit (inputs, targets) pairs of equal length, inputs starting with BOS (augmented names)."""
    lengths = [len(inputs) for inputs, _ in examples]
    width = max(max(lengths), min(width or 0, sum(lengths)))
    rows: list[list[int]] = []  # indices into examples
    room: list[int] = []        # free slots per row
    open_rows: list[list[int]] = [[] for _ in range(width + 1)]  # rows by free slots, for best fit in O(width)
    for i in sorted(range(len(examples)), key=lambda i: -lengths[i]):
        need = lengths[i]
        free = next((f for f in range(need, width + 1) if open_rows[f]), None)
        if free is None:
            r = len(rows)
            rows.append([i])
            room.append(width - need)
        else:
            r = open_rows[free].pop()
            rows[r].append(i)
            room[r] -= need
        if room[r] > 0:
            open_rows[room[r]].append(r)
    # Every token placed by one scatter per array (numpy: a few microseconds an operation, where building the rows as
    # nested lists and converting them cost ~0.5 ms a batch, once per member per step in a stack).
    n_rows, cells = len(rows), len(rows) * width
    placed = [i for members in rows for i in members]
    starts, segment = [], []
    for r, members in enumerate(rows):
        t = r * width
        for k, i in enumerate(members):
            starts.append(t)
            segment.append(k)
            t += lengths[i]
    n = np.fromiter((lengths[i] for i in placed), dtype=np.int64, count=len(placed))
    total = int(n.sum())
    within = np.arange(total) - np.repeat(np.cumsum(n) - n, n)  # each token's position inside its name
    where = np.repeat(np.asarray(starts, dtype=np.int64), n) + within
    idx = np.full(cells, bos, dtype=np.int64)
    idx[where] = np.fromiter(chain.from_iterable(examples[i][0] for i in placed), dtype=np.int64, count=total)
    tgt = np.full(cells, -1, dtype=np.int64)
    tgt[where] = np.fromiter(chain.from_iterable(examples[i][1] for i in placed), dtype=np.int64, count=total)
    pos = np.zeros(cells, dtype=np.int64)
    pos[where] = within
    one_name_per_row = all(len(m) == 1 for m in rows) and all(f == 0 for f in room)
    mask = None
    if not one_name_per_row:
        seg = np.full(cells, -1, dtype=np.int64)
        seg[where] = np.repeat(np.asarray(segment, dtype=np.int64), n)
        seg_t = torch.from_numpy(seg).view(n_rows, width)
        same = seg_t[:, :, None] == seg_t[:, None, :]
        causal = torch.ones(width, width, dtype=torch.bool).tril()
        mask = (same & causal)[:, None]  # padding (segment -1) attends to padding only, so no row is all-False
    shape = (n_rows, width)
    return Batch(torch.from_numpy(idx).view(shape), torch.from_numpy(tgt).view(shape), torch.from_numpy(pos).view(shape),
                 mask, sum(lengths))


def pad(seqs: list[list[int]], bos: int) -> Batch:
    """One name per row, padded to the longest: the usual layout, kept to measure what packing saves."""
    width = max(len(s) for s in seqs) + 1
    idx = [[bos, *s] + [bos] * (width - len(s) - 1) for s in seqs]
    tgt = [[*s, bos] + [-1] * (width - len(s) - 1) for s in seqs]
    # causal attention suffices: padding sits after every real token of its row, so no real token attends to it
    return Batch(torch.tensor(idx), torch.tensor(tgt), torch.arange(width).expand(len(seqs), width), None,
                 sum(len(s) + 1 for s in seqs))


def eval_batches(words: list[str], tokenizer: Tokenizer, names_per_batch: int = 4096) -> list[Batch]:
    """A whole split as packed batches, for token-weighted evaluation."""
    seqs = [tokenizer.encode(w) for w in words]
    width = max(len(s) for s in seqs) + 1
    return [pack(seqs[i:i + names_per_batch], tokenizer.bos, width) for i in range(0, len(seqs), names_per_batch)]


def rng_state(rng: random.Random) -> list:
    """A Python RNG's state as lists, which torch's weights_only loader accepts (a resume checkpoint holds it)."""
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def set_rng_state(rng: random.Random, state: list) -> None:
    version, internal, gauss = state
    rng.setstate((version, tuple(internal), gauss))


class BatchSampler:
    """Training batches of batch_size names: epochs of a seeded permutation, so each name is seen once per epoch."""

    def __init__(self, seqs: list[list[int]], bos: int, batch_size: int, seed: int):
        self.seqs = seqs
        self.width = max(len(s) for s in self.seqs) + 1
        self.bos = bos
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.order: list[int] = []

    def next(self) -> Batch:
        picked: list[list[int]] = []
        while len(picked) < self.batch_size:
            if not self.order:
                self.order = torch.randperm(len(self.seqs), generator=self.generator).tolist()
            picked.append(self.seqs[self.order.pop()])
        return pack(picked, self.bos, self.width)

    def state_dict(self) -> dict:
        """Where the stream is: the generator and the rest of the current epoch (a resumed run continues it)."""
        return {"generator": self.generator.get_state(), "order": list(self.order)}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.order = list(state["order"])


class SequenceSampler:
    """microgpt.py's order: docs[step % len(docs)], batch_size names at a time."""

    def __init__(self, docs: list[str], tokenizer: Tokenizer, batch_size: int):
        self.seqs = [tokenizer.encode(w) for w in docs]
        self.width = max(len(s) for s in self.seqs) + 1
        self.bos = tokenizer.bos
        self.batch_size = batch_size
        self.cursor = 0

    def next(self) -> Batch:
        picked = []
        for _ in range(self.batch_size):
            picked.append(self.seqs[self.cursor % len(self.seqs)])
            self.cursor += 1
        return pack(picked, self.bos, self.width)

    def state_dict(self) -> dict:
        return {"cursor": self.cursor}

    def load_state_dict(self, state: dict) -> None:
        self.cursor = state["cursor"]
