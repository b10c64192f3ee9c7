"""Data sets of the model zoo, all built from scikit-learn's bundled 8x8 digits (no download).

- ``digits_split()``: the fixed 1,437 / 360 train/test split (stratified, seed 0), pixels scaled to [0, 1].
- ``images(x, size)``: the 8x8 images as ``[N, 1, size, size]`` float32, bilinearly upsampled.
- ``sequences(x, permutation)``: sequential digits, one pixel per time step, ``[N, 64, 1]``.
- ``DigitVQA``: digit visual question answering with a tiny word-level tokenizer.

Nothing here needs torch.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SPLIT_SEED = 0
N_TEST = 360


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(x_train [1437, 64], y_train, x_test [360, 64], y_test)``; pixels in [0, 1], labels int64."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=N_TEST, random_state=SPLIT_SEED, stratify=y)
    return x_tr, y_tr, x_te, y_te


def _bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] matrix of bilinear interpolation weights, half-pixel centres (align_corners=False)."""
    w = np.zeros((n_out, n_in), np.float64)
    scale = n_in / n_out
    for o in range(n_out):
        src = min(max((o + 0.5) * scale - 0.5, 0.0), n_in - 1.0)
        i0 = int(np.floor(src))
        i1 = min(i0 + 1, n_in - 1)
        frac = src - i0
        w[o, i0] += 1.0 - frac
        w[o, i1] += frac
    return w


def images(x: np.ndarray, size: int = 8) -> np.ndarray:
    """Flat 8x8 digits ``[N, 64]`` -> images ``[N, 1, size, size]`` float32 (bilinear upsampling)."""
    img = x.reshape(-1, 8, 8).astype(np.float64)
    if size != 8:
        m = _bilinear_matrix(8, size)
        img = np.einsum("oi,nij,pj->nop", m, img, m)
    return img[:, None].astype(np.float32)


def sequences(x: np.ndarray, permutation: np.ndarray | None = None) -> np.ndarray:
    """Flat digits ``[N, 64]`` -> pixel sequences ``[N, 64, 1]`` (raster order, or ``x[:, permutation]``)."""
    seq = x if permutation is None else x[:, permutation]
    return np.ascontiguousarray(seq[:, :, None], dtype=np.float32)


# --------------------------------------------------------------------------------------------- digit VQA

VOCAB = ("<pad>", "<bos>", "<eos>", "?", "what", "digit", "is", "this", "it", "even", "odd", "plus", "one",
         "times", "two", "larger", "than", "five", "smaller", "three", "yes", "no",
         "0", "1", "2", "3", "4", "5", "6", "7", "8", "9")
PAD, BOS, EOS = 0, 1, 2

# (question words, answer function: digit -> answer words); all questions are QUESTION_LEN tokens long
# after <bos> and left padding, all answers at most ANSWER_LEN tokens including <eos>.
QUESTIONS = (
    ("what digit is this ?", lambda d: str(d)),
    ("is it even ?", lambda d: "yes" if d % 2 == 0 else "no"),
    ("is it odd ?", lambda d: "yes" if d % 2 == 1 else "no"),
    ("what is it plus one ?", lambda d: " ".join(str(d + 1))),
    ("what is it times two ?", lambda d: " ".join(str(2 * d))),
    ("is it larger than five ?", lambda d: "yes" if d > 5 else "no"),
    ("is it smaller than three ?", lambda d: "yes" if d < 3 else "no"),
)
QUESTION_LEN = 7   # <bos> + up to 6 words, left-padded with <pad>
ANSWER_LEN = 3     # up to two answer tokens + <eos>


@dataclass(frozen=True)
class Tokenizer:
    """Word-level tokenizer over ``VOCAB`` (whitespace split)."""

    vocab: tuple[str, ...] = VOCAB

    def encode(self, text: str) -> list[int]:
        return [self.vocab.index(w) for w in text.split()]

    def decode(self, ids) -> str:
        words = []
        for i in ids:
            if int(i) == EOS:
                break
            if int(i) not in (PAD, BOS):
                words.append(self.vocab[int(i)])
        return " ".join(words)

    def __len__(self) -> int:
        return len(self.vocab)


TOKENIZER = Tokenizer()


def encode_question(q: int) -> np.ndarray:
    """Question index -> ``[QUESTION_LEN]`` int64: left padding, <bos>, the question words."""
    ids = [BOS] + TOKENIZER.encode(QUESTIONS[q][0])
    return np.array([PAD] * (QUESTION_LEN - len(ids)) + ids, np.int64)


def encode_answer(q: int, digit: int) -> np.ndarray:
    """``[ANSWER_LEN]`` int64: the answer tokens, <eos>, then <pad>."""
    ids = TOKENIZER.encode(QUESTIONS[q][1](int(digit))) + [EOS]
    return np.array(ids + [PAD] * (ANSWER_LEN - len(ids)), np.int64)


def vqa_samples(y: np.ndarray, questions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per sample (digit label, question index) -> ``(question tokens [N, QUESTION_LEN], answers [N, ANSWER_LEN])``."""
    q_tok = np.stack([encode_question(int(q)) for q in questions])
    a_tok = np.stack([encode_answer(int(q), int(d)) for q, d in zip(questions, y)])
    return q_tok, a_tok


def vqa_eval_questions(n: int, seed: int = 1) -> np.ndarray:
    """The fixed question index assigned to each of ``n`` evaluation images (balanced, shuffled)."""
    q = np.arange(n) % len(QUESTIONS)
    return np.random.default_rng(seed).permutation(q)
