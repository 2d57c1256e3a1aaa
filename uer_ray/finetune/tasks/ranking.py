"""Document-based question answering / answer selection (UER-py's run_dbqa): ``qid label text_a text_b`` with
``text_a`` the question, ``text_b`` one candidate sentence and ``label`` 1 when it answers the question. Trained as
pair classification; scored by ranking each question's candidates by their positive-class probability."""
from __future__ import annotations

import numpy as np

from uer_ray.finetune.tasks.base import TaskData
from uer_ray.finetune.tasks.classification import Classification, SentencePairTask
from uer_ray.registry import TASKS


def positive_ranks(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """1-based ranks of the positive candidates of one question, best score first. A positive tied with other
    candidates takes the best rank of the tie, as UER-py's lookup of the first equal score does."""
    order = np.lexsort((-labels, -scores))  # by score, then positives first within a tie
    return np.flatnonzero(labels[order] == 1) + 1


def average_precision(ranks: np.ndarray, candidates: int) -> float:
    if not len(ranks):
        return 1.0 / (candidates + 1)  # no answer: as if it came right after the last candidate (see ranking_metrics)
    return float(np.mean(np.arange(1, len(ranks) + 1) / ranks))


def reciprocal_rank(ranks: np.ndarray, candidates: int) -> float:
    return 1.0 / ranks[0] if len(ranks) else 1.0 / (candidates + 1)


def ranking_metrics(qids: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """MAP and MRR over questions (rows grouped by ``qid``). A question without any positive candidate counts as
    if its answer were ranked just after its last candidate: UER-py's run_dbqa gives it a reciprocal rank of
    1 / (candidates + 1), and average precision here follows the same rule, so both metrics treat it alike."""
    if not len(qids):
        return {"map": 0.0, "mrr": 0.0}
    _, question, sizes = np.unique(qids, return_inverse=True, return_counts=True)
    by_question = np.argsort(question, kind="stable")
    ap, rr = [], []
    for rows in np.split(by_question, np.cumsum(sizes)[:-1]):
        ranks = positive_ranks(labels[rows], scores[rows])
        ap.append(average_precision(ranks, len(rows)))
        rr.append(reciprocal_rank(ranks, len(rows)))
    return {"map": float(np.mean(ap)), "mrr": float(np.mean(rr))}


@TASKS.register("dbqa")
class DBQA(Classification):
    """Answer selection: a 2-class pair classifier (label 0/1); metrics MAP (main), MRR, accuracy, macro-F1.
    The prediction file is run_classifier_infer's (``label``, ``prob`` of classes 0 and 1), one line per row."""

    Config = SentencePairTask.Config  # pooling only: the label count is fixed at 2
    metric = "map"
    extra_columns = ("qid",)

    @property
    def labels_num(self) -> int:
        return 2

    def fit_labels(self, train: TaskData) -> None:
        """Nothing to settle: labels are 0/1."""

    def score(self, outputs, data):
        qids = data.examples.column("qid").to_numpy(zero_copy_only=False)
        gold = data.features.column("label").to_numpy()
        return {**ranking_metrics(qids, gold, outputs["prob"][:, 1]), **super().score(outputs, data)}
