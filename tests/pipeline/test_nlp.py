"""spaCy loading, the memoised post-parse annotation (exactness) and the parse cache."""

from __future__ import annotations

import pytest

from negforge import nlp
from negforge.errors import MissingModelError
from negforge.post_parse import PostParse
from negforge.readers import read_queries

SAMPLE_TEXTS = [
    "person opens the door.",
    "let's see, the man is gon na open it.",
    "there is a person sitting on a chair.",
    "y'all ai n't going to believe this!",
    "  A woman is outside, shoveling snow.",
    " When he is done, he rides away.",  # the parser makes this space a ROOT; the ruler: dep
    "person opens the door.",
]


@pytest.fixture(scope="module")
def pipeline() -> nlp.LoadedPipeline:
    return nlp.load_pipeline()


def test_default_model_resolves_and_missing_model_says_how_to_install():
    info = nlp.resolve_model()
    assert info.requested == "en_core_web_sm"
    assert info.name.startswith("en_core_web_sm") and info.version != "unknown"
    with pytest.raises(MissingModelError) as caught:
        nlp.resolve_model("xx_no_such_pipeline")
    message = str(caught.value)
    assert "\n" not in message and "python -m spacy download en_core_web_sm" in message


def test_loaded_pipeline_has_tagger_and_parser_but_no_ner(pipeline):
    language = pipeline.nlp
    assert {"tagger", "parser", "attribute_ruler", "lemmatizer"} <= set(language.pipe_names)
    assert "ner" not in language.pipe_names


def test_memoised_post_parse_equals_the_full_pipeline(repo_root):
    import spacy

    language = spacy.load(nlp.resolve_model().load_target, exclude=["ner"])
    post = PostParse(language)  # a fresh memo: everything below is learnt from these texts
    texts = SAMPLE_TEXTS + [
        r.query for r in read_queries(
            repo_root / "negforge" / "sample_data" / "sample_queries.jsonl").records
    ]
    fast = nlp.parse_with(language, texts, post=post)
    full = [nlp.doc_tokens(doc) for doc in language.pipe(texts)]
    assert fast == full
    assert post.enabled and post.fine and post.coarse  # the fast path was really used
    assert len(post.coarse) < len(post.fine)
    # multi-token attribute-ruler patterns ("gon na", "let 's", "there is") were seen
    assert post.trigger_keys


def test_lemma_index_sets_give_the_same_lemmas_as_the_shipped_lists(pipeline, repo_root):
    import spacy

    pristine = spacy.load(pipeline.model.load_target, exclude=["ner"])
    table = pristine.get_pipe("lemmatizer").lookups.get_table("lemma_index")
    assert any(isinstance(v, list) for v in table.values())  # as shipped
    texts = SAMPLE_TEXTS + [
        r.query for r in read_queries(
            repo_root / "negforge" / "sample_data" / "sample_queries.jsonl").records
    ]
    assert pipeline.parse(texts) == [nlp.doc_tokens(d) for d in pristine.pipe(texts)]


def test_unknown_layouts_fall_back_to_running_every_component():
    import spacy

    blank = spacy.blank("en")
    post = PostParse(blank)
    assert not post.enabled
    assert nlp.parse_with(blank, ["a b ."], post=post) == [[("a", "", "", ""), ("b", "", "", ""),
                                                 (".", "", "", "")]]


def test_parse_cache_round_trip(tmp_path):
    texts = SAMPLE_TEXTS[:3]
    first = nlp.parse_texts(texts, cache_dir=tmp_path)
    assert not first.cache_hit and first.cache_path is not None and first.cache_path.is_file()
    again = nlp.parse_texts(texts, cache_dir=tmp_path)
    assert again.cache_hit and again.tokens == first.tokens
    # nothing is kept in memory behind the caller's back: another folder parses again
    elsewhere = nlp.parse_texts(texts, cache_dir=tmp_path / "elsewhere")
    assert not elsewhere.cache_hit and elsewhere.tokens == first.tokens
    other = nlp.parse_texts(texts[:2], cache_dir=tmp_path)
    assert not other.cache_hit and other.tokens == first.tokens[:2]
    # a damaged cache file is ignored (re-parsed), not trusted
    first.cache_path.write_bytes(b"garbage")
    assert not nlp.parse_texts(texts, cache_dir=tmp_path).cache_hit


@pytest.mark.shared
def test_memoised_post_parse_equals_the_full_pipeline_on_activitynet(pipeline, shared_dir):
    # the first 3,000 ActivityNet-CG training sentences: leading spaces, varied vocabulary
    path = shared_dir / "data" / "visa" / "activitynet_cg" / "train.json"
    texts = [r.query for r in read_queries(path, on_error="skip").records[:3000]]
    assert pipeline.parse(texts) == [nlp.doc_tokens(d) for d in pipeline.nlp.pipe(texts)]


def test_normalise_text_adds_the_space_after_a_glued_stop():
    assert nlp.normalise_text("closes the door.the person stops.") == (
        "closes the door. the person stops."
    )
    assert nlp.normalise_text("sits in a chair .the person") == "sits in a chair. the person"
    assert nlp.normalise_text("a laptop,after a.") == "a laptop, after a."
    for unchanged in ("e.g. a.m. u.s.a.", "person opens the door.", "a person .", "door. the"):
        assert nlp.normalise_text(unchanged) == unchanged
