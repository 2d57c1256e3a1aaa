"""Extractive QA (mrc): CMRC2018 reading with windows and answer repair, the span search, CMRC2018's EM / F1 against
hand counts, a tiny model that learns, and UER-py's prediction file."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from span_fixtures import eval_loss, make_task, predict_all, train
from uer_ray.finetune.data import read_split
from uer_ray.finetune.tasks import DataError
from uer_ray.finetune.tasks.base import char_ids
from uer_ray.finetune.tasks.mrc import best_spans, cmrc_em, cmrc_f1, mixed_segmentation

SEQ = 128
OPTIONS = {"name": "mrc", "max_query_length": 32, "doc_stride": 64, "max_answer_length": 48}


@pytest.fixture()
def cmrc(data_dir):
    return data_dir / "datasets" / "test_data" / "cmrc"


@pytest.fixture()
def task():
    return make_task(OPTIONS, SEQ)[0]


def squad(*paragraphs):
    return {"version": "v1.0", "data": [{"paragraphs": list(paragraphs)}]}


def write(tmp_path, obj, name="dev.json"):
    path = tmp_path / name
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    return path


# reading -----------------------------------------------------------------------------------------------------------
def test_windows_cover_the_context_and_hold_the_answer(task, cmrc):
    data = task.read(cmrc / "train.json")
    assert data.examples.num_rows == 25 and data.features.num_rows > 100 and data.issues.count == 0
    features, examples = data.features.to_pylist(), data.examples.to_pylist()
    by_question, no_window = {}, []
    for f in features:
        by_question.setdefault(f["example_id"], []).append(f)
        assert len(f["src"]) <= SEQ and f["seg"].count(1) == f["context_start"]
    for example_id, windows in by_question.items():
        context = examples[example_id]["context"]
        offsets = [w["doc_offset"] for w in windows]
        assert offsets[0] == 0 and all(b - a == 64 for a, b in zip(offsets, offsets[1:]))
        assert offsets[-1] + windows[-1]["context_len"] == len(context)  # the last window reaches the end
        holding = [w for w in windows if w["start_position"] > 0]
        if not holding:  # an answer longer than the overlap of two windows may lie wholly in none: counted
            no_window.append(examples[example_id]["id"])
        for w in holding:
            answer = w["src"][w["start_position"] : w["end_position"] + 1]
            offset = w["start_position"] - w["context_start"] + w["doc_offset"]
            assert answer == char_ids(task.tokenizer, list(context[offset : offset + len(answer)]))
            assert context[offset : offset + len(answer)] in examples[example_id]["answers"]
        assert all(w["start_position"] == w["end_position"] == 0 for w in windows if w not in holding)
    assert 0 < len(no_window) == data.issues.repairs.counts["answer_in_no_window"] < 25
    assert f"{no_window[0]}: the " in data.issues.summary()


def test_cmrc2018_dev_misplaced_answers_are_moved(data_dir):
    task, _ = make_task({"name": "mrc"}, 512)  # defaults: max_query_length 64, doc_stride 128
    data = task.read(data_dir / "datasets" / "cmrc2018" / "dev.json")
    assert data.examples.num_rows == 3219 and data.issues.count == 0
    assert data.issues.repairs.counts == {"answer_start_moved": 3}
    assert "dev.json:DEV_101_QUERY_3: answer '灭司马家族': answer_start 175 -> 174" in data.issues.summary()
    row = data.examples.column("id").to_pylist().index("DEV_101_QUERY_3")
    assert data.examples.column("context")[row].as_py()[174:179] == "灭司马家族"
    assert len(data.examples.column("answers")[row].as_py()) == 3  # every gold text kept for scoring

    # the trained-on answers, as predictions through the windows: a perfect score
    features = data.features
    holds = features.column("start_position").to_numpy() > 0
    shift = features.column("doc_offset").to_numpy() - features.column("context_start").to_numpy()
    outputs = {"start": features.column("start_position").to_numpy() + shift,
               "end": features.column("end_position").to_numpy() + shift, "score": np.where(holds, 0.0, -1.0)}
    assert task.score(outputs, data) == {"em": 1.0, "f1": 1.0}


def test_bad_questions_are_skipped_with_their_id(task, tmp_path):
    context = "北京大学创建于1898年，初名京师大学堂。"
    path = write(tmp_path, squad(
        {"context": context, "qas": [
            {"id": "Q1", "question": "北京大学何时创建？", "answers": [{"text": "1898年", "answer_start": 7}]},
            {"id": "Q2", "question": "初名什么？", "answers": [{"text": "京师大学堂", "answer_start": 3}]},
            {"id": "Q3", "question": "在哪？", "answers": [{"text": "上海", "answer_start": 0}]},
            {"id": "Q4", "question": "初名？", "answers": [{"text": "清华", "answer_start": 0},
                                                          {"text": "京师大学堂", "answer_start": 15}]},
            {"id": "Q1", "question": "重复？", "answers": [{"text": "北京", "answer_start": 0}]},
            {"question": "没有 id", "answers": [{"text": "北京", "answer_start": 0}]},
        ]},
        {"qas": []},
    ))
    data = task.read(path)
    assert data.examples.column("id").to_pylist() == ["Q1", "Q2", "Q4"]
    assert data.issues.log.counts == {"answer_not_found": 1, "duplicate_id": 1, "malformed_question": 1,
                                      "malformed_paragraph": 1}
    assert data.issues.repairs.counts == {"answer_start_moved": 1, "answer_not_in_context": 1}
    summary = data.issues.summary()
    for expected in ("dev.json:Q3: no answer text occurs in the context (first: '上海')",
                     "dev.json:Q1: question id 'Q1' seen before", "dev.json:data[0].paragraphs[0].qas[5]",
                     "dev.json:data[0].paragraphs[1]", "dev.json:Q2: answer '京师大学堂': answer_start 3 -> 15",
                     "dev.json:Q4: answer(s) 0..0 not in the context"):
        assert expected in summary
    starts = {f["example_id"]: f["start_position"] - f["context_start"] for f in data.features.to_pylist()}
    assert starts == {0: 7, 1: 15, 2: 15}


def test_malformed_json_names_the_line(task, tmp_path):
    path = write(tmp_path, '{"data": [\n  {"paragraphs": [\n    {"context": "文本",\n     "qas": [}\n]}]}\n')
    with pytest.raises(DataError, match=r"dev.json:4: not valid JSON"):
        task.read(path)
    with pytest.raises(DataError, match="expected SQuAD-style JSON"):
        task.read(write(tmp_path, "[1, 2]"))


def test_unlabelled_file_ignores_answers(task, cmrc):
    data = task.read(cmrc / "test.json", labelled=False)  # its answers are placeholders (FAKE_ANSWER_1, start -1)
    assert data.examples.num_rows == 5 and data.issues.count == 0
    assert "start_position" not in data.features.column_names and "answers" not in data.examples.column_names


def test_hidden_answers_make_a_test_file_predicted_not_scored(task, cmrc):
    said = []
    data = read_split(task, str(cmrc / "test.json"), 0.1, progress=said.append, labelled=None)
    assert not data.labelled and data.examples.num_rows == 5
    assert len(said) == 1 and "FAKE_ANSWER_1" in said[0] and "not scored" in said[0]


# span search and metric --------------------------------------------------------------------------------------------
def test_best_span_stays_in_context_ordered_and_short():
    start = torch.tensor([[0, 9, 1, 5, 0, 0], [0, 0, 0, 0, 8, 0]], dtype=torch.float)
    end = torch.tensor([[0, 0, 5, 2, 3, 9], [0, 7, 0, 0, 0, 0]], dtype=torch.float)
    context_start, context_len = torch.tensor([2, 1]), torch.tensor([3, 4])
    # row 0: context = positions 2..4; start 9 at 1 (question) and end 9 at 5 ([SEP]) are outside. Pairs (start, end)
    # score start + end: (2,2) 6, (2,3) 3, (2,4) 4, (3,3) 7, (3,4) 8, (4,4) 3 -> (3,4); at most 1 long -> (3,3).
    # row 1: context 1..4; end 7 at 1 lies before the best start 4: (4,4) 8 beats (1,1) 7.
    first, last, score = best_spans(start, end, context_start, context_len, max_answer_length=2)
    assert first.tolist() == [3, 4] and last.tolist() == [4, 4]
    log_start, log_end = start.log_softmax(-1), end.log_softmax(-1)
    assert score[0].item() == pytest.approx((log_start[0, 3] + log_end[0, 4]).item())
    first, last, _ = best_spans(start, end, context_start, context_len, max_answer_length=1)
    assert first.tolist() == [3, 4] and last.tolist() == [3, 4]


def test_answer_is_the_best_window_of_its_question(tmp_path):
    task, _ = make_task({"name": "mrc", "max_query_length": 8, "doc_stride": 16}, 48)
    context = "".join(f"第{i}句话。" for i in range(30))
    data = task.read(write(tmp_path, squad({"context": context, "qas": [
        {"id": "A", "question": "哪句？", "answers": [{"text": "第3句话", "answer_start": context.index("第3句话")}]},
        {"id": "B", "question": "哪句？", "answers": [{"text": "第9句话", "answer_start": context.index("第9句话")}]},
    ]})))
    example = data.features.column("example_id").to_numpy()
    offset = data.features.column("doc_offset").to_numpy()
    windows = int((example == 0).sum())
    assert windows > 3 and (example == 1).sum() == windows
    score = -np.arange(len(example), dtype=float)  # each question's first window scores best ...
    score[2] = 1.0  # ... but question A's third
    start, end = offset + 1, offset + 3
    answers = task.answers({"start": start, "end": end, "score": score}, data)
    assert answers == [context[start[2] : end[2] + 1], context[start[windows] : end[windows] + 1]]


@pytest.mark.parametrize("answers, prediction, em, f1", [
    (["北京大学"], "北京", 0.0, 2 / 3),  # segments 北 京 大 学 / 北 京: common 2, P 1, R 1/2 -> F1 2/3
    (["北京大学"], "北大学京", 0.0, 0.5),  # the common run is contiguous: 大 学, P 2/4, R 2/4
    (["《红楼梦》"], "红楼梦", 1.0, 1.0),  # 《 》 are removed
    (["Bill Gates"], "bill gates founded", 0.0, 0.8),  # English words: bill gates / bill gates founded, P 2/3, R 1
    (["1990年"], "1990", 0.0, 2 / 3),  # 1990 + 年 / 1990: P 1, R 1/2
    (["上海", "北京大学"], "北京", 0.0, 2 / 3),  # the best gold answer counts
    (["北京"], "", 0.0, 0.0),
])
def test_cmrc_metric_hand_computed(answers, prediction, em, f1):
    assert cmrc_em(answers, prediction) == em
    assert cmrc_f1(answers, prediction) == pytest.approx(f1)


def test_mixed_segmentation_splits_chinese_characters_and_english_words():
    assert mixed_segmentation("IMAX 3D电影，票价3.5元") == ["imax", "3d", "电", "影", "，", "票", "价", "3.5", "元"]
    assert mixed_segmentation("IMAX 3D电影，", drop_punctuation=True) == ["imax", "3d", "电", "影"]


# training, prediction, scoring, the prediction file ----------------------------------------------------------------
def test_tiny_model_learns_and_predictions_round_trip(cmrc, tmp_path):
    task, job = make_task(OPTIONS, SEQ)
    train_data, dev = task.read(cmrc / "train.json"), task.read(cmrc / "dev.json")
    torch.manual_seed(0)
    model = task.build_model(job.model)
    held = train_data.features.slice(0, 64)
    before = eval_loss(task, model, held)
    train(task, model, train_data.features, steps=30, lr=5e-3)
    assert eval_loss(task, model, held) < 0.5 * before

    outputs = predict_all(task, model, dev.features)
    assert set(outputs) == {"start", "end", "score"} and len(outputs["score"]) == dev.features.num_rows
    assert (outputs["end"] >= outputs["start"]).all() and (outputs["end"] - outputs["start"] < 48).all()
    scores = task.score(outputs, dev)
    assert set(scores) == {"em", "f1"} and task.metric == "f1" and 0 <= scores["em"] <= scores["f1"] <= 1

    path = tmp_path / "prediction.json"
    task.write_predictions(outputs, dev, path)
    written = json.loads(path.read_text(encoding="utf-8"))
    assert list(written) == dev.examples.column("id").to_pylist()
    contexts, gold = dev.examples.column("context").to_pylist(), dev.examples.column("answers").to_pylist()
    assert all(text and text in context for text, context in zip(written.values(), contexts))
    assert np.mean([cmrc_f1(g, p) for g, p in zip(gold, written.values())]) == pytest.approx(scores["f1"])
