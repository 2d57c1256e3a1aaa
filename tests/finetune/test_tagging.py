"""Sequence labeling (tagging): reading MSRA NER, the CRF against brute force, entity F1 against hand counts and
seqeval, a tiny model that learns, and UER-py's prediction file."""
from __future__ import annotations

import itertools
import json
import random

import numpy as np
import pytest
import torch
from seqeval.metrics import f1_score, precision_score, recall_score

from span_fixtures import eval_loss, make_task, predict_all, train
from uer_ray.finetune.tasks import DataError, TaskData
from uer_ray.finetune.tasks.tagging import CRF, entity_chunks, entity_scores

SEQ = 64


@pytest.fixture()
def msra(data_dir):
    return data_dir / "datasets" / "test_data" / "msra_ner"


@pytest.fixture()
def label2id(data_dir):
    return str(data_dir / "datasets" / "msra_ner" / "label2id.json")


def rows_of(path):
    lines = path.read_text(encoding="utf-8").splitlines()[1:]
    return [line.split("\t") for line in lines]


def write(tmp_path, text, name="data.tsv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# reading -----------------------------------------------------------------------------------------------------------
def test_reads_msra_one_token_per_character(msra, label2id):
    task, _ = make_task({"name": "tagging", "label2id_path": label2id}, SEQ)
    data = task.read(msra / "train.tsv")
    rows = rows_of(msra / "train.tsv")
    assert data.features.num_rows == len(rows) == 1000 and data.issues.count == 0
    vocab, l2i = task.tokenizer.vocab, json.loads(open(label2id).read())
    for i in (0, 1, 500):
        chars, tags = rows[i][0].split(" "), rows[i][1].split(" ")
        assert data.features.column("src")[i].as_py() == [vocab.token_to_id(c) for c in chars][:SEQ]
        assert data.features.column("tgt")[i].as_py() == [l2i[t] for t in tags][:SEQ]
        assert data.examples.column("tags")[i].as_py() == tags  # the whole gold sequence, for scoring
    long_rows = sum(len(r[0].split(" ")) > SEQ for r in rows)
    assert long_rows > 0 and data.issues.repairs.counts == {"cut_to_seq_length": long_rows}
    assert f"{long_rows} repair(s): cut_to_seq_length" in data.issues.summary()


def test_characters_are_never_split_into_subwords(tmp_path, label2id):
    task, _ = make_task({"name": "tagging", "label2id_path": label2id}, SEQ)
    data = task.read(write(tmp_path, "text_a\tlabel\nI B M 在 1990 年 ☃\tB-ORG I-ORG I-ORG O O O O\n"))
    vocab = task.tokenizer.vocab
    src = data.features.column("src")[0].as_py()
    assert len(src) == 7  # one id per given character, whatever the BERT tokenizer would make of "1990"
    assert src[:4] == [vocab.token_to_id(c) for c in ("i", "b", "m", "在")]  # uncased vocabulary: lower-cased
    assert src[4] == vocab.token_to_id("1990") and src[6] == vocab.unk_id


def test_bad_rows_are_skipped_and_counted_with_their_line(tmp_path, label2id):
    task, _ = make_task({"name": "tagging", "label2id_path": label2id}, SEQ)
    path = write(tmp_path, (
        "text_a\tlabel\n"
        "我 在 北 京\tO O B-LOC I-LOC\n"
        "我 在 北 京\tO O B-LOC\n"
        "他 去 上 海\tO O B-CITY I-CITY\n"
        "他  去\tO O O\n"
        "只 有 一 列\n"
        "北 京\tB-LOC I-LOC\n"
    ))
    data = task.read(path)
    assert data.features.num_rows == 2 and data.examples.column("line").to_pylist() == [2, 7]
    assert data.issues.log.counts == {"tag_count_mismatch": 1, "unknown_tag": 1, "empty_character": 1,
                                      "wrong_column_count": 1}
    summary = data.issues.summary()
    for expected in ("data.tsv:3: 3 tags for 4 characters", "data.tsv:4: tag(s) 'B-CITY', 'I-CITY' not among",
                     "data.tsv:5: empty text or two spaces", "data.tsv:6: expected 2 tab-separated columns"):
        assert expected in summary
    with pytest.raises(DataError, match="4 of 6 rows are unusable"):
        data.issues.check(data.features.num_rows, max_bad_fraction=0.1)


def test_tags_inferred_from_training_file_o_first(msra, tmp_path):
    task, job = make_task({"name": "tagging"}, SEQ)
    train_data = task.read(msra / "train.tsv")
    assert "tgt" not in train_data.features.column_names
    task.fit_labels(train_data)
    assert job.finetune.task.labels == ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    first = train_data.examples.column("tags")[0].as_py()
    assert train_data.features.column("tgt")[0].as_py() == [job.finetune.task.labels.index(t) for t in first][:SEQ]
    dev = task.read(write(tmp_path, "text_a\tlabel\n北 京\tB-LOC I-LOC\n东 京\tB-GPE I-GPE\n"))
    assert dev.features.column("tgt").to_pylist() == [[1, 2]] and dev.issues.log.counts == {"unknown_tag": 1}


def test_label2id_with_gaps_is_refused(tmp_path):
    path = write(tmp_path, json.dumps({"O": 0, "B-PER": 2}), "label2id.json")
    with pytest.raises(DataError, match=r"tag ids must be 0..1, each once; found \[0, 2\]"):
        make_task({"name": "tagging", "label2id_path": str(path)}, SEQ)


# entity F1 ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tags, chunks", [
    (["B-PER", "I-PER", "O", "B-LOC"], {("PER", 0, 1), ("LOC", 3, 3)}),
    (["I-PER", "I-PER", "O"], {("PER", 0, 1)}),  # an I- after O opens an entity (conlleval)
    (["B-PER", "I-LOC", "I-LOC"], {("PER", 0, 0), ("LOC", 1, 2)}),  # a change of type closes one and opens one
    (["O", "I-ORG", "B-ORG", "I-ORG"], {("ORG", 1, 1), ("ORG", 2, 3)}),  # B- always opens a new entity
    (["B-LOC", "B-LOC", "I-LOC"], {("LOC", 0, 0), ("LOC", 1, 2)}),
    (["O", "O"], set()),
])
def test_entity_chunks_follow_conlleval(tags, chunks):
    assert entity_chunks(tags) == chunks


def test_entity_scores_hand_computed():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "I-ORG", "I-ORG", "O"]]
    pred = [["I-PER", "I-PER", "O", "I-LOC"], ["B-ORG", "I-LOC", "I-ORG", "O"]]
    # sentence 1: gold PER(0,1) LOC(3,3); predicted (ill-formed I- openers) PER(0,1) LOC(3,3): 2 correct of 2
    # sentence 2: gold ORG(0,2); predicted ORG(0,0) LOC(1,1) ORG(2,2): 0 correct of 3
    # precision 2/5 = 0.4, recall 2/3, F1 = 2 * 0.4 * 2/3 / (0.4 + 2/3) = (8/15) / (16/15) = 0.5
    scores = entity_scores(gold, pred)
    assert scores["precision"] == pytest.approx(0.4) and scores["recall"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx(0.5)
    assert_matches_seqeval(gold, pred)
    assert entity_scores([["O"]], [["O"]]) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}


def assert_matches_seqeval(gold, pred):
    scores = entity_scores(gold, pred)
    assert scores["precision"] == pytest.approx(precision_score(gold, pred))
    assert scores["recall"] == pytest.approx(recall_score(gold, pred))
    assert scores["f1"] == pytest.approx(f1_score(gold, pred))


def test_entity_scores_match_seqeval_on_corrupted_msra(data_dir):
    gold = [row[1].split(" ") for row in rows_of(data_dir / "datasets" / "msra_ner" / "dev.tsv")]
    tags = sorted({t for row in gold for t in row})
    rng = random.Random(0)
    pred = [[rng.choice(tags) if rng.random() < 0.1 else t for t in row] for row in gold]  # ill-formed I- included
    assert sum(p[i].startswith("I-") and (i == 0 or p[i - 1] == "O") for p in pred for i in range(len(p))) > 100
    assert 0.3 < entity_scores(gold, pred)["f1"] < 0.9
    assert_matches_seqeval(gold, pred)


# CRF ---------------------------------------------------------------------------------------------------------------
def test_crf_matches_brute_force():
    torch.manual_seed(0)
    tags_num, lengths = 3, [4, 2, 1]
    crf = CRF(tags_num)
    with torch.no_grad():
        for parameter in crf.parameters():
            parameter.normal_()
    emissions = torch.randn(len(lengths), max(lengths), tags_num)
    mask = torch.arange(max(lengths))[None] < torch.tensor(lengths)[:, None]
    gold = torch.randint(0, tags_num, mask.shape).masked_fill(~mask, -100)
    nll, best = crf.nll(emissions, gold, mask), crf.decode(emissions, mask)

    def path_score(b, path):
        score = crf.start[path[0]] + crf.end[path[-1]] + sum(emissions[b, t, tag] for t, tag in enumerate(path))
        return score + sum(crf.transitions[a, c] for a, c in zip(path, path[1:]))

    for b, n in enumerate(lengths):
        paths = list(itertools.product(range(tags_num), repeat=n))
        scores = torch.stack([path_score(b, p) for p in paths])
        expected_nll = torch.logsumexp(scores, 0) - path_score(b, gold[b, :n].tolist())
        assert float(nll[b].detach()) == pytest.approx(float(expected_nll.detach()), abs=1e-5)
        assert best[b, :n].tolist() == list(paths[int(scores.argmax())]) and best[b, n:].eq(0).all()


# training, prediction, scoring, the prediction file ----------------------------------------------------------------
@pytest.mark.parametrize("crf", [False, True])
def test_tiny_model_learns_and_predictions_round_trip(msra, label2id, tmp_path, crf):
    task, job = make_task({"name": "tagging", "label2id_path": label2id, "crf": crf}, SEQ)
    train_data, dev = task.read(msra / "train.tsv"), task.read(msra / "dev.tsv")
    learnt = TaskData(train_data.features.slice(0, 32), train_data.examples.slice(0, 32), train_data.issues)
    torch.manual_seed(0)
    model = task.build_model(job.model)
    before = eval_loss(task, model, learnt.features)
    train(task, model, learnt.features, steps=40, lr=1e-2)
    assert eval_loss(task, model, learnt.features) < 0.3 * before

    # sentences the model has fitted: real predictions with entities, right and wrong, some ill-formed
    outputs = predict_all(task, model, learnt.features)
    predicted = task.predicted_tags(outputs, learnt)
    assert len(set().union(*map(entity_chunks, predicted))) > 15
    gold = learnt.examples.column("tags").to_pylist()
    assert task.score(outputs, learnt) == entity_scores(gold, predicted)
    assert 0 < task.score(outputs, learnt)["f1"] < 1
    assert_matches_seqeval(gold, predicted)

    outputs = predict_all(task, model, dev.features)
    lengths = [len(c) for c in dev.features.column("src").to_pylist()]
    assert outputs["pred"].dtype == object and [len(p) for p in outputs["pred"]] == lengths
    path = tmp_path / "prediction.tsv"
    task.write_predictions(outputs, dev, path)
    lines = path.read_text(encoding="utf-8").splitlines()
    written = [line.split(" ") for line in lines[1:]]
    gold_rows = rows_of(msra / "dev.tsv")
    assert lines[0] == "pred_label" and len(written) == len(gold_rows)
    assert [len(p) for p in written] == [len(r[0].split(" ")) for r in gold_rows]  # a cut row's tail is O
    assert max(map(len, written)) > SEQ and set(itertools.chain(*written)) <= set(job.finetune.task.labels)
    assert entity_scores([r[1].split(" ") for r in gold_rows], written) == task.score(outputs, dev)


def test_unlabelled_file_predicts(msra, label2id, tmp_path):
    task, job = make_task({"name": "tagging", "label2id_path": label2id}, SEQ)
    data = task.read(msra / "test_nolabel.tsv", labelled=False)
    assert "tgt" not in data.features.column_names and data.features.num_rows == 50
    torch.manual_seed(0)
    outputs = predict_all(task, task.build_model(job.model), data.features)
    task.write_predictions(outputs, data, tmp_path / "out.tsv")
    assert len((tmp_path / "out.tsv").read_text(encoding="utf-8").splitlines()) == 51
