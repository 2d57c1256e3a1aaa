"""The task contract's reading rules, for every TSV task: a bad row is skipped and counted with its line; a file
is refused (an error naming the file and line) when its header, encoding or content cannot be used at all, or when
too many of its rows are bad."""
from __future__ import annotations

import pytest

from tests.finetune.sentence_tasks import make_task, skipped
from uer_ray.finetune.data import read_split, read_written, write_split
from uer_ray.finetune.tasks import DataError, TaskData

TSV_TASKS = {  # a task config and a good labelled row with its header
    "classification": ({"name": "classification", "labels_num": 2}, "label\ttext_a", "1\t很好"),
    "multi_label": ({"name": "multi_label", "labels_num": 3}, "label\ttext_a", "0,2\t很好"),
    "regression": ({"name": "regression"}, "label\ttext_a", "4.5\t很好"),
    "dbqa": ({"name": "dbqa"}, "qid\tlabel\ttext_a\ttext_b", "7\t1\t好吗\t很好"),
}


@pytest.fixture(params=sorted(TSV_TASKS))
def case(request, data_dir):
    config, header, row = TSV_TASKS[request.param]
    task, _ = make_task(data_dir, config)
    return task, header, row


def write(tmp_path, text):
    path = tmp_path / "data.tsv"
    path.write_text(text, encoding="utf-8")
    return path


def test_good_rows_become_features_and_examples(case, tmp_path):
    task, header, row = case
    data = task.read(write(tmp_path, f"{header}\n{row}\n\n{row}\n"))  # a blank line is not a row
    assert isinstance(data, TaskData) and data.issues.count == 0
    assert data.features.column("feature_id").to_pylist() == data.examples.column("example_id").to_pylist() == [0, 1]
    assert data.examples.column("line").to_pylist() == [2, 4]


def test_a_row_with_a_wrong_column_count_is_skipped_and_counted(case, tmp_path):
    task, header, row = case
    data = task.read(write(tmp_path, f"{header}\n{row}\n{row}\textra\n{row}\n"))
    assert data.features.num_rows == 2 and data.issues.count == 1
    assert "data.tsv:3: expected" in skipped(data.issues) and "found" in data.issues.summary()
    with pytest.raises(DataError, match=r"1 of 3 rows are unusable \(more than 10%\), so the file is refused: "
                                        r".*data.tsv:3: expected"):
        data.issues.check(data.features.num_rows, 0.1)
    data.issues.check(data.features.num_rows, 0.5)


@pytest.mark.parametrize(
    "text, message",
    [
        ("text\tlabel\n好\t1\n", "data.tsv:1: header ['text', 'label'] lacks column(s)"),
        ("", "empty file"),
    ],
)
def test_a_header_without_the_columns_or_an_empty_file_is_refused(case, tmp_path, text, message):
    task, _, _ = case
    with pytest.raises(DataError) as error:
        task.read(write(tmp_path, text))
    assert message in str(error.value)


def test_a_file_of_bad_rows_only_is_refused(case, tmp_path):
    task, header, row = case
    data = task.read(write(tmp_path, f"{header}\n{row}\textra\n"))
    with pytest.raises(DataError, match=r"no usable row \(data.tsv:2: expected"):
        data.issues.check(data.features.num_rows, 0.1)


def test_invalid_utf8_is_refused(case, tmp_path):
    task, header, row = case
    path = tmp_path / "data.tsv"
    path.write_bytes(f"{header}\n".encode() + b"\xff\xfe" + row.encode() + b"\n")
    with pytest.raises(DataError, match="not valid UTF-8"):
        task.read(path)


def test_unlabelled_files_need_no_label_column(case, tmp_path):
    task, header, row = case
    columns = header.split("\t")
    keep = [i for i, column in enumerate(columns) if column != "label"]
    text = "\t".join(columns[i] for i in keep) + "\n" + "\t".join(row.split("\t")[i] for i in keep) + "\n"
    data = task.read(write(tmp_path, text), labelled=False)
    assert data.features.num_rows == 1 and "label" not in data.features.column_names


def test_a_test_file_without_labels_is_predicted_not_scored(case, tmp_path):
    """UER-py's test_nolabel.tsv as the test split: read for predictions, said so, and marked unscored on storage."""
    task, header, row = case
    columns = header.split("\t")
    keep = [i for i, column in enumerate(columns) if column != "label"]
    path = write(tmp_path, "\t".join(columns[i] for i in keep) + "\n" + "\t".join(row.split("\t")[i] for i in keep) + "\n")
    said = []
    data = read_split(task, str(path), 0.1, progress=said.append, labelled=None)
    assert not data.labelled and data.examples.num_rows == 1
    assert len(said) == 1 and "data.tsv" in said[0] and "lacks column(s) label" in said[0] and "not scored" in said[0]
    write_split(data, str(tmp_path / "test"))
    assert read_written(str(tmp_path / "test")).labelled is False

    labelled = read_split(task, str(write(tmp_path, f"{header}\n{row}\n")), 0.1, progress=said.append, labelled=None)
    assert labelled.labelled and len(said) == 1
    write_split(labelled, str(tmp_path / "test"))
    assert read_written(str(tmp_path / "test")).labelled is True


def test_a_mostly_bad_labelled_test_file_is_still_refused(case, tmp_path):
    task, header, row = case
    with pytest.raises(DataError, match="rows are unusable"):
        read_split(task, str(write(tmp_path, f"{header}\n{row}\n" + "x\n" * 5)), 0.1, labelled=None)
