"""dbqa (answer selection): MAP / MRR by hand, against UER-py's own MRR loop and scikit-learn's ranking precision,
a realistic file read with bad rows counted, a tiny model whose loss falls, and a prediction file a user can rank."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import label_ranking_average_precision_score

from tests.finetune.sentence_tasks import fit, make_task, predict_all, read_tsv_rows, skipped, write_tsv
from uer_ray.finetune.tasks import DataError
from uer_ray.finetune.tasks.ranking import ranking_metrics

HEADER = ["qid", "label", "text_a", "text_b"]


def test_map_and_mrr_by_hand():
    qids = np.array(["a", "a", "b", "b", "b", "c", "c", "c", "d", "d"])
    labels = np.array([0, 1, 1, 0, 1, 0, 0, 0, 0, 1])
    scores = np.array([0.9, 0.1, 0.5, 0.6, 0.2, 0.3, 0.2, 0.1, 0.7, 0.7])
    # a: order 0.9 (neg), 0.1 (pos): positive at rank 2 -> AP 1/2, RR 1/2
    # b: order 0.6 (neg), 0.5 (pos), 0.2 (pos): ranks 2, 3 -> AP (1/2 + 2/3)/2 = 7/12, RR 1/2
    # c: no positive among 3 candidates: UER-py's RR 1/(3+1) = 1/4, and AP the same 1/4
    # d: the positive ties the negative at 0.7: it takes the tie's best rank, 1 (UER-py) -> AP 1, RR 1
    result = ranking_metrics(qids, labels, scores)
    assert result["map"] == pytest.approx((1 / 2 + 7 / 12 + 1 / 4 + 1) / 4)
    assert result["mrr"] == pytest.approx((1 / 2 + 1 / 2 + 1 / 4 + 1) / 4)


def uer_py_mrr(qids, labels, scores) -> float:
    """UER-py's run_dbqa evaluate(), transcribed: rows grouped by runs of equal qid, a question's reciprocal rank
    from the best-ranked positive, 1/(candidates + 1) when there is none."""
    reciprocal_rank = []
    starts = [0] + [i for i in range(1, len(qids)) if qids[i] != qids[i - 1]] + [len(qids)]
    for start, end in zip(starts[:-1], starts[1:]):
        question_scores = list(scores[start:end])
        correct = [i for i in range(end - start) if labels[start + i] == 1]
        sorted_scores = sorted(question_scores, reverse=True)
        if len(correct) == 1:
            for j in range(len(sorted_scores)):
                if sorted_scores[j] == question_scores[correct[0]]:
                    reciprocal_rank.append(1 / (j + 1))
        else:
            current_rank = len(question_scores)
            for i in range(len(correct)):
                for j in range(len(question_scores)):
                    if sorted_scores[j] == question_scores[correct[i]] and j < current_rank:
                        current_rank = j
            reciprocal_rank.append(1 / (current_rank + 1))
    return sum(reciprocal_rank) / len(reciprocal_rank)


def random_questions(rng, questions: int, with_answer_only: bool):
    sizes = rng.integers(2, 9, questions)
    qids = np.repeat(np.arange(questions), sizes)
    labels = (rng.random(len(qids)) < 0.3).astype(int)
    if with_answer_only:
        starts = np.cumsum(sizes) - sizes
        labels[starts + rng.integers(0, sizes)] = 1
    return qids, labels, rng.random(len(qids)), sizes


@pytest.mark.parametrize("seed", range(5))
def test_mrr_matches_uer_py(seed):
    qids, labels, scores, _ = random_questions(np.random.default_rng(seed), 60, with_answer_only=False)
    assert (np.bincount(qids, labels) == 0).any()  # some questions have no answer
    assert ranking_metrics(qids, labels, scores)["mrr"] == pytest.approx(uer_py_mrr(qids, labels, scores))


@pytest.mark.parametrize("seed", range(5))
def test_map_matches_scikit_learn(seed):
    qids, labels, scores, sizes = random_questions(np.random.default_rng(seed), 60, with_answer_only=True)
    bounds = np.cumsum(sizes)[:-1]
    per_question = [label_ranking_average_precision_score([y], [s])
                    for y, s in zip(np.split(labels, bounds), np.split(scores, bounds))]
    assert ranking_metrics(qids, labels, scores)["map"] == pytest.approx(np.mean(per_question))


def dbqa_rows(data_dir, questions: int) -> list[list]:
    """Each review's opening clause asks for its continuation among three candidates: its own rest (1) and the
    rests of the next two reviews (0)."""
    texts = [t for t in read_tsv_rows(data_dir / "datasets" / "test_data" / "chnsenticorp" / "train.tsv", "text_a")
             if "，" in t][: questions + 2]
    heads = [t.split("，", 1)[0] for t in texts]
    rests = [t.split("，", 1)[1] for t in texts]
    rows = []
    for q in range(questions):
        for offset in (0, 1, 2):
            rows.append([f"{q}", int(offset == 0), heads[q], rests[q + offset]])
    return rows


def test_dbqa_reads_and_skips_bad_rows(data_dir, tmp_path):
    task, _ = make_task(data_dir, {"name": "dbqa"})
    rows = dbqa_rows(data_dir, 8)  # 24 rows, lines 2..25
    rows[1][1] = 2  # line 3: out of range
    rows[4][1] = "是"  # line 6
    rows[7] = rows[7][:3]  # line 9: no text_b
    rows[10][0] = " "  # line 12: no qid
    data = task.read(write_tsv(tmp_path / "dev.tsv", HEADER, rows))
    assert data.features.num_rows == 20 and data.issues.count == 4
    for expected in ("dev.tsv:3: label 2 is outside 0..1", "dev.tsv:6: label '是' is not an integer",
                     "dev.tsv:9: expected 4 tab-separated columns", "dev.tsv:12: qid is empty"):
        assert expected in skipped(data.issues)
    assert data.examples.column("qid").to_pylist()[:3] == ["0", "0", "1"]
    seg = data.features.column("seg")[0].as_py()
    assert seg[0] == 1 and seg[-1] == 2  # question, then the candidate
    with pytest.raises(DataError, match="4 of 24 rows are unusable"):
        data.issues.check(data.features.num_rows, 0.1)
    with pytest.raises(DataError, match=r"dev.tsv:1: header .* lacks column\(s\) qid"):
        task.read(write_tsv(tmp_path / "dev.tsv", HEADER[1:], [row[1:] for row in dbqa_rows(data_dir, 2)]))


def test_dbqa_trains_ranks_and_writes_predictions(data_dir, tmp_path):
    task, job = make_task(data_dir, {"name": "dbqa"}, tokenizer_name="bert")
    path = write_tsv(tmp_path / "train.tsv", HEADER, dbqa_rows(data_dir, 40))
    data = task.read(path)
    model, before, after = fit(task, job, data, steps=80)
    assert after < 0.7 * before, (before, after)
    assert task.head_size() == 2 and task.metric == "map"

    outputs = predict_all(task, model, data)
    scores = task.score(outputs, data)
    assert set(scores) == {"map", "mrr", "acc", "macro_f1"}
    # ranking at random among 3 candidates gives an expected AP of (1 + 1/2 + 1/3) / 3 = 0.61
    assert 0.8 < scores["map"] <= 1

    predictions = tmp_path / "predictions.tsv"
    task.write_predictions(outputs, data, predictions)
    header, *rows = predictions.read_text(encoding="utf-8").splitlines()
    assert header == "label\tprob" and len(rows) == 120
    positive = np.array([float(row.split("\t")[1].split(" ")[1]) for row in rows])
    qids, labels = np.array(read_tsv_rows(path, "qid")), np.array(read_tsv_rows(path, "label"), int)
    assert ranking_metrics(qids, labels, positive)["map"] == pytest.approx(scores["map"])
