"""Chat-control tokens spelled in session text, neutralised before a tokenizer reads them. Pure functions.

A session is data. Text in it that spells a special token of the base model's tokenizer
(ChatML ``<|im_start|>``, Llama-3 ``<|eot_id|>``, ``</s>``...) is read by the tokenizer as that
token, not as characters: a search query holding ``<|im_end|><|im_start|>assistant`` closes the
user turn and opens an assistant turn of the submitter's making, in the student's prompt and in
the adapter's training data alike. Every such spelling is rewritten with look-alike brackets,
visible and readable, that no tokenizer merges back into the token::

    <|im_end|>   ->  ‹|im_end|›        [INST]  ->  ⁅INST⁆        </s>  ->  ‹/s›

(a declared token with no bracket to swap gets a word joiner, U+2060, after its first character).
Matching ignores case (a tokenizer may lower-case before it matches its added tokens).

Two layers, the same rewrite:

* :func:`neutralise` with no tokenizer: the known chat families (any ``<|...|>`` or ``<｜...｜>``,
  ``<s>``, ``</s>``, Llama-2 ``[INST]`` and ``<<SYS>>``, Gemma's turns); the renderer applies it to
  every rendering, so the teacher, the student and the training data all see it;
* :func:`tokenizer_neutraliser`: where a tokenizer is loaded (the student's engines, the trainer's
  training examples and evaluation), also every token it declares special
  (``all_special_tokens`` and the ``added_tokens_decoder`` entries marked special).
"""

from __future__ import annotations

import contextlib
import functools
import re
import weakref
from collections.abc import Callable, Iterable
from typing import Any

# Spellings of the known chat families' control tokens, for when no tokenizer is at hand.
DEFAULT_SPECIAL_TOKENS: tuple[str, ...] = (
    "<s>", "</s>", "<unk>", "<pad>", "<bos>", "<eos>", "<mask>",  # sentencepiece families, Gemma
    "[INST]", "[/INST]", "<<SYS>>", "<</SYS>>",  # Llama-2, Mistral
    "<start_of_turn>", "<end_of_turn>",  # Gemma
)
# ChatML, Llama-3, Phi, GPT-2's <|endoftext|>, Qwen's <|fim_*|>, DeepSeek's full-width bars...
_FAMILY = r"<[|｜][^\s<>|｜]{1,80}[|｜]>"
_LOOKALIKE = str.maketrans({"<": "‹", ">": "›", "[": "⁅", "]": "⁆"})
_WORD_JOINER = "\u2060"


def _escape(token: str) -> str:
    swapped = token.translate(_LOOKALIKE)
    return swapped if swapped != token else token[:1] + _WORD_JOINER + token[1:]


@functools.lru_cache(maxsize=16)
def _pattern(extra: frozenset[str]) -> re.Pattern[str]:
    literals = sorted({*DEFAULT_SPECIAL_TOKENS, *extra}, key=len, reverse=True)  # the longest spelling wins
    return re.compile("|".join([_FAMILY, *map(re.escape, literals)]), re.IGNORECASE)


def neutralise(text: str, extra: frozenset[str] = frozenset()) -> str:
    """``text`` with every spelling of a known control token (and of ``extra``) rewritten."""
    pattern = _pattern(extra)
    for _ in range(4):  # an escape never forms a new token; the loop only guards odd declared tokens
        if pattern.search(text) is None:
            return text
        text = pattern.sub(lambda m: _escape(m.group(0)), text)
    return text


def declared_special_tokens(tokenizer: Any) -> frozenset[str]:
    """The tokens ``tokenizer`` declares special: ``all_special_tokens`` and the added tokens marked special."""
    names = {str(t) for t in getattr(tokenizer, "all_special_tokens", None) or ()}
    decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
    names.update(str(getattr(t, "content", t)) for t in decoder.values() if getattr(t, "special", False))
    return frozenset(n for n in names if n.strip())


_neutralisers: weakref.WeakKeyDictionary[Any, Callable[[str], str]] = weakref.WeakKeyDictionary()


def tokenizer_neutraliser(tokenizer: Any) -> Callable[[str], str]:
    """:func:`neutralise` with ``tokenizer``'s declared special tokens added (worked out once per tokenizer)."""
    try:
        return _neutralisers[tokenizer]
    except (KeyError, TypeError):
        pass
    extra = declared_special_tokens(tokenizer)
    _pattern(extra)  # compile once, here, not on the first prompt

    def apply(text: str) -> str:
        return neutralise(text, extra)

    with contextlib.suppress(TypeError):  # not weakly referenceable: worked out on every call instead
        _neutralisers[tokenizer] = apply
    return apply


def neutralise_all(tokenizer: Any, texts: Iterable[str]) -> list[str]:
    """Every text of ``texts`` neutralised for ``tokenizer``."""
    apply = tokenizer_neutraliser(tokenizer)
    return [apply(t) for t in texts]
