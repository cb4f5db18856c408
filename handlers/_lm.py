"""A tiny interpolated bigram language model (train and evaluate share it).

  p(w | prev) = lam * count(prev, w) / count(prev) + (1 - lam) * (count(w) + 1) / (N + V)

Training counts the bigrams of a training split, then fits lam by EM on a held-out split,
one EM step per epoch (damped by the learning rate); the held-out cross-entropy is the
loss reported per epoch. Words outside the top `max_vocab` map to <unk>, which keeps a share of the unigram mass.
"""

import math
from collections import Counter, defaultdict

UNK = "<unk>"
BOS = "<s>"
EOS = "</s>"
_STRIP = ".,;:!?()[]{}\"'`"


def tokenize(text):
    out = []
    for raw in text.split():
        w = raw.strip(_STRIP).lower()
        if w:
            out.append(w)
    return out


class BigramModel:
    def __init__(self, vocab, unigram, bigram, lam=0.5):
        self.vocab = set(vocab)
        self.unigram = unigram          # word -> count (vocab words, UNK, EOS)
        self.bigram = bigram            # prev -> {word: count}
        self.context = {p: sum(n.values()) for p, n in bigram.items()}
        self.total = sum(unigram.values())
        self.lam = lam

    @classmethod
    def from_sequences(cls, seqs, max_vocab=5000):
        freq = Counter(w for s in seqs for w in s)
        vocab = [w for w, _ in freq.most_common(max_vocab)]
        model = cls(vocab, {}, {})
        unigram = Counter()
        bigram = defaultdict(Counter)
        for s in seqs:
            prev = BOS
            for w in model.map(s) + [EOS]:
                unigram[w] += 1
                bigram[prev][w] += 1
                prev = w
        # Reserve probability for unseen words in proportion to the number of word types
        # (Witten-Bell style), so text from another domain gets a finite, honest loss.
        unigram[UNK] += max(1, len(vocab))
        return cls(vocab, dict(unigram), {p: dict(c) for p, c in bigram.items()})

    def map(self, seq):
        return [w if w in self.vocab else UNK for w in seq]

    def _parts(self, prev, w):
        size = len(self.vocab) + 2          # + UNK + EOS
        pu = (self.unigram.get(w, 0) + 1) / (self.total + size)
        ctx = self.context.get(prev, 0)
        pb = self.bigram.get(prev, {}).get(w, 0) / ctx if ctx else 0.0
        return pb, pu

    def logprob(self, prev, w):
        pb, pu = self._parts(prev, w)
        if self.context.get(prev, 0) == 0:
            return math.log(pu)  # unseen context: back off to the unigram entirely
        return math.log(self.lam * pb + (1 - self.lam) * pu)

    def sequence_logprob(self, seq, prev=BOS, end=True):
        total, n = 0.0, 0
        words = self.map(seq) + ([EOS] if end else [])
        for w in words:
            total += self.logprob(prev, w)
            n += 1
            prev = w
        return total, n

    def cross_entropy(self, seqs):
        total, n = 0.0, 0
        for s in seqs:
            lp, k = self.sequence_logprob(s)
            total += lp
            n += k
        return -total / max(1, n), n

    def em_step(self, seqs, learning_rate=1.0):
        """One EM update of lam on seqs; returns the new lam."""
        resp, n = 0.0, 0
        for s in seqs:
            prev = BOS
            for w in self.map(s) + [EOS]:
                if self.context.get(prev, 0):
                    pb, pu = self._parts(prev, w)
                    mix = self.lam * pb + (1 - self.lam) * pu
                    resp += self.lam * pb / mix
                    n += 1
                prev = w
        target = resp / max(1, n)
        lam = self.lam + learning_rate * (target - self.lam)
        self.lam = min(0.99, max(0.01, lam))
        return self.lam

    def to_json(self):
        return {"type": "interpolated-bigram", "lambda": self.lam,
                "vocab": sorted(self.vocab), "unigram": self.unigram, "bigram": self.bigram}

    @classmethod
    def from_json(cls, doc):
        if not isinstance(doc, dict) or doc.get("type") != "interpolated-bigram":
            raise ValueError("not an interpolated-bigram model")
        return cls(doc["vocab"], {k: int(v) for k, v in doc["unigram"].items()},
                   {p: {w: int(c) for w, c in n.items()} for p, n in doc["bigram"].items()},
                   float(doc["lambda"]))
