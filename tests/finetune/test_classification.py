"""classification, multi_label and regression: metrics against hand-computed cases and scikit-learn / scipy, real
files read with bad rows counted, a tiny model whose loss falls, and prediction files a user can read back."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import f1_score

from tests.finetune.sentence_tasks import fit, make_task, predict_all, read_tsv_rows, skipped, write_tsv
from uer_ray.config import ConfigError
from uer_ray.finetune.tasks import DataError
from uer_ray.finetune.tasks.classification import (
    accuracy, exact_match, macro_f1, micro_f1, pearson, spearman,
)


# metrics by hand ---------------------------------------------------------------------------------------------------
def test_accuracy_and_macro_f1_by_hand():
    pred, gold = np.array([0, 0, 1, 1, 2]), np.array([0, 1, 1, 1, 2])
    # class 0: TP 1, predicted 2, gold 1 -> F1 2*1/(2+1) = 2/3
    # class 1: TP 2, predicted 2, gold 3 -> F1 2*2/(2+3) = 4/5
    # class 2: TP 1, predicted 1, gold 1 -> F1 1
    # macro = (2/3 + 4/5 + 1) / 3 = (10 + 12 + 15) / 45 = 37/45; accuracy 4/5
    assert macro_f1(pred, gold) == pytest.approx(37 / 45)
    assert accuracy(pred, gold) == pytest.approx(4 / 5)
    # class 3 predicted once, never gold: F1 0 joins the mean -> (2/3 + 4/5 + 0 + ...) over 4 classes
    # pred [0,3,1,1,2] vs gold [0,1,1,1,2]: class 0 2/2=1, class 1 TP 2 pred 2 gold 3 -> 4/5, class 2 1, class 3 0
    assert macro_f1(np.array([0, 3, 1, 1, 2]), gold) == pytest.approx((1 + 4 / 5 + 1 + 0) / 4)


def test_micro_f1_and_exact_match_by_hand():
    pred = np.array([[1, 0, 1], [0, 1, 0]])
    gold = np.array([[1, 1, 0], [0, 1, 0]])
    # TP: (0,0) and (1,1) = 2; predicted 3; gold 3 -> micro-F1 2*2/(3+3) = 2/3
    # example 0 differs, example 1 matches -> exact match 1/2
    assert micro_f1(pred, gold) == pytest.approx(2 / 3)
    assert exact_match(pred, gold) == pytest.approx(1 / 2)
    assert micro_f1(np.zeros((2, 3)), np.zeros((2, 3))) == 0.0  # nothing predicted nor gold: scikit-learn's 0


def test_pearson_and_spearman_by_hand():
    # x [1,2,3], y [1,2,5]: deviations [-1,0,1] and [-5/3,-2/3,7/3]; sum of products 5/3 + 7/3 = 4;
    # sums of squares 2 and 78/9 -> r = 4 / sqrt(2 * 78/9) = 12 / sqrt(156) = 6 / sqrt(39)
    assert pearson(np.array([1, 2, 3]), np.array([1, 2, 5])) == pytest.approx(6 / np.sqrt(39))
    # x [1,2,2,3] ranks [1, 2.5, 2.5, 4] (the tie shares 2 and 3); y [10,20,30,40] ranks [1,2,3,4]
    # rank deviations [-1.5,0,0,1.5] and [-1.5,-.5,.5,1.5]: products 4.5, squares 4.5 and 5 -> 4.5/sqrt(22.5)=sqrt(.9)
    assert spearman(np.array([1, 2, 2, 3]), np.array([10, 20, 30, 40])) == pytest.approx(np.sqrt(0.9))
    assert spearman(np.array([3.0, 1.0, 2.0]), np.array([30, 10, 20])) == pytest.approx(1.0)
    assert pearson(np.array([1.0, 1.0, 1.0]), np.array([1, 2, 3])) == 0.0  # a constant model: 0, not NaN


# metrics against the libraries --------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(5))
def test_metrics_match_scikit_learn_and_scipy(seed):
    rng = np.random.default_rng(seed)
    gold, pred = rng.integers(0, 5, 300), rng.integers(0, 4, 300)
    assert macro_f1(pred, gold) == pytest.approx(f1_score(gold, pred, average="macro"))
    hot_gold, hot_pred = rng.random((200, 6)) < 0.3, rng.random((200, 6)) < 0.4
    assert micro_f1(hot_pred, hot_gold) == pytest.approx(f1_score(hot_gold, hot_pred, average="micro"))
    x = rng.normal(size=400)
    y = x + rng.normal(size=400)
    assert pearson(x, y) == pytest.approx(stats.pearsonr(x, y).statistic)
    tied_x = rng.integers(0, 10, 400)
    tied_y = tied_x + rng.integers(0, 6, 400)  # many ties on both sides
    assert spearman(tied_x, tied_y) == pytest.approx(stats.spearmanr(tied_x, tied_y).statistic)


# classification --------------------------------------------------------------------------------------------------
def write(tmp_path, text, name="data.tsv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_classification_reads_book_review(data_dir):
    task, _ = make_task(data_dir, {"name": "classification"})
    data = task.read(data_dir / "datasets" / "test_data" / "book_review" / "train.tsv")
    assert data.features.num_rows == data.examples.num_rows == 200 and data.issues.count == 0
    assert set(data.features.column("label").to_pylist()) == {0, 1}
    assert data.examples.column("line").to_pylist()[:2] == [2, 3]
    src = data.features.column("src").to_pylist()
    assert max(map(len, src)) <= 32 and all(s[0] == task.tokenizer.vocab.cls_id for s in src)
    task.fit_labels(data)
    assert task.cfg.labels_num == 2


def test_classification_skips_and_counts_bad_rows(data_dir, tmp_path):
    task, _ = make_task(data_dir, {"name": "classification", "labels_num": 2})
    texts = read_tsv_rows(data_dir / "datasets" / "test_data" / "book_review" / "dev.tsv", "text_a")[:20]
    rows = [[i % 2, text] for i, text in enumerate(texts)]
    rows[2] = [2, texts[2]]  # line 4: out of range
    rows[5] = ["好", texts[5]]  # line 7: not a number
    rows[9] = [1]  # line 11: a missing column
    data = task.read(write_tsv(tmp_path / "data.tsv", ["label", "text_a"], rows))
    assert data.features.num_rows == 17 and data.issues.count == 3
    assert 4 not in data.examples.column("line").to_pylist()
    assert "data.tsv: 3 row(s) skipped" in data.issues.summary()
    for expected in ("data.tsv:4: label 2 is outside 0..1", "data.tsv:7: label '好' is not an integer",
                     "data.tsv:11: expected 2 tab-separated columns (label, text_a), found 1"):
        assert expected in skipped(data.issues)
    data.issues.check(data.features.num_rows, 0.2)  # 3 of 20 bad: accepted at 20%
    with pytest.raises(DataError, match=r"3 of 20 rows are unusable .*data.tsv:4: label 2 is outside 0..1"):
        data.issues.check(data.features.num_rows, 0.1)


def test_labels_are_inferred_from_the_training_file(data_dir, tmp_path):
    task, _ = make_task(data_dir, {"name": "classification"})
    train = task.read(write(tmp_path, "label\ttext_a\n0\t好\n4\t坏\n-1\t中\n"))
    assert "data.tsv:4: label -1 is negative" in skipped(train.issues)
    task.fit_labels(train)
    assert task.cfg.labels_num == 5  # ids 0..4, whether or not each occurs
    dev = task.read(write(tmp_path, "label\ttext_a\n5\t好\n3\t坏\n", "dev.tsv"))
    assert dev.features.num_rows == 1 and "dev.tsv:2: label 5 is outside 0..4" in skipped(dev.issues)


def test_a_file_without_a_usable_row_is_refused(data_dir, tmp_path):
    task, _ = make_task(data_dir, {"name": "classification", "labels_num": 2})
    data = task.read(write(tmp_path, "label\ttext_a\nx\t好\n"))
    with pytest.raises(DataError, match=r"no usable row \(data.tsv:2: label 'x' is not an integer"):
        data.issues.check(data.features.num_rows, 0.1)


def test_classification_trains_scores_and_writes_predictions(data_dir, tmp_path):
    folder = data_dir / "datasets" / "test_data" / "chnsenticorp"
    task, job = make_task(data_dir, {"name": "classification"}, tokenizer_name="bert")
    train = task.read(folder / "train.tsv")
    model, before, after = fit(task, job, train, steps=60)
    assert after < 0.6 * before, (before, after)

    dev = task.read(folder / "dev.tsv")
    outputs = predict_all(task, model, dev)
    scores = task.score(outputs, dev)
    assert set(scores) == {"acc", "macro_f1"} and task.metric == "acc"
    path = tmp_path / "predictions.tsv"
    task.write_predictions(outputs, dev, path)
    header, *rows = path.read_text(encoding="utf-8").splitlines()
    assert header == "label\tprob" and len(rows) == dev.features.num_rows
    labels = [int(row.split("\t")[0]) for row in rows]
    probs = np.array([[float(p) for p in row.split("\t")[1].split(" ")] for row in rows])
    assert probs.shape == (50, 2) and np.allclose(probs.sum(1), 1, atol=1e-3)
    assert np.mean(np.array(labels) == dev.features.column("label").to_numpy()) == pytest.approx(scores["acc"])

    unlabelled = task.read(folder / "test_nolabel.tsv", labelled=False)
    assert "label" not in unlabelled.features.column_names
    task.write_predictions(predict_all(task, model, unlabelled), unlabelled, path)
    assert len(path.read_text(encoding="utf-8").splitlines()) == 1 + 50


def test_sentence_pairs_share_the_encoding(data_dir, tmp_path):
    task, _ = make_task(data_dir, {"name": "classification", "labels_num": 2}, seq_length=16)
    data = task.read(write(tmp_path, "label\ttext_a\ttext_b\n1\t今天天气很好\t明天也会很好，一定的\n"))
    src, seg = data.features.column("src")[0].as_py(), data.features.column("seg")[0].as_py()
    vocab = task.tokenizer.vocab
    assert src[0] == vocab.cls_id and src.count(vocab.sep_id) == 2 and len(src) == 16  # 6 + 10 chars trimmed to 13
    first_sep = src.index(vocab.sep_id)
    assert first_sep == 7 and seg == [1] * 8 + [2] * 8  # the longer text_b lost 3 characters, text_a none


# multi_label ---------------------------------------------------------------------------------------------------------
def multi_label_rows(data_dir, split: str, n: int) -> list[list]:
    """Book reviews with label sets: 0 negative / 1 positive, 2 when the review talks of the book (书),
    3 when it is long; e.g. ``1,2,3``."""
    path = data_dir / "datasets" / "test_data" / "book_review" / f"{split}.tsv"
    rows = []
    for sentiment, text in list(zip(read_tsv_rows(path, "label"), read_tsv_rows(path, "text_a")))[:n]:
        labels = [int(sentiment)] + [2] * ("书" in text) + [3] * (len(text) > 60)
        rows.append([",".join(map(str, labels)), text])
    return rows


def test_multi_label_reads_infers_labels_and_skips_bad_rows(data_dir, tmp_path):
    task, _ = make_task(data_dir, {"name": "multi_label"})
    train = task.read(write_tsv(tmp_path / "train.tsv", ["label", "text_a"], multi_label_rows(data_dir, "train", 60)))
    assert train.issues.count == 0
    task.fit_labels(train)
    assert task.cfg.labels_num == 4
    rows = multi_label_rows(data_dir, "dev", 10)
    rows[1][0] = "0,4"  # line 3: id 4 is outside 0..3 now that the training file settled 4 labels
    rows[3][0] = "1,a"  # line 5
    rows[4][0] = ""  # line 6
    rows[6] = [rows[6][1]]  # line 8: no label column
    rows[8][0] = "3,1,3"  # a repeated id is one label
    dev = task.read(write_tsv(tmp_path / "dev.tsv", ["label", "text_a"], rows))
    assert dev.features.num_rows == 6 and dev.issues.count == 4
    for expected in ("dev.tsv:3: label 4 is outside 0..3", "dev.tsv:5: label 'a' is not an integer",
                     "dev.tsv:6: label is empty", "dev.tsv:8: expected 2 tab-separated columns"):
        assert expected in skipped(dev.issues)
    assert dev.examples.column("label").to_pylist()[4] == [1, 3]
    with pytest.raises(DataError, match="dev.tsv:3"):
        dev.issues.check(dev.features.num_rows, 0.1)


def test_multi_label_scores_by_hand(data_dir, tmp_path):
    task, _ = make_task(data_dir, {"name": "multi_label", "labels_num": 3})
    data = task.read(write(tmp_path, "label\ttext_a\n0\t好书\n1,2\t不好\n"))
    outputs = {"pred": np.array([[1, 0, 1], [0, 1, 0]], np.int8), "prob": np.full((2, 3), 0.5)}
    # gold [[1,0,0],[0,1,1]]: TP 2, predicted 3, gold 3 -> micro-F1 4/6; no example fully right -> exact match 0
    assert task.score(outputs, data) == pytest.approx({"micro_f1": 2 / 3, "exact_match": 0.0})


def test_multi_label_trains_and_writes_label_ids(data_dir, tmp_path):
    task, job = make_task(data_dir, {"name": "multi_label", "threshold": 0.4})
    train = task.read(write_tsv(tmp_path / "train.tsv", ["label", "text_a"], multi_label_rows(data_dir, "train", 64)))
    model, before, after = fit(task, job, train, steps=60)
    assert after < 0.8 * before, (before, after)
    outputs = predict_all(task, model, train)
    assert outputs["pred"].shape == outputs["prob"].shape == (64, 4)
    assert np.array_equal(outputs["pred"], outputs["prob"] >= 0.4)
    scores = task.score(outputs, train)
    assert task.metric == "micro_f1" and 0 < scores["micro_f1"] <= 1 and 0 <= scores["exact_match"] <= 1

    path = tmp_path / "predictions.tsv"
    task.write_predictions(outputs, train, path)
    header, *rows = path.read_text(encoding="utf-8").splitlines()
    assert header == "label\tprob" and len(rows) == 64
    read_back = [{int(i) for i in row.split("\t")[0].split(",") if i} for row in rows]
    assert read_back == [set(np.flatnonzero(p)) for p in outputs["pred"]]
    assert any(len(ids) > 1 for ids in read_back)


# regression ------------------------------------------------------------------------------------------------------
def rating_rows(data_dir, n: int) -> list[list]:
    """Reviews with a 1-5 rating: the sentiment sets the range, the length a fraction (a realistic float label)."""
    path = data_dir / "datasets" / "test_data" / "chnsenticorp" / "train.tsv"
    pairs = list(zip(read_tsv_rows(path, "label"), read_tsv_rows(path, "text_a")))[:n]
    return [[f"{1 + 3 * int(label) + min(len(text), 100) / 100:.2f}", text] for label, text in pairs]


def test_regression_skips_non_numbers(data_dir, tmp_path):
    task, _ = make_task(data_dir, {"name": "regression"})
    rows = rating_rows(data_dir, 12)
    rows[0][0], rows[3][0], rows[5][0] = "高", "nan", "inf"  # lines 2, 5, 7
    rows[7] = [rows[7][1]]  # line 9
    data = task.read(write_tsv(tmp_path / "data.tsv", ["label", "text_a"], rows))
    assert data.features.num_rows == 8 and data.issues.count == 4
    for expected in ("data.tsv:2: label '高' is not a finite number", "data.tsv:5: label 'nan'",
                     "data.tsv:7: label 'inf'", "data.tsv:9: expected 2"):
        assert expected in skipped(data.issues)
    assert data.features.column("label").to_pylist()[0] == pytest.approx(float(rows[1][0]))


def test_regression_trains_scores_and_writes_values(data_dir, tmp_path):
    task, job = make_task(data_dir, {"name": "regression", "pooling": "mean"})
    data = task.read(write_tsv(tmp_path / "train.tsv", ["label", "text_a"], rating_rows(data_dir, 64)))
    model, before, after = fit(task, job, data, steps=40)
    assert after < 0.5 * before, (before, after)
    outputs = predict_all(task, model, data)
    scores = task.score(outputs, data)
    assert task.metric == "pearson" and set(scores) == {"pearson", "spearman"} and scores["pearson"] > 0
    path = tmp_path / "predictions.tsv"
    task.write_predictions(outputs, data, path)
    header, *rows = path.read_text(encoding="utf-8").splitlines()
    assert header == "label" and np.array_equal(np.array(rows, np.float32), outputs["value"])


def test_task_options_are_validated(data_dir):
    with pytest.raises(ConfigError, match="threshold"):
        make_task(data_dir, {"name": "multi_label", "threshold": 1.5})
    with pytest.raises(ConfigError, match="labels_num"):
        make_task(data_dir, {"name": "regression", "labels_num": 3})
