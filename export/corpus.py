"""A deterministic, varied corpus: short and long, punctuation, non-ASCII, Chinese, emoji.

Reduced precisions are checked on it at export (and int8 is calibrated on it); the tests use it too.
"""

from __future__ import annotations

import random

_BASE = [
    "Hello world!",
    "First do it, then do it right, then do it better.",
    "BERT maps variable-length sentences to fixed-length vectors.",
    "What's the weather like in São Paulo today?",
    "Le café est délicieux, n'est-ce pas ?",
    "Привет, как дела?",
    "Ich möchte ein Stück Käsekuchen, bitte.",
    "我们今天去公园散步吧。",
    "机器学习正在改变世界",
    "東京タワーは赤いです",
    "مرحبا بالعالم",
    "I love pizza 🍕🍕 and tacos 🌮!",
    "🚀🚀🚀",
    "Emoji in the middle 😀 of a sentence 👍🏽 works.",
    "C'mon... really?!?! (yes) [no] {maybe} <tag> @user #hashtag $100 50% a&b",
    "x",
    "a.b.c.d.e.f",
    "   leading and trailing spaces   ",
    "tabs\tand\tnewlines\nin text",
    "Numbers: 3.14159, 2,718, 1e-9, -42, 0x1F.",
    "ALL CAPS SENTENCE SHOUTING LOUDLY",
    "naïve coöperation façade résumé",
    "The quick brown fox jumps over the lazy dog.",
    "email me at someone@example.com or visit https://example.org/path?q=1",
    "ﬁ ligature and ½ fraction and ™ sign",
]
_WORDS = (
    "the service encodes many sentences quickly while the clients wait patiently for vectors from "
    "a shared server running on modest hardware with dynamic batching enabled for throughput 数据 模型 "
    "café naïve 🙂 ! ? , ; : -"
).split()


def sentences(n: int = 240, seed: int = 0) -> list[str]:
    """`n` sentences: the hand-written ones, then random mixes of 1 to 400 words (some past 256 tokens)."""
    rng = random.Random(seed)
    out = list(_BASE)
    lengths = [1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 150, 300, 400]
    while len(out) < n:
        length = lengths[len(out) % len(lengths)]
        out.append(" ".join(rng.choice(_WORDS) for _ in range(length)))
    return out[:n]
