"""Multiple choice (C3): reading a slice of the real dev file, padded and masked choices, bad questions skipped with
their id, a tiny model that learns, and UER-py's prediction file."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from span_fixtures import eval_loss, make_task, predict_all, train
from uer_ray.finetune.tasks import DataError

SEQ = 64


@pytest.fixture()
def c3(data_dir):
    return data_dir / "datasets" / "c3"


def write(tmp_path, obj, name="dev.json"):
    path = tmp_path / name
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    return path


def dev_slice(c3, tmp_path, start: int, stop: int):
    items = json.loads((c3 / "dev.json").read_text(encoding="utf-8"))[start:stop]
    return items, write(tmp_path, items)


def test_reads_c3_with_padded_and_masked_choices(c3, tmp_path):
    task, _ = make_task({"name": "choice"}, SEQ)
    items, path = dev_slice(c3, tmp_path, 0, 60)
    questions = [(doc, q, f"{doc_id}-{j}") for doc, qs, doc_id in items for j, q in enumerate(qs)]
    data = task.read(path)
    assert data.features.num_rows == len(questions) and data.issues.count == 0
    assert {len(q["choice"]) for _, q, _ in questions} >= {3, 4}  # the slice has questions with fewer choices
    vocab, encode = task.tokenizer.vocab, task.tokenizer.encode
    cut = 0
    for i, (doc, q, qid) in enumerate(questions):
        src, seg = data.features.column("src")[i].as_py(), data.features.column("seg")[i].as_py()
        mask = data.features.column("choice_mask")[i].as_py()
        assert len(src) == 4 and mask == [1] * len(q["choice"]) + [0] * (4 - len(q["choice"]))
        assert data.features.column("label")[i].as_py() == q["choice"].index(q["answer"])
        assert json.loads(data.examples.column("id_json")[i].as_py()) == qid
        whole, was_cut = encode("\n".join(doc)), False
        for choice, tokens, segments in zip(q["choice"], src, seg):
            head = [vocab.cls_id, *encode(choice), vocab.sep_id, *encode(q["question"]), vocab.sep_id]
            document = whole[: SEQ - len(head) - 1]
            assert tokens == head + document + [vocab.sep_id] and len(tokens) <= SEQ
            assert segments == [1] * len(head) + [2] * (len(document) + 1)
            was_cut |= len(document) < len(whole)
        assert all(tokens == [vocab.cls_id, vocab.sep_id] for tokens in src[len(q["choice"]):])
        cut += was_cut
    assert data.issues.repairs.counts == {"document_cut": cut} and 0 < cut < len(questions)


def test_bad_questions_are_skipped_with_their_id(c3, tmp_path):
    task, _ = make_task({"name": "choice"}, SEQ)
    document = ["男：你去哪儿？", "女：我去图书馆。"]
    path = write(tmp_path, [
        [document, [
            {"question": "女的去哪儿？", "choice": ["商店", "图书馆"], "answer": "图书馆"},
            {"question": "女的去哪儿？", "choice": ["商店", "医院"], "answer": "图书馆"},
            {"question": "女的去哪儿？", "choice": ["a", "b", "c", "d", "e"], "answer": "a"},
            {"question": "女的去哪儿？", "choice": []},
        ], "d1"],
        ["not a document", [], "d2"],
    ])
    data = task.read(path)
    assert json.loads(data.examples.column("id_json")[0].as_py()) == "d1-0" and data.features.num_rows == 1
    assert data.issues.log.counts == {"answer_not_in_choices": 1, "too_many_choices": 1, "malformed_question": 1,
                                      "malformed_item": 1}
    summary = data.issues.summary()
    for expected in ("dev.json:d1-1: answer '图书馆' is not one of ['商店', '医院']",
                     "dev.json:d1-2: 5 choices, more than max_choices 4", "dev.json:d1-3: expected a 'question'",
                     "dev.json:item 1: expected [list of document lines"):
        assert expected in summary
    with pytest.raises(DataError, match=r"dev.json:3: not valid JSON"):
        task.read(write(tmp_path, '[\n  [["文"],\n   [{"question": "?", "choice": ["a"],}]\n]'))
    with pytest.raises(DataError, match="expected C3 JSON"):
        task.read(write(tmp_path, {"data": []}))


def test_tiny_model_learns_and_predictions_round_trip(c3, tmp_path):
    task, job = make_task({"name": "choice"}, SEQ)
    _, path = dev_slice(c3, tmp_path, 0, 40)
    data = task.read(path)
    torch.manual_seed(0)
    model = task.build_model(job.model)
    before = eval_loss(task, model, data.features)
    train(task, model, data.features, steps=30, lr=5e-3)
    assert eval_loss(task, model, data.features) < 0.7 * before

    outputs = predict_all(task, model, data.features)
    mask = np.array(data.features.column("choice_mask").to_pylist())
    assert outputs["prob"].shape == mask.shape and (outputs["prob"][mask == 0] == 0).all()
    assert np.allclose(outputs["prob"].sum(1), 1) and (mask[np.arange(len(mask)), outputs["pred"]] == 1).all()
    scores = task.score(outputs, data)
    assert task.metric == "acc" and scores["acc"] > 0.5  # the questions it was trained on

    out = tmp_path / "prediction.jsonl"
    task.write_predictions(outputs, data, out)
    written = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    gold = data.features.column("label").to_pylist()
    assert [w["id"] for w in written] == [json.loads(i) for i in data.examples.column("id_json").to_pylist()]
    assert np.mean([w["label"] == g for w, g in zip(written, gold)]) == pytest.approx(scores["acc"])


def test_unlabelled_test_file_keeps_integer_ids(c3, tmp_path):
    task, job = make_task({"name": "choice"}, SEQ)
    items = json.loads((c3 / "test.json").read_text(encoding="utf-8"))[:10]
    data = task.read(write(tmp_path, items, "test.json"), labelled=False)
    assert "label" not in data.features.column_names and data.issues.count == 0
    torch.manual_seed(0)
    outputs = predict_all(task, task.build_model(job.model), data.features)
    task.write_predictions(outputs, data, tmp_path / "out.jsonl")
    written = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [w["id"] for w in written] == [q["id"] for _, qs in items for q in qs]  # C3's own integer ids
    assert all(isinstance(w["label"], int) for w in written)
