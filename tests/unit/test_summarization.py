"""The example summarization workflow, run end to end through the in-process runner."""

# The CJK cases use fullwidth "!" and "?" on purpose: they are what the splitter must handle.
# ruff: noqa: RUF001

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from types import MappingProxyType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import compile_graph, default_registry, run_graph_sync
from workflows.summarization import (
    ELLIPSIS,
    MAX_TEXT_BYTES,
    join_sentences,
    refine_summary,
    split_sentences,
    split_text,
    truncate,
)

GRAPHS = Path(__file__).resolve().parents[2] / "workflows" / "graphs"


@pytest.fixture(scope="module")
def graph():
    return compile_graph(json.loads((GRAPHS / "summarization.json").read_text()))


def summarize(graph, text, chunk_size=500, target_length=300):
    state = {"text": text, "chunk_size": chunk_size, "target_length": target_length}
    return run_graph_sync(graph, state, sleep=None)


def refine_logs(result):
    return [log for log in result.logs if log["node"] == "refine"]


def assert_extractive_in_order(result, text):
    """The summary is whole sentences of the text, in the text's order (or one truncated)."""
    state = result.state
    kept = state["summary_sentences"]
    assert kept == sorted(set(kept))
    parts = [state["sentences"][i] for i in kept]
    if state.get("truncated"):
        assert len(parts) == 1
        assert state["summary"].endswith(ELLIPSIS)
        assert parts[0].startswith(state["summary"][: -len(ELLIPSIS)])
    else:
        assert state["summary"] == join_sentences(parts)
    flat, position = " ".join(text.split()), 0
    for part in parts:
        found = flat.find(part, position)
        assert found >= 0, f"{part!r} is not in the text after position {position}"
        position = found + len(part)


def long_text(paragraphs=40, seed=7):
    """Many paragraphs of plausible prose about a few recurring topics."""
    rng = random.Random(seed)
    subjects = ["The city council", "Local farmers", "The river authority", "Engineers", "Residents"]
    verbs = ["reviewed", "expanded", "questioned", "funded", "repaired", "studied"]
    objects = [
        "the flood barriers along the river",
        "the irrigation canals north of town",
        "the water treatment plant",
        "the new reservoir in the hills",
        "the drainage tunnels under the old market",
    ]
    tails = ["after the spring floods.", "before the dry season.", "for the third year running.", "at last."]
    body = []
    for _ in range(paragraphs):
        sentences = [
            f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)} {rng.choice(tails)}"
            for _ in range(rng.randint(3, 6))
        ]
        body.append(" ".join(sentences))
    return "\n\n".join(body)


# -- the graph and its example --------------------------------------------------------------
def test_graph_loops_refine_until_length_ok(graph):
    # GIVEN the compiled example graph
    # WHEN we look at its nodes
    refine = graph.nodes["refine"]
    # THEN the pipeline is split -> summarize -> merge -> refine, refine looping on length_ok
    assert graph.start == "split"
    assert [graph.nodes[n].next for n in ("split", "summarize", "merge")] == ["summarize", "merge", "refine"]
    assert refine.next is None and refine.loop is not None and refine.max_iterations == 50


def test_example_state_completes_within_target(graph):
    # GIVEN the example initial state shipped next to the graph
    state = json.loads((GRAPHS / "summarization.state.json").read_text())
    assert state["chunk_size"] == 500 and state["target_length"] == 300
    assert len(state["text"]) > 2500 and "\n\n" in state["text"]
    # WHEN it runs
    result = run_graph_sync(graph, state, sleep=None)
    # THEN the summary fits, comes from the text in order, and refine looped visibly
    assert result.status == "completed", result.error
    assert len(result.state["summary"]) <= 300
    assert result.state["summary_length"] == len(result.state["summary"])
    assert_extractive_in_order(result, state["text"])
    steps = [log["node"] for log in result.logs if "index" not in log]
    assert steps[:4] == ["split", "summarize", "merge", "refine"]
    assert len(refine_logs(result)) > 1
    assert len(result.state["chunks"]) > 1
    # AND summarize ran once per chunk, each chunk its own execution
    executions = sorted(log["index"] for log in result.logs if "index" in log)
    assert executions == list(range(len(result.state["chunks"])))


def test_tools_and_condition_are_registered_with_docs():
    # GIVEN the workflows package was imported
    # WHEN the registry is listed
    listing = default_registry.describe()
    tools = {t["name"]: t for t in listing["tools"]}
    conditions = {c["name"] for c in listing["conditions"]}
    # THEN the four tools and the condition are there, each documented
    for name in ("split_text", "summarize_chunks", "summarize_chunk", "merge_summaries", "refine_summary"):
        assert tools[name]["async"] and tools[name]["doc"]
    assert "length_ok" in conditions


def sequential(graph):
    """The same pipeline with summarize as one step over every chunk (summarize_chunks)."""
    definition = json.loads(json.dumps(graph.definition))
    definition["nodes"]["summarize"] = {"fn": "summarize_chunks", "next": "merge"}
    return compile_graph(definition)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    sentences=st.lists(
        st.lists(
            st.sampled_from(
                ["lighthouse", "ships", "coast", "light", "keeper", "storm", "lens", "the", "a", "of"]
            ),
            min_size=1,
            max_size=12,
        ),
        min_size=1,
        max_size=40,
    ),
    chunk_size=st.integers(50, 400),
    target=st.integers(20, 600),
)
def test_the_map_summarizes_exactly_as_the_sequential_version(graph, sentences, chunk_size, target):
    # GIVEN a text, and the pipeline with summarize as one sequential step
    text = " ".join(" ".join(words).capitalize() + "." for words in sentences)
    # WHEN both run on it
    mapped = summarize(graph, text, chunk_size=chunk_size, target_length=target)
    one_step = summarize(sequential(graph), text, chunk_size=chunk_size, target_length=target)
    # THEN the final summary, and every other state key, is the same (the map also lists
    # its failed chunks: none)
    assert mapped.status == one_step.status == "completed"
    assert mapped.state.pop("chunk_summaries_errors") == []
    assert mapped.state["summary"] == one_step.state["summary"]
    assert mapped.state == one_step.state


def test_the_example_summary_is_the_sequential_versions(graph):
    state = json.loads((GRAPHS / "summarization.state.json").read_text())
    mapped = run_graph_sync(graph, state, sleep=None)
    assert mapped.state.pop("chunk_summaries_errors") == []
    assert mapped.state == run_graph_sync(sequential(graph), state, sleep=None).state


# -- behaviour ------------------------------------------------------------------------------
def test_short_text_is_kept_whole(graph):
    # GIVEN a text already shorter than the target
    text = "Bees pollinate crops. Without bees, many fruits would disappear."
    # WHEN it is summarized
    result = summarize(graph, text)
    # THEN the summary is the text, and refine ran once without changing anything
    assert result.status == "completed"
    assert result.state["summary"] == text
    assert len(refine_logs(result)) == 1
    assert result.state["refinements"] == 0


def test_long_text_refines_step_by_step(graph):
    # GIVEN a text of many paragraphs, far longer than the target
    text = long_text()
    assert len(text) > 8000
    # WHEN it is summarized
    result = summarize(graph, text, chunk_size=500, target_length=300)
    # THEN it fits, every refine iteration shortened the summary, and each one is logged
    assert result.status == "completed", result.error
    assert len(result.state["summary"]) <= 300
    assert_extractive_in_order(result, text)
    logs = refine_logs(result)
    assert len(logs) > 1
    lengths = [log["result"]["summary_length"] for log in logs]
    assert lengths == sorted(lengths, reverse=True) and len(set(lengths)) == len(lengths)
    assert result.state["refinements"] == len(logs)
    assert [log["next"] for log in logs] == ["refine"] * (len(logs) - 1) + [None]


def test_weakest_sentence_is_dropped_first(graph):
    # GIVEN on-topic sentences and one off-topic one, each its own chunk so all reach merge
    sentences = [
        "Honey bees pollinate apple orchards every spring.",
        "The weather was pleasant on Tuesday.",
        "Wild bees also pollinate apple and cherry orchards.",
        "Orchards with more bees produce more apples.",
    ]
    text = " ".join(sentences)
    target = len(text) - len(sentences[1]) - 1
    # WHEN the summary must lose exactly one sentence
    result = summarize(graph, text, chunk_size=50, target_length=target)
    # THEN the off-topic sentence is the one that goes
    assert result.status == "completed"
    assert result.state["summary"] == join_sentences(sentences[:1] + sentences[2:])
    assert len(refine_logs(result)) == 1


def test_one_huge_sentence_is_cut_at_a_word_boundary(graph):
    # GIVEN a single sentence far longer than both chunk_size and target_length
    sentence = " ".join(f"word{i}" for i in range(600)) + "."
    # WHEN it is summarized
    result = summarize(graph, sentence, chunk_size=500, target_length=300)
    # THEN it is its own chunk, and the summary is its start, cut between words, with "…"
    assert result.status == "completed"
    assert result.state["chunk_spans"] == [[0, 1]]
    summary = result.state["summary"]
    assert len(summary) <= 300 and summary.endswith(ELLIPSIS)
    head = summary[: -len(ELLIPSIS)]
    assert sentence.startswith(head) and sentence[len(head)] == " "
    assert result.state["truncated"] is True


def test_a_sentence_longer_than_chunk_size_gets_its_own_chunk(graph):
    # GIVEN short sentences around one longer than chunk_size
    huge = "Long " * 30 + "sentence here."
    text = f"Short one. Another short one. {huge} A short tail. And one more."
    # WHEN it is split
    result = summarize(graph, text, chunk_size=60, target_length=100)
    # THEN chunks hold whole sentences, at most chunk_size long unless a lone long sentence
    state = result.state
    assert result.status == "completed"
    assert [state["sentences"][a:b] for a, b in state["chunk_spans"]][1] == [huge]
    assert state["chunks"] == [join_sentences(state["sentences"][a:b]) for a, b in state["chunk_spans"]]
    for (a, b), chunk in zip(state["chunk_spans"], state["chunks"], strict=True):
        assert len(chunk) <= 60 or b - a == 1


@pytest.mark.parametrize(
    ("text", "target"),
    [
        pytest.param(
            "L'été dernier, nous sommes allés à Montréal. La ville était très animée. "
            "Les cafés débordaient de monde. Les musées de Montréal étaient magnifiques. "
            "Nous reviendrons à Montréal l'été prochain.",
            80,
            id="french",
        ),
        pytest.param(
            "人工智能正在改变世界。许多公司投资人工智能研究。人工智能可以帮助医生诊断疾病。"
            "天气很好。人工智能也带来新的挑战。政府正在制定人工智能的规则。",
            30,
            id="chinese",
        ),
        pytest.param(
            "東京は日本の首都です。東京には多くの人が住んでいます。今日は雨です！"
            "東京の電車はとても便利です。「本当？」と友達は聞いた。",
            25,
            id="japanese",
        ),
        pytest.param(
            "We shipped the release 🚀! Users love the new dark mode 🌙. The release fixed 40 bugs 🐛. "
            "Coffee was involved ☕. The next release ships in May 🎉.",
            60,
            id="emoji",
        ),
    ],
)
def test_non_ascii_text(graph, text, target):
    # GIVEN text with accents, CJK punctuation without spaces, or emoji
    # WHEN it is summarized to a short target
    result = summarize(graph, text, chunk_size=50, target_length=target)
    # THEN it completes within the target, with whole sentences of the text in order
    assert result.status == "completed", result.error
    assert len(result.state["summary"]) <= target
    assert len(result.state["sentences"]) >= 4
    assert_extractive_in_order(result, text)


def test_many_tiny_sentences_still_converge(graph):
    # GIVEN thousands of tiny sentences, the worst case for a one-sentence-per-pass loop
    rng = random.Random(1)
    text = " ".join(f"{rng.choice(['Ant', 'Bee', 'Cat'])} {rng.choice(['ran', 'sat'])}." for _ in range(3000))
    # WHEN summarized with the smallest chunk_size and target_length allowed
    result = summarize(graph, text, chunk_size=50, target_length=20)
    # THEN refine converges well within max_iterations
    assert result.status == "completed", result.error
    assert len(result.state["summary"]) <= 20
    assert 1 < len(refine_logs(result)) < 30


# -- bad input --------------------------------------------------------------------------------
@pytest.mark.parametrize("text", ["", "   \n\n\t  "])
def test_empty_text_fails_at_split(graph, text):
    # GIVEN an empty or whitespace-only text
    # WHEN it is summarized
    result = summarize(graph, text)
    # THEN the run fails at split with a clear ValueError
    assert result.status == "failed"
    assert result.error == {"node": "split", "type": "ValueError", "message": "text is empty"}
    assert [log["status"] for log in result.logs] == ["failed"]


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ({"chunk_size": 500, "target_length": 300}, "text is missing"),
        ({"text": 42, "chunk_size": 500, "target_length": 300}, "text must be a string, not int"),
        ({"text": ["a."], "chunk_size": 500, "target_length": 300}, "text must be a string, not list"),
        ({"text": "Hi.", "chunk_size": 49, "target_length": 300}, "chunk_size must be between 50 and 100000"),
        ({"text": "Hi.", "chunk_size": 100_001, "target_length": 300}, "chunk_size must be between"),
        ({"text": "Hi.", "chunk_size": "500", "target_length": 300}, "chunk_size must be an integer"),
        ({"text": "Hi.", "chunk_size": 500.0, "target_length": 300}, "chunk_size must be an integer"),
        ({"text": "Hi.", "chunk_size": True, "target_length": 300}, "chunk_size must be an integer"),
        (
            {"text": "Hi.", "chunk_size": 500, "target_length": 19},
            "target_length must be between 20 and 100000",
        ),
        ({"text": "Hi.", "chunk_size": 500, "target_length": 100_001}, "target_length must be between"),
        ({"text": "Hi.", "chunk_size": 500, "target_length": -1}, "target_length must be between"),
        ({"text": "Hi.", "chunk_size": 500, "target_length": "300"}, "target_length must be an integer"),
    ],
)
def test_bad_input_fails_at_split(graph, state, message):
    # GIVEN an initial state with a missing, mistyped or out-of-range input
    # WHEN the workflow runs
    result = run_graph_sync(graph, state, sleep=None)
    # THEN it fails at split, before any work, with a ValueError that names the input
    assert result.status == "failed"
    assert result.error["node"] == "split" and result.error["type"] == "ValueError"
    assert message in result.error["message"]


@pytest.mark.parametrize(
    ("state", "defaults"),
    [
        ({}, {"chunk_size": 500, "target_length": 300}),
        ({"chunk_size": None}, {"chunk_size": 500, "target_length": 300}),
        ({"chunk_size": 80}, {"target_length": 300}),
        ({"target_length": 120}, {"chunk_size": 500}),
    ],
)
def test_chunk_size_and_target_length_default_to_500_and_300(graph, state, defaults):
    # GIVEN the seed's state, just {"text": ...}, with or without either setting
    text = long_text(paragraphs=4)

    # WHEN the workflow runs
    result = run_graph_sync(graph, {"text": text, **state}, sleep=None)

    # THEN it completes within the target, and the state shows the defaults it used
    assert result.status == "completed", result.error
    settings = {**defaults, **{k: v for k, v in state.items() if v is not None}}
    assert {k: result.state[k] for k in ("chunk_size", "target_length")} == settings
    assert len(result.state["summary"]) <= settings["target_length"]
    assert result.logs[0]["result"].keys() >= defaults.keys()


def test_a_5_mb_text_is_summarized(graph):
    # GIVEN a 5 MB text (over the state's 256 KiB cap: its large values are offloaded)
    text = " ".join(long_text(paragraphs=200) for _ in range(80))
    assert len(text.encode()) > 5_000_000
    # WHEN the workflow runs with the largest chunks
    result = summarize(graph, text, chunk_size=100_000, target_length=300)
    # THEN it completes within the target
    assert result.status == "completed", result.error
    assert 0 < len(result.state["summary"]) <= 300


def test_a_text_over_the_limit_is_refused_up_front():
    state = MappingProxyType({"text": "a" * (MAX_TEXT_BYTES + 1)})
    with pytest.raises(ValueError, match=f"the limit is {MAX_TEXT_BYTES}"):
        asyncio.run(split_text(state, None))


@pytest.mark.parametrize(("chunk_size", "target_length"), [(50, 20), (100_000, 100_000)])
def test_range_limits_are_accepted(graph, chunk_size, target_length):
    # GIVEN the smallest and largest settings allowed
    text = "A first sentence about rivers. A second sentence about rivers and lakes."
    # WHEN the workflow runs
    result = summarize(graph, text, chunk_size=chunk_size, target_length=target_length)
    # THEN it completes within the target
    assert result.status == "completed"
    assert len(result.state["summary"]) <= target_length


def test_refine_without_merge_says_what_is_missing():
    # GIVEN a state that never went through merge
    state = MappingProxyType({"target_length": 100, "sentences": ["A."]})
    # WHEN refine runs on it
    # THEN it names the missing key and the tool that writes it
    with pytest.raises(ValueError, match="state has no 'summary': run merge_summaries first"):
        asyncio.run(refine_summary(state, None))


# -- helpers ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("One. Two! Three? Four…", ["One.", "Two!", "Three?", "Four…"]),
        ("Dr. Smith met Mr. J. R. Jones. They talked.", ["Dr. Smith met Mr. J. R. Jones.", "They talked."]),
        ("Use tools, e.g. a hammer. Pi is 3.14 today.", ["Use tools, e.g. a hammer.", "Pi is 3.14 today."]),
        ('"Really?" she asked. "Yes!" He left.', ['"Really?" she asked.', '"Yes!"', "He left."]),
        ("It was approx. five miles. Then rain.", ["It was approx. five miles.", "Then rain."]),
        ("Wait... Then it ended.", ["Wait...", "Then it ended."]),
        ("A line that wraps\nonto the next. New one.", ["A line that wraps onto the next.", "New one."]),
        ("Title\n\nBody text here", ["Title", "Body text here"]),
        ("Steps:\n- mix flour\n- bake it", ["Steps:", "- mix flour", "- bake it"]),
        ("今日は晴れです。明日は雨です！本当？", ["今日は晴れです。", "明日は雨です！", "本当？"]),
        ("「本当？」と彼は言った。はい。", ["「本当？」と彼は言った。", "はい。"]),
        ("Visit example.com for more. Thanks.", ["Visit example.com for more.", "Thanks."]),
        ("no punctuation at all", ["no punctuation at all"]),
    ],
)
def test_split_sentences(text, expected):
    # GIVEN a text with tricky punctuation / WHEN it is split / THEN sentences are as a reader sees them
    assert split_sentences(text) == expected


def test_truncate_cuts_at_a_word_boundary():
    # GIVEN text longer than the limit / WHEN truncated / THEN whole words, "…", within the limit
    assert truncate("The quick brown fox jumps over the lazy dog", 20) == "The quick brown fox…"
    assert truncate("Fits as it is.", 20) == "Fits as it is."
    assert truncate("今日は晴れです明日は雨です", 8) == "今日は晴れです…"
    assert truncate("x" * 50, 20) == "x" * 19 + ELLIPSIS


def test_length_ok_compares_summary_with_target():
    # GIVEN the registered condition / WHEN evaluated / THEN it holds exactly when the summary fits
    length_ok = default_registry.get_condition("length_ok").fn
    assert length_ok({"summary": "abc", "target_length": 3})
    assert not length_ok({"summary": "abcd", "target_length": 3})


# -- properties -------------------------------------------------------------------------------
_words = st.text(st.characters(categories=("Lu", "Ll", "Lo", "Nd")), min_size=1, max_size=12)
_sentences = st.builds(
    lambda words, mark: " ".join(words) + mark,
    st.lists(_words, min_size=1, max_size=25),
    st.sampled_from([".", "!", "?", "…", "。", ""]),
)
_texts = st.builds(
    lambda paragraphs: "\n\n".join(" ".join(p) for p in paragraphs),
    st.lists(st.lists(_sentences, min_size=1, max_size=8), min_size=1, max_size=6),
)
_property = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_property
@given(text=_texts, chunk_size=st.integers(50, 2000), target=st.integers(20, 1000))
def test_any_text_of_sentences_fits_the_target(graph, text, chunk_size, target):
    # GIVEN random sentences in random paragraphs, any allowed chunk_size and target_length
    # WHEN summarized
    result = summarize(graph, text, chunk_size=chunk_size, target_length=target)
    # THEN the run completes with whole sentences in order, within the target
    assert result.status == "completed", result.error
    assert len(result.state["summary"]) <= target
    assert_extractive_in_order(result, text)


@_property
@given(text=st.text(min_size=1).filter(str.strip), target=st.integers(20, 200))
def test_arbitrary_text_fits_the_target(graph, text, target):
    # GIVEN any non-blank string at all
    # WHEN summarized
    result = summarize(graph, text, chunk_size=50, target_length=target)
    # THEN the run still completes within the target
    assert result.status == "completed", result.error
    assert len(result.state["summary"]) <= target
