"""Deterministic synthetic stand-in for the TL;DR summarization task (paper §5.1, appendix H.1).

A post states a few *salient facts* ("my sister borrowed my car last week .") mixed
with *distractors* ("the weather was nice ."). A good summary lists every salient fact
tersely ("sister borrowed car , boss lost keys"), invents nothing, copies no distractor,
carries no filler and ends with EOS.

Three parties see the task differently, as in the paper:
- the hidden **gold quality** :func:`gold_quality` (coverage, no invented facts, brevity,
  fluency) is known only to the embedded judge, the stand-in for GPT-4;
- a **noisy Bradley–Terry annotator** :func:`annotate` labels preference pairs from it,
  and the reward model is learned from those labels (so it is good but not perfect);
- **human reference summaries** :func:`human_summary` have systematic, realistic flaws
  (they stop after the first fact and pad with filler more often than not), so the SFT
  policy that imitates them starts well below a 50% winrate and RL has headroom.

Everything is a pure function of a seed; the gold quality reads the post *text*, so a
judge can apply it to any prompt it is shown.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass

SUBREDDITS = ("relationships", "legaladvice", "personalfinance", "tifu", "advice")
SUBJECTS = (
    "sister",
    "brother",
    "boss",
    "friend",
    "roommate",
    "mom",
    "dad",
    "neighbor",
    "girlfriend",
    "boyfriend",
    "coworker",
    "landlord",
)
VERBS = ("borrowed", "broke", "lost", "sold", "stole", "hid", "returned", "damaged", "took", "ruined")
OBJECTS = ("car", "phone", "laptop", "bike", "wallet", "keys", "dog", "couch", "guitar", "camera", "watch", "jacket")
WHEN = ("yesterday", "last week", "on monday", "this morning", "last night", "again")
DISTRACTOR_TEMPLATES = (
    ("i am", ("twenty", "thirty", "nineteen", "forty")),
    ("the weather was", ("nice", "awful", "cold", "hot")),
    ("i like", ("pizza", "hiking", "music", "coffee")),
    ("we live in", ("ohio", "texas", "london", "town")),
    ("my job is", ("boring", "fine", "busy", "new")),
)
FILLERS = ("so basically", "long story short", "ok so", "basically")
FEELINGS = ("angry", "sad", "confused", "stressed")
SEPARATOR = " , "
HUMAN_STOP = 0.65
"""Probability that a human writer stops after each listed fact (:func:`human_summary`)."""

_FACT_SENTENCE = re.compile(rf"\bmy ({'|'.join(SUBJECTS)}) ({'|'.join(VERBS)}) my ({'|'.join(OBJECTS)})\b")
_FILLER_WORDS = frozenset(w for f in FILLERS for w in f.split())
# A tuple, not a set: iteration order must not depend on the interpreter's hash seed.
_DISTRACTOR_PHRASES = tuple(f"{head.removeprefix('the ')} {v}" for head, values in DISTRACTOR_TEMPLATES for v in values)


Fact = tuple[str, str, str]


@dataclass(frozen=True)
class Post:
    """One synthetic forum post, with its salient facts kept for data generation."""

    subreddit: str
    title: str
    body: str
    facts: tuple[Fact, ...]


def format_prompt(subreddit: str, title: str, post: str) -> str:
    """The TL;DR prompt format of the reference implementation (implementation notes)."""
    return f"SUBREDDIT: r/{subreddit}\n\nTITLE: {title}\n\nPOST: {post}\n\nTL;DR:"


def fact_phrase(fact: Fact) -> str:
    return " ".join(fact)


def make_post(rng: random.Random) -> Post:
    """Sample a post with 2–3 salient facts (distinct subjects and objects) and 1–3 distractors."""
    n_facts = rng.choice((2, 2, 3, 3, 3))
    subjects = rng.sample(SUBJECTS, n_facts)
    objects = rng.sample(OBJECTS, n_facts)
    facts = tuple((s, rng.choice(VERBS), o) for s, o in zip(subjects, objects))
    sentences = [f"my {s} {v} my {o} {rng.choice(WHEN)} ." for s, v, o in facts]
    for head, values in rng.sample(DISTRACTOR_TEMPLATES, rng.randint(1, 3)):
        sentences.insert(rng.randint(0, len(sentences)), f"{head} {rng.choice(values)} .")
    sentences.append(f"now i feel {rng.choice(FEELINGS)} . what should i do ?")
    title = f"my {facts[0][0]} and my {facts[0][2]}"
    return Post(rng.choice(SUBREDDITS), title, " ".join(sentences), facts)


def _join(phrases: list[str], filler: str | None) -> str:
    text = SEPARATOR.join(phrases)
    return f" {filler} {text}" if filler else f" {text}"


def human_summary(post: Post, rng: random.Random) -> str:
    """A human reference summary with the systematic flaws of crowd-written TL;DRs.

    Writers list the facts in the order the post gives them and often stop early: after
    each fact they stop with p=``HUMAN_STOP`` (0.65), so most references cover only the
    first fact. Most open with filler (p=0.7, mostly "so basically"); some copy a
    distractor (p=0.15) or misremember an object (p=0.1). Imitating them gives a policy
    whose most likely summary is short and padded: the SFT policy starts well below a 50%
    winrate, and the facts it leaves out are the headroom RL can find.
    The text has a leading space and no EOS (the EOS token is appended at tokenization).
    """
    kept = 1
    while kept < len(post.facts) and rng.random() >= HUMAN_STOP:
        kept += 1
    facts = list(post.facts[:kept])
    phrases = [fact_phrase(f) for f in facts]
    if rng.random() < 0.1:
        i = rng.randrange(len(phrases))
        s, v, _ = facts[i]
        phrases[i] = fact_phrase((s, v, rng.choice([o for o in OBJECTS if o not in _post_objects(post)])))
    if rng.random() < 0.15:
        phrases.insert(rng.randint(0, len(phrases)), rng.choice(_distractors_of(post)))
    u = rng.random()
    filler = FILLERS[0] if u < 0.5 else rng.choice(FILLERS[1:]) if u < 0.7 else None
    return _join(phrases, filler)


def candidate_summary(post: Post, rng: random.Random) -> str:
    """A summary of widely varying quality, used to build preference pairs.

    Covers every failure the gold quality penalizes (omissions, invented facts,
    distractors, garbled phrases, repetitions, filler), so the learned reward model
    has seen the ways an optimized policy might go wrong.
    """
    facts = list(post.facts)
    rng.shuffle(facts)
    phrases = [fact_phrase(f) for f in facts[: rng.randint(0, len(facts))]]
    if rng.random() < 0.25:
        s, v, _ = rng.choice(post.facts)
        phrases.insert(
            rng.randint(0, len(phrases)),
            fact_phrase((s, v, rng.choice([o for o in OBJECTS if o not in _post_objects(post)]))),
        )
    if rng.random() < 0.25:
        phrases.insert(rng.randint(0, len(phrases)), rng.choice(_distractors_of(post)))
    if rng.random() < 0.15 and phrases:
        phrases.insert(rng.randint(0, len(phrases)), rng.choice(phrases))
    if rng.random() < 0.15:
        words = " ".join(phrases).split() or [rng.choice(SUBJECTS)]
        phrases.insert(rng.randint(0, len(phrases)), " ".join(rng.sample(words, min(2, len(words)))))
    if not phrases:
        phrases = [rng.choice(_distractors_of(post))]
    filler = rng.choice(FILLERS) if rng.random() < 0.4 else None
    return _join(phrases, filler)


def corrupt(post: Post, summary: str, rng: random.Random) -> str:
    """One minimal corruption of ``summary`` (drop, invent, distract, repeat or pad)."""
    phrases = [p.strip() for p in summary.split(",") if p.strip()]
    if phrases and phrases[0].split()[0] in _FILLER_WORDS:
        phrases[0] = " ".join(w for w in phrases[0].split() if w not in _FILLER_WORDS)
    choice = rng.choice(("drop", "invent", "distract", "repeat", "filler"))
    if choice == "drop" and len(phrases) > 1:
        phrases.pop(rng.randrange(len(phrases)))
    elif choice == "invent":
        s, v, _ = rng.choice(post.facts)
        phrases.insert(
            rng.randint(0, len(phrases)),
            fact_phrase((s, v, rng.choice([o for o in OBJECTS if o not in _post_objects(post)]))),
        )
    elif choice == "distract":
        phrases.insert(rng.randint(0, len(phrases)), rng.choice(_distractors_of(post)))
    elif choice == "repeat":
        phrases.append(rng.choice(phrases))
    elif choice == "filler":
        return _join(phrases, rng.choice(FILLERS))
    return _join(phrases, None)


def _post_objects(post: Post) -> set[str]:
    return {o for _, _, o in post.facts}


def _distractors_of(post: Post) -> list[str]:
    found = [p for p in _DISTRACTOR_PHRASES if p in post.body]
    return found or list(_DISTRACTOR_PHRASES[:1])


def oracle_summary(prompt: str) -> str:
    """The best summary the gold quality admits: every salient fact of the post, in the post's
    order, tersely, nothing else (gold quality 1.0; the ceiling row of Table 1)."""
    body = prompt.split("POST:", 1)[-1]
    return _join([" ".join(m.groups()) for m in _FACT_SENTENCE.finditer(body)], None)


def post_facts(prompt: str) -> set[Fact]:
    """Salient facts stated in a prompt's text ("my S V my O" sentences)."""
    body = prompt.split("POST:", 1)[-1]
    return {m.groups() for m in _FACT_SENTENCE.finditer(body)}


@dataclass(frozen=True)
class QualityBreakdown:
    coverage: float
    correct: int
    invented: int
    irrelevant: int
    garbled: int
    repeated: int
    filler_words: int
    has_eos: bool

    @property
    def score(self) -> float:
        """Gold quality: coverage minus penalties; a summary with no EOS is broken."""
        return (
            self.coverage
            - 0.6 * self.invented
            - 0.3 * self.irrelevant
            - 0.4 * self.garbled
            - 0.3 * self.repeated
            - 0.15 * self.filler_words
            - (1.0 if not self.has_eos else 0.0)
        )


def gold_breakdown(prompt: str, summary: str, has_eos: bool = True) -> QualityBreakdown:
    """Parse a summary against the post's salient facts (the hidden gold quality)."""
    facts = post_facts(prompt)
    words = summary.replace(",", " , ").split()
    filler = sum(w in _FILLER_WORDS for w in words)
    segments = " ".join(w for w in words if w not in _FILLER_WORDS).split(",")
    seen: set[Fact] = set()
    correct = invented = irrelevant = garbled = repeated = 0
    for segment in (s.strip() for s in segments):
        if not segment:
            continue
        tokens = tuple(segment.split())
        if len(tokens) == 3 and tokens[0] in SUBJECTS and tokens[1] in VERBS and tokens[2] in OBJECTS:
            if tokens in seen:
                repeated += 1
            elif tokens in facts:
                correct += 1
            else:
                invented += 1
            seen.add(tokens)
        elif segment in _DISTRACTOR_PHRASES:
            irrelevant += 1
        else:
            garbled += 1
    return QualityBreakdown(
        correct / max(len(facts), 1), correct, invented, irrelevant, garbled, repeated, filler, has_eos
    )


def gold_quality(prompt: str, summary: str, has_eos: bool = True) -> float:
    return gold_breakdown(prompt, summary, has_eos).score


def annotate(prompt: str, a: str, b: str, rng: random.Random, temperature: float) -> int:
    """Noisy Bradley–Terry annotator: returns 0 if ``a`` is preferred, else 1.

    P(a ≻ b) = σ((q(a) − q(b)) / temperature) with q the gold quality.
    """
    margin = (gold_quality(prompt, a) - gold_quality(prompt, b)) / temperature
    p_a = 1.0 / (1.0 + math.exp(-max(min(margin, 50.0), -50.0)))
    return 0 if rng.random() < p_a else 1
