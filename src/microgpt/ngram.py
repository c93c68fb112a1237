"""`microgpt ngram`: an interpolated Kneser-Ney character n-gram, the count-based reference the transformer is measured
against. It reads the same splits and reports the same loss as every other model here (docs/protocol.md), so its
figures sit beside a trained run's.

The model, in the notation of Chen & Goodman, "An Empirical Study of Smoothing Techniques for Language Modeling"
(Harvard TR-10-98, 1998), eq. 17 and section 3 ("modified Kneser-Ney"), interpolated at every order:

    P_k(w | h) = (max(a(h w) - D_k(a(h w)), 0) + gamma_k(h) * P_{k-1}(w | h[1:])) / sum_v a(h v)
    gamma_k(h) = D_k1 * N1(h .) + D_k2 * N2(h .) + D_k3+ * N3+(h .)          (the mass the discounts took away)
    P_0(w)     = 1 / vocab_size                                               (uniform over every token, BOS included)

where a() is the raw count at the top order and the continuation count N1+(. h w) (distinct tokens seen left of h w) at
the lower orders; an unseen history h gives P_k = P_{k-1}. Discounts per order from that order's count-of-counts n_r:
Y = n1 / (n1 + 2 n2), D1 = 1 - 2Y n2/n1, D2 = 2 - 3Y n3/n2, D3+ = 3 - 4Y n4/n3 (Chen & Goodman eq. 26); `discount=D`
replaces them by one absolute discount D for every order and count.

Choices, for docs/protocol.md's `BOS c1 .. cn BOS`:
- The history of a prediction is truncated at the name's start: the first character is predicted from (BOS,), the
  second from (BOS, c1), and so on; names are independent, so no history crosses into another name and none is padded.
- An n-gram that starts with the name's BOS has nothing to its left, so it keeps its raw count at every order (the
  adjusted counts of KenLM for <s>: Heafield et al., ACL 2013); a continuation count would be 0 for it.
- BOS is in the predicted vocabulary as "the name ends here"; every distribution is a proper one over all vocab_size
  tokens, since each discount D_r is at most r.
"""

from __future__ import annotations

import argparse
import math
import re
import time
from collections import Counter
from typing import Iterator, Sequence

from .config import NGRAM_ORDER, UsageError
from .data import load_dataset
from .protocol import SPLIT_SEED, tier_of
FALLBACK_DISCOUNT = 0.5  # only for a level with no count-1 n-grams, where count-of-counts estimate nothing (tiny data)

Discounts = tuple[float, float, float]  # D1, D2, D3+: what is subtracted from counts of 1, 2, and 3 or more


def modified_discounts(count_of_counts: Counter) -> Discounts:
    """Chen & Goodman's D1, D2, D3+ from n_r = how many n-grams have count r; each lands in (0, r]."""
    n1, n2, n3, n4 = (count_of_counts.get(r, 0) for r in (1, 2, 3, 4))
    if n1 == 0:
        return (FALLBACK_DISCOUNT,) * 3
    y = n1 / (n1 + 2 * n2)  # Ney's absolute discount, in (0, 1]: the fallback when a formula below is undefined
    d1 = 1 - 2 * y * n2 / n1
    d2 = 2 - 3 * y * n3 / n2 if n2 else y
    d3 = 3 - 4 * y * n4 / n3 if n3 else y
    return tuple(d if d > 0 else y for d in (d1, d2, d3))  # type: ignore[return-value]


class KneserNey:
    """Interpolated Kneser-Ney n-gram over token ids 0..vocab_size-1, BOS framing each name (module docstring)."""

    def __init__(self, order: int, vocab_size: int, bos: int, discount: float | None = None):
        check_order(order)
        if discount is not None:
            check_discount(discount)
        if not 0 <= bos < vocab_size:
            raise UsageError(f"bos id must be in [0, vocab_size={vocab_size}), got {bos}")
        self.order = order            # tokens per n-gram: the prediction sees the previous order-1 tokens
        self.vocab_size = vocab_size  # tokens the distribution is over, BOS included
        self.bos = bos
        self.discount = discount      # None: modified KN discounts per order; else one absolute discount
        self.discounts: list[Discounts] = []  # per level 1..levels, set by fit
        # per level k (index k-1): history (k-1 tokens) -> (adjusted counts of the next token, their sum, gamma)
        self._tables: list[dict[tuple[int, ...], tuple[dict[int, int], int, float]]] = []

    @property
    def levels(self) -> int:
        """Orders actually stored: n-grams longer than the longest training name + 2 BOS never occur."""
        return len(self._tables)

    def fit(self, seqs: Sequence[Sequence[int]]) -> "KneserNey":
        """Count every n-gram of every name (ids without BOS) and build the smoothed tables; returns self."""
        if not seqs:
            raise UsageError("the n-gram needs at least one training name")
        bos = self.bos
        levels = min(self.order, max(len(s) for s in seqs) + 2)
        raw = [Counter() for _ in range(levels)]  # level k-1: k-gram -> occurrences as (history, predicted token)
        for s in seqs:
            tokens = (bos, *s, bos)
            for j in range(1, len(tokens)):  # j: the predicted position; the opening BOS is never predicted
                for k in range(1, min(levels, j + 1) + 1):
                    raw[k - 1][tokens[j - k + 1:j + 1]] += 1

        tables, discounts = [], []
        for k in range(1, levels + 1):
            if k == levels:
                adjusted = raw[k - 1]
            else:
                # continuation count: distinct left neighbours = distinct (k+1)-grams ending in this k-gram
                continuation = Counter(g[1:] for g in raw[k])
                adjusted = {g: (c if k > 1 and g[0] == bos else continuation[g]) for g, c in raw[k - 1].items()}
            if self.discount is None:
                d = modified_discounts(Counter(adjusted.values()))
            else:
                d = (self.discount,) * 3
            discounts.append(d)
            table: dict[tuple[int, ...], tuple[dict[int, int], int, float]] = {}
            for g, a in adjusted.items():
                table.setdefault(g[:-1], ({}, 0, 0.0))[0][g[-1]] = a
            for h, (counts, _, _) in table.items():
                gamma = sum(d[min(a, 3) - 1] for a in counts.values())
                table[h] = (counts, sum(counts.values()), gamma)
            tables.append(table)
        self._tables, self.discounts = tables, discounts
        return self

    def _levels_for(self, context: Sequence[int]) -> Iterator[tuple[dict[int, int], int, float, Discounts]]:
        """(counts, total, gamma, discounts) of each level whose history, the end of context, was seen; lowest first."""
        if not self._tables:
            raise RuntimeError("fit() the model first")
        history = tuple(context[len(context) - min(len(context), self.levels - 1):])
        for k, table in enumerate(self._tables, start=1):
            if k - 1 > len(history):  # the name's start is nearer than k-1 tokens: the history cannot grow further
                return
            entry = table.get(history[len(history) - k + 1:])
            if entry is None:  # unseen history: no longer history that ends with it was seen either
                return
            yield (*entry, self.discounts[k - 1])

    def probs(self, context: Sequence[int]) -> list[float]:
        """P(token | context) for every token id; context is the name so far, starting with its BOS."""
        p = [1.0 / self.vocab_size] * self.vocab_size
        for counts, total, gamma, d in self._levels_for(context):
            p = [gamma * q / total for q in p]
            for w, a in counts.items():
                p[w] += (a - d[min(a, 3) - 1]) / total
        return p

    def prob(self, context: Sequence[int], token: int) -> float:
        """P(token | context); context is the name so far, starting with its BOS."""
        p = 1.0 / self.vocab_size
        for counts, total, gamma, d in self._levels_for(context):
            a = counts.get(token, 0)
            p = ((a - d[min(a, 3) - 1] if a else 0.0) + gamma * p) / total
        return p

    def loss(self, seqs: Sequence[Sequence[int]]) -> float:
        """docs/protocol.md's loss: mean NLL (nats) over every prediction of every name (ids without BOS)."""
        total, count = 0.0, 0
        for s in seqs:
            tokens = (self.bos, *s, self.bos)
            for j in range(1, len(tokens)):
                total -= math.log(self.prob(tokens[:j], tokens[j]))
            count += len(tokens) - 1
        return total / count


def check_order(order: int) -> None:
    if not isinstance(order, int) or order < 1:
        raise UsageError(f"--order must be an integer >= 1 (1 = unigram), got {order!r}")


def check_discount(discount: float) -> None:
    if not 0 < discount < 1:
        raise UsageError(f"--discount must be in (0, 1) (at 0 unseen tokens get probability 0), got {discount!r}")


def parse_orders(text: str) -> list[int]:
    """'1-8' -> [1, ..., 8]; '6' -> [6]; '2,4,6' -> [2, 4, 6]."""
    if re.fullmatch(r"\d+-\d+", text):
        lo, hi = (int(x) for x in text.split("-"))
        orders = list(range(lo, hi + 1))
        if not orders:
            raise UsageError(f"--orders range {text!r} is empty: write LOW-HIGH with LOW <= HIGH, e.g. 1-8")
    elif re.fullmatch(r"\d+(,\d+)*", text):
        orders = [int(x) for x in text.split(",")]
    else:
        raise UsageError(f"--orders must be a range LOW-HIGH or a list A,B,C of orders, e.g. 1-8; got {text!r}")
    if min(orders) < 1:
        raise UsageError(f"--orders must all be >= 1 (1 = unigram), got {text!r}")
    return orders


def run(args: argparse.Namespace) -> int:
    """Execute `microgpt ngram`; UsageError on bad input."""
    if args.order is not None and args.orders is not None:
        raise UsageError("give --order N or --orders LOW-HIGH, not both")
    if args.orders is not None:
        orders = parse_orders(args.orders)
    else:
        orders = [NGRAM_ORDER if args.order is None else args.order]
        check_order(orders[0])
    if args.discount is not None:
        check_discount(args.discount)
    data = load_dataset(args.data, SPLIT_SEED if args.split_seed is None else args.split_seed, args.max_chars)
    tok = data.tokenizer
    print(f"data   {data.path}: {len(data.words):,} examples, vocab {tok.vocab_size} | "
          f"train {len(data.train):,} / val {len(data.val):,} / test {len(data.test):,} (split seed {data.split_seed})")
    smoothing = (f"absolute discount {args.discount:g} at every order" if args.discount is not None
                 else "modified discounts D1/D2/D3+ per order from count-of-counts")
    splits = [data.encoded(name) for name in ("train", "val", "test")]

    if args.orders is None:
        t0 = time.perf_counter()
        model = KneserNey(orders[0], tok.vocab_size, tok.bos, args.discount).fit(splits[0])
        train, val, test = (model.loss(seqs) for seqs in splits)
        seconds = time.perf_counter() - t0
        print(f"ngram  order {orders[0]}, interpolated Kneser-Ney, {smoothing} | {seconds:.1f} s")
        if args.discount is None:
            print("       D " + " | ".join(f"{k}: {_fmt_discounts(d)}" for k, d in enumerate(model.discounts, 1)))
        print(f"loss   train {train:.4f} | val {val:.4f} | test {test:.4f} | {_fmt_tier(test)}")
        return 0

    print(f"ngram  interpolated Kneser-Ney, {smoothing}"
          f" | train is in-sample, over all {len(data.train):,} train names")
    print("order   train     val    test  tier   D1/D2/D3+ (top order)")
    for order in orders:
        model = KneserNey(order, tok.vocab_size, tok.bos, args.discount).fit(splits[0])
        train, val, test = (model.loss(seqs) for seqs in splits)
        tier = tier_of(test)
        print(f"{order:5d}  {train:.4f}  {val:.4f}  {test:.4f}  {tier if tier else '-':>4}   "
              f"{_fmt_discounts(model.discounts[-1])}")
    return 0


def _fmt_discounts(d: Discounts) -> str:
    return "/".join(f"{x:.2f}" for x in d)


def _fmt_tier(test_loss: float) -> str:
    tier = tier_of(test_loss)
    return f"tier {tier}" if tier else "no tier (test >= 2.2)"
