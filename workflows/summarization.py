"""Summarization + refinement: an extractive summarizer as four tools and one condition.

The graph (``graphs/summarization.json``) runs split → summarize → merge → refine, and
repeats refine until ``length_ok``; summarize is a ``map`` that runs ``summarize_chunk``
once per chunk, concurrently (``summarize_chunks`` does all chunks in one step, with the
same result). Input: ``text``, and optionally ``chunk_size`` (default 500) and
``target_length`` (default 300); ``split_text`` writes the defaults it used into the
state. Output: ``summary`` with ``len(summary) <= target_length``, for any text.

State written along the way. Sentence numbers index ``sentences``, which keeps the
state compact and lets every later step restore the original order:

- ``sentences``: the text split into sentences, in order.
- ``chunks`` (text) and ``chunk_spans`` (``[first, end)`` sentence ranges): whole
  sentences packed into chunks of about ``chunk_size`` characters.
- ``chunk_summaries``: the sentence numbers each chunk keeps.
- ``summary_sentences``, ``summary``, ``summary_length``: the merged, then refined summary.
- ``refinements``: how many times refine shortened the summary; ``truncated`` is true
  when the last resort (cutting one long sentence at a word boundary) was used.

Standard library only: sentences are scored by the document-wide frequency of their
content words (Unicode-aware, stopwords removed, CJK split into characters).
"""

from __future__ import annotations

import math
import re
import threading
import unicodedata
from collections import Counter, OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from itertools import chain, pairwise
from typing import Any

from engine import ToolContext, condition, tool

CHUNK_SIZE_RANGE = (50, 100_000)
TARGET_LENGTH_RANGE = (20, 100_000)
#: Used when the state leaves ``chunk_size`` / ``target_length`` out.
DEFAULT_CHUNK_SIZE = 500
DEFAULT_TARGET_LENGTH = 300
#: Each chunk keeps its best sentences up to this share of its length (at least one), or
#: up to its share of the target if that is larger.
SUMMARY_RATIO = 1 / 3
#: Above this many sentences, one refine iteration may drop up to half of them (stopping
#: as soon as the summary fits), so the loop ends within ~log2(n) + 17 iterations for
#: any text; at or below it, exactly one sentence goes per iteration.
SINGLE_DROP_MAX = 16
ELLIPSIS = "…"
#: The state holds the text up to four times over (text, sentences, chunks, summary);
#: large values are offloaded (engine/blobs.py) and the whole state is capped at 100 MiB
#: by default: refuse larger texts up front with a clear message.
MAX_TEXT_BYTES = 16 * 1024 * 1024

# Non-ASCII punctuation is spelled as escapes: several marks look like ASCII ones.
# CJK full stop, exclamation and question marks (U+3002, U+FF01, U+FF1F, U+FF61).
_CJK_MARKS = r"\u3002\uff01\uff1f\uff61"
# Closing corner/lenticular/angle brackets, fullwidth ")", right quotation marks.
_CLOSERS = "\u300d\u300f\uff09\u3011\u3015\u3009\u300b\u201d\u2019\"'"
# ". ! ? …" plus double marks and the Devanagari danda and Arabic question mark.
_MARKS = r".!?\u2026\u203c\u2047\u2048\u2049\u0964\u061f"
# Western terminators need whitespace (or the end) after them; CJK ones do not.
_TERMINATOR = re.compile(
    rf"(?P<cjk>[{_CJK_MARKS}]+[{_CLOSERS}]*)|(?P<mark>[{_MARKS}]+)[\"'\u201d\u2019\u00bb)\]]*"
)
_BULLET = re.compile(r"(?:[-*\u2022\u2023\u25e6\u00b7]|\d{1,3}[.)])\s")
_LAST_WORD = re.compile(r"\S+$")
_NEXT_CHAR = re.compile(r"\s*(\S)")
_LETTER_DOTS = re.compile(r"(?:[^\W\d_]\.)*[^\W\d_]")  # "J", "e.g", "u.s"
# CJK punctuation, kana, Han ideographs and fullwidth forms: joined without spaces.
_CJK_CHAR = re.compile(r"[\u3000-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]")
_WORD = re.compile(r"[^\W_]+")
_HAN = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
_KANA = r"\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f"
# A word run splits into single Han characters, kana runs and everything else.
_SCRIPT_PART = re.compile(rf"[{_HAN}]|[{_KANA}]+|[^{_HAN}{_KANA}]+")
_HIRAGANA_RUN = re.compile(r"[\u3040-\u309f]+")

_ABBREVIATIONS = frozenset(
    str.split(
        "mr mrs ms dr prof sr jr st mt ft vs approx dept est fig figs gen gov rep sen inc ltd co "
        "corp jan feb mar apr jun jul aug sep sept oct nov dec al cf ca vol pp ed eds"
    )
)
_STOPWORDS = frozenset(
    str.split(
        # English
        "a about above after again against all also am an and any are as at be because been "
        "before being below between both but by can could did do does doing down during each "
        "few for from further had has have having he her here hers herself him himself his how "
        "i if in into is it its itself just like may me might more most must my myself no nor "
        "not now of off on once one only or other our ours ourselves out over own same shall "
        "she should so some such than that the their theirs them themselves then there these "
        "they this those through to too under until up upon us very was we were what when "
        "where which while who whom why will with would yet you your yours yourself "
        # French, Spanish, German, Italian, Portuguese: the most frequent function words
        "au aux avec ce ces dans de des du elle en est et il ils je la le les leur mais ne nous "
        "ou par pas pour qu que qui sa se ses son sur un une vous al como con del el ella ellos "
        "es esta este las lo los más para pero por se su sus una y das dem den der des die ein "
        "eine einer ist mit nicht sich und von zu auf für im ist il gli di da nel che per non "
        "uma um os as do da em no na é"
        # Common single-character Chinese function words
        " 的 了 是 在 和 也 就 都 而 及 与 或 之 其 这 那 个 们 着 把 被"
    )
)


# -- validation ---------------------------------------------------------------------------
def _text(state: Mapping[str, Any]) -> str:
    text = state.get("text")
    if text is None:
        raise ValueError("text is missing: put the document to summarize in state['text']")
    if not isinstance(text, str):
        raise ValueError(f"text must be a string, not {type(text).__name__}")
    if not text.strip():
        raise ValueError("text is empty")
    size = len(text.encode())
    if size > MAX_TEXT_BYTES:
        raise ValueError(f"text is {size} bytes (UTF-8); the limit is {MAX_TEXT_BYTES}")
    return text


def _int_setting(state: Mapping[str, Any], name: str, bounds: tuple[int, int], default: int) -> int:
    low, high = bounds
    value = state.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer between {low} and {high}, not {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, not {value}")
    return value


def _require(state: Mapping[str, Any], key: str, producer: str) -> Any:
    if key not in state:
        raise ValueError(f"state has no {key!r}: run {producer} first")
    return state[key]


# -- text helpers -------------------------------------------------------------------------
def _sep(left: str, right: str) -> int:
    """Characters between two joined pieces: none between CJK, else one space."""
    return 0 if _CJK_CHAR.match(left[-1]) and _CJK_CHAR.match(right[0]) else 1


def join_sentences(sentences: Iterable[str]) -> str:
    """Join sentences with one space, or none where CJK meets CJK."""
    parts: list[str] = []
    for sentence in sentences:
        if parts and _sep(parts[-1], sentence):
            parts.append(" ")
        parts.append(sentence)
    return "".join(parts)


def _blocks(text: str) -> Iterator[str]:
    """Paragraphs and list items, each on one line with its whitespace collapsed.

    A blank line ends a paragraph and a bulleted line starts a new block; other line
    breaks are hard wraps inside a sentence.
    """
    lines: list[str] = []
    for raw in text.splitlines():
        line = " ".join(raw.split())
        if not line or _BULLET.match(line):
            if lines:
                yield join_sentences(lines)
            lines = [line] if line else []
        else:
            lines.append(line)
    if lines:
        yield join_sentences(lines)


def _ends_sentence(block: str, mark: str, mark_start: int, end: int) -> bool:
    """Whether a Western terminator at ``block[mark_start:end]`` really ends a sentence."""
    if end < len(block) and not block[end].isspace():
        return False  # "3.14", "example.com", "?!" inside a token
    following = _NEXT_CHAR.match(block, end)  # not block[end:]: a copy per mark is quadratic
    if following is not None and following.group(1).islower():
        return False  # "approx. five", '"Really?" she asked'
    if mark == ".":
        found = _LAST_WORD.search(block, max(0, mark_start - 40), mark_start)
        word = found.group().lstrip("\"'([{\u201c\u2018\u00ab\u00bf\u00a1") if found else ""
        if word.casefold() in _ABBREVIATIONS or _LETTER_DOTS.fullmatch(word):
            return False  # "Dr. Smith", "J. Smith", "e.g. This"
    return True


def split_sentences(text: str) -> list[str]:
    """Split ``text`` into sentences, in order, whitespace collapsed.

    Ends a sentence at ``. ! ? …`` (and ``‼ । ؟``) followed by whitespace and a word
    that is not lowercase, unless the word before a full stop is a known abbreviation or
    an initial; at the CJK full stop, exclamation and question marks, space or not; and
    at every paragraph break or list item. Closing quotes and brackets stay with their
    sentence.
    """
    sentences: list[str] = []
    for block in _blocks(text):
        start = 0
        for match in _TERMINATOR.finditer(block):
            mark, end = match.group("mark"), match.end()
            if mark is not None and not _ends_sentence(block, mark, match.start(), end):
                continue
            if mark is None and match.group("cjk")[-1] in _CLOSERS and _WORD.match(block, end):
                continue  # a closed quote followed by "she said": one sentence
            piece = block[start:end].strip()
            if piece:
                sentences.append(piece)
            start = end
        tail = block[start:].strip()
        if tail:
            sentences.append(tail)
    return sentences


def _pack(sentences: list[str], chunk_size: int) -> list[list[int]]:
    """``[first, end)`` spans of whole sentences, each joined span about ``chunk_size`` long."""
    spans: list[list[int]] = []
    start, length = 0, 0
    for i, sentence in enumerate(sentences):
        added = len(sentence) + (_sep(sentences[i - 1], sentence) if i > start else 0)
        if i > start and length + added > chunk_size:
            spans.append([start, i])
            start, length = i, len(sentence)
        else:
            length += added
    spans.append([start, len(sentences)])
    return spans


def _content_words(sentence: str) -> list[str]:
    words = []
    for run in _WORD.findall(unicodedata.normalize("NFKC", sentence).casefold()):
        for part in _SCRIPT_PART.findall(run):
            if _HIRAGANA_RUN.fullmatch(part) or part in _STOPWORDS:
                continue  # hiragana runs are mostly particles and endings
            if len(part) > 3 and part[-1] == "s" and part[-2] != "s":
                part = part[:-1]  # a crude plural fold: "lighthouses" counts as "lighthouse"
            if len(part) > 1 or _CJK_CHAR.match(part):
                words.append(part)
    return words


def score_sentences(sentences: list[str]) -> list[float]:
    """How informative each sentence is: frequent content words, mildly favouring length.

    A word weighs its document-wide count over the top word's count; words seen once weigh
    nothing unless no word repeats. A sentence scores the sum over its distinct content
    words divided by the square root of its word count; without content words, 0.
    """
    words = [_content_words(s) for s in sentences]
    counts = Counter(chain.from_iterable(words))
    if not counts:
        return [0.0] * len(sentences)
    top = max(counts.values())
    weight = {w: n / top for w, n in counts.items() if n > 1 or top == 1}
    return [sum(weight.get(w, 0.0) for w in set(ws)) / math.sqrt(len(ws)) if ws else 0.0 for ws in words]


def truncate(text: str, limit: int) -> str:
    """``text`` if it fits in ``limit`` characters, else cut at a word boundary + "…"."""
    if len(text) <= limit:
        return text
    room = limit - len(ELLIPSIS)
    space = text.rfind(" ", 0, room + 1)
    head = text[:space] if space >= room // 2 else text[:room]
    head = head.rstrip(" ,;:-\u2013\u2014(") or text[:room]
    return head + ELLIPSIS


def _keep_best(indexes: range, sentences: list[str], scores: list[float], share: float) -> list[int]:
    """A chunk's best sentences up to ``share`` of its length (at least one), in order."""
    if share >= 1:
        return list(indexes)
    budget = share * len(join_sentences(sentences[i] for i in indexes))
    kept: list[int] = []
    used = 0
    for i in sorted(indexes, key=lambda i: (-scores[i], i)):
        cost = len(sentences[i]) + (1 if kept else 0)
        if not kept or used + cost <= budget:
            kept.append(i)
            used += cost
    return sorted(kept)


def _drop_weakest(kept: list[int], sentences: list[str], target: int) -> list[int]:
    """Drop the weakest sentence (up to half of them for long summaries) until it fits.

    Sentences that could never fit whole go first, then the lowest scores, later ones
    first on ties. The length is kept up to date through each sentence's neighbours.
    """
    scores, _ = _scores(sentences)
    batch = 1 if len(kept) <= SINGLE_DROP_MAX else len(kept) // 2
    order = sorted(kept, key=lambda i: (len(sentences[i]) <= target, scores[i], -i))
    before: dict[int, int | None] = {b: a for a, b in pairwise(kept)}
    after: dict[int, int | None] = {a: b for a, b in pairwise(kept)}
    length = len(join_sentences(sentences[i] for i in kept))
    dropped: set[int] = set()
    for i in order[:batch]:
        if length <= target:
            break
        prev, nxt = before.get(i), after.get(i)
        length -= len(sentences[i])
        if prev is not None:
            length -= _sep(sentences[prev], sentences[i])
            after[prev] = nxt
        if nxt is not None:
            length -= _sep(sentences[i], sentences[nxt])
            before[nxt] = prev
        if prev is not None and nxt is not None:
            length += _sep(sentences[prev], sentences[nxt])
        dropped.add(i)
    return [i for i in kept if i not in dropped]


# -- tools --------------------------------------------------------------------------------
@tool
async def split_text(state: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    """Split ``text`` into sentences and pack whole ones into ~``chunk_size`` chunks.

    Checks the input first: ``text`` a non-empty string of at most 16 MiB (UTF-8),
    ``chunk_size`` an integer in 50..100000 (default 500), ``target_length`` an integer
    in 20..100000 (default 300). A sentence longer than ``chunk_size`` becomes a chunk of
    its own. Writes ``sentences``, ``chunks`` and ``chunk_spans``, and the defaults it
    used for ``chunk_size`` / ``target_length`` if the state has none.
    """
    text = _text(state)
    chunk_size = _int_setting(state, "chunk_size", CHUNK_SIZE_RANGE, DEFAULT_CHUNK_SIZE)
    target = _int_setting(state, "target_length", TARGET_LENGTH_RANGE, DEFAULT_TARGET_LENGTH)
    sentences = split_sentences(text)
    spans = _pack(sentences, chunk_size)
    defaults = {
        name: value
        for name, value in (("chunk_size", chunk_size), ("target_length", target))
        if state.get(name) is None
    }
    return {
        "sentences": sentences,
        "chunks": [join_sentences(sentences[a:b]) for a, b in spans],
        "chunk_spans": spans,
        **defaults,
    }


@tool
async def summarize_chunks(state: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    """Keep each chunk's most informative sentences, scored over the whole document.

    Each chunk keeps its best sentences, at least one, in their original order, up to a
    third of its length or its share of ``target_length`` if that is more (so a text that
    already fits is kept whole). Writes ``chunk_summaries`` (sentence numbers per chunk).
    """
    target = _int_setting(state, "target_length", TARGET_LENGTH_RANGE, DEFAULT_TARGET_LENGTH)
    sentences = _require(state, "sentences", "split_text")
    spans = _require(state, "chunk_spans", "split_text")
    scores = score_sentences(sentences)
    share = max(SUMMARY_RATIO, target / len(join_sentences(sentences)))
    return {"chunk_summaries": [_keep_best(range(a, b), sentences, scores, share) for a, b in spans]}


@tool
async def summarize_chunk(state: Mapping[str, Any], ctx: ToolContext) -> list[int]:
    """One chunk of a ``map`` over ``chunks`` (``ctx.index``): its most informative
    sentences, as :func:`summarize_chunks` keeps them for that chunk.

    Returns the chunk's kept sentence numbers; the map collects them, in chunk order,
    into ``chunk_summaries``.
    """
    target = _int_setting(state, "target_length", TARGET_LENGTH_RANGE, DEFAULT_TARGET_LENGTH)
    sentences = _require(state, "sentences", "split_text")
    spans = _require(state, "chunk_spans", "split_text")
    first, end = spans[ctx.index]
    scores, length = _scores(sentences)
    share = max(SUMMARY_RATIO, target / length)
    return _keep_best(range(first, end), sentences, scores, share)


#: The scores of the last few documents' sentences: every item of a map and every refine
#: iteration scores the same document; a long one is scored once per container.
_SCORES: OrderedDict[tuple[str, ...], tuple[list[float], int]] = OrderedDict()
_SCORES_LOCK = threading.Lock()


def _scores(sentences: list[str]) -> tuple[list[float], int]:
    """:func:`score_sentences` and the length of the sentences joined, remembered for the
    last few documents."""
    key = tuple(sentences)
    with _SCORES_LOCK:
        scored = _SCORES.get(key)
        if scored is not None:
            _SCORES.move_to_end(key)
            return scored
    scored = score_sentences(sentences), len(join_sentences(sentences))
    with _SCORES_LOCK:
        _SCORES[key] = scored
        while len(_SCORES) > 4:
            _SCORES.popitem(last=False)
    return scored


@tool
async def merge_summaries(state: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    """Merge the chunk summaries, in original order, into ``summary``.

    Writes ``summary_sentences``, ``summary`` and ``summary_length``.
    """
    sentences = _require(state, "sentences", "split_text")
    chunk_summaries = _require(state, "chunk_summaries", "summarize_chunks")
    kept = sorted({i for picks in chunk_summaries for i in picks})
    summary = join_sentences(sentences[i] for i in kept)
    return {"summary_sentences": kept, "summary": summary, "summary_length": len(summary)}


@tool
async def refine_summary(state: Mapping[str, Any], ctx: ToolContext) -> dict[str, Any]:
    """Shorten ``summary`` towards ``target_length``: one weak sentence per iteration.

    Loops (``loop_condition: length_ok``) until the summary fits. A summary of more than
    16 sentences may lose up to half of them in one iteration, which bounds the loop for
    any text. When a single sentence is still too long, it is cut at a word boundary and
    ends with "…" (``truncated``). Counts changes in ``refinements``.
    """
    target = _int_setting(state, "target_length", TARGET_LENGTH_RANGE, DEFAULT_TARGET_LENGTH)
    summary = _require(state, "summary", "merge_summaries")
    refinements = state.get("refinements", 0)
    if len(summary) <= target:
        return {"refinements": refinements}
    sentences = _require(state, "sentences", "split_text")
    kept = _require(state, "summary_sentences", "merge_summaries")
    update: dict[str, Any] = {"refinements": refinements + 1}
    if len(kept) > 1:
        kept = _drop_weakest(kept, sentences, target)
        summary = join_sentences(sentences[i] for i in kept)
    else:
        summary = truncate(summary, target)
        update["truncated"] = True
    update.update(summary_sentences=kept, summary=summary, summary_length=len(summary))
    return update


@condition
def length_ok(state: Mapping[str, Any]) -> bool:
    """True when the summary fits: ``len(summary) <= target_length``."""
    target = state.get("target_length")
    return len(state["summary"]) <= (DEFAULT_TARGET_LENGTH if target is None else target)
