"""Wordy descriptions for pre-training the tiny base model. Pure.

The tiny base should behave like a general model that has not learned the
concise label style: it names what happened, inside 15-30 words of filler.
The facts come from the reference label, so a LoRA adapter can learn the
short style from a few hundred examples, as a real base model would.
"""

from __future__ import annotations

import random

OPENERS = [
    "In this session the visitor",
    "During this visit to the website the user",
    "Looking at the recorded events, it seems that the customer",
    "Over the course of this browsing session the person",
    "Based on the clicks and page views, the shopper",
]
CLOSERS = [
    "and then the session came to an end after a short while.",
    "while also moving between a few other pages of the site along the way.",
    "before finally leaving the website without any further notable activity.",
    "which took a little time, with some scrolling and navigation in between.",
    "and afterwards there was nothing else of particular interest in the events.",
]


LEADS = [
    "which is what the visitor did during this session,",
    "as far as can be told from the events in this recording,",
    "and that is the main thing that happened in this visit,",
]


def wordy_description(label: str, rng: random.Random) -> str:
    """At least 15 words that start with the label's facts and do not stop.

    A real base model can start a sentence with the right verb; it just does
    not stop there. A quarter also open with a preamble, as chatty models do.
    """
    if rng.random() < 0.75:
        return f"{label} {rng.choice(LEADS)} {rng.choice(CLOSERS)}"
    clause = label[0].lower() + label[1:]
    return f"{rng.choice(OPENERS)} {clause}, {rng.choice(CLOSERS)}"
