"""Multiple choice on C3 JSON (UER-py's run_c3): ``[[document lines], [{question, choice, answer, id?}], doc id]``.
Each (choice, question, document) is one sequence ``[CLS] choice [SEP] question [SEP] document [SEP]`` (UER-py's
order; the document is cut to fit); the first token's score per choice, softmaxed over the real choices.

Features hold one row per question: ``src`` / ``seg`` are lists with one token list per choice (padded to
``max_choices`` with a 2-token placeholder that ``choice_mask`` hides). Outputs of ``predict``: ``pred`` (choice
index) and ``prob`` (rows, max_choices).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from uer_ray.config import ComponentConfig
from uer_ray.finetune.tasks.base import DataError, RowIssues, Task, TaskData, read_json
from uer_ray.models.model import Backbone, init_weights
from uer_ray.registry import TASKS


class ChoiceModel(Backbone):
    """Encoder + a linear score of the first token of each choice's sequence."""

    def __init__(self, model_cfg, vocab=None):
        super().__init__(model_cfg, vocab)
        self.output_layer = nn.Linear(model_cfg.hidden_size, 1)
        self.apply(init_weights)

    def forward(self, src: torch.Tensor, seg: torch.Tensor, choice_mask: torch.Tensor) -> torch.Tensor:
        """(batch, choices, seq) -> logits (batch, choices); a padded choice scores -inf."""
        rows, choices, length = src.shape
        hidden = self.encode(src.reshape(-1, length), seg.reshape(-1, length))
        logits = self.output_layer(hidden[:, 0]).float().view(rows, choices)
        return logits.masked_fill(choice_mask == 0, -torch.inf)


@TASKS.register("choice")
class MultipleChoice(Task):
    """C3; a question without a usable ``choice`` list, or whose answer is not among its choices, is skipped."""

    metric = "acc"

    class Config(ComponentConfig):
        max_choices: int = Field(4, ge=2)  # questions with fewer choices are padded (and masked)

    def read(self, path: Path, labelled: bool = True) -> TaskData:
        issues = RowIssues(path)
        questions = list(self._questions(read_json(path), path, issues, labelled))
        src, seg = self._encode(questions, issues)
        n = len(questions)
        mask = [[1] * len(q["choice"]) + [0] * (self.cfg.max_choices - len(q["choice"])) for q in questions]
        features = {"feature_id": pa.array(np.arange(n)), "example_id": pa.array(np.arange(n)),
                    "src": _nested(src), "seg": _nested(seg), "choice_mask": pa.array(mask, pa.list_(pa.int8()))}
        examples = {"example_id": pa.array(np.arange(n)), "id_json": pa.array([json.dumps(q["id"]) for q in questions])}
        if labelled:
            features["label"] = examples["label"] = pa.array([q["choice"].index(q["answer"]) for q in questions], pa.int32())
        return TaskData(pa.table(features), pa.table(examples), issues)

    def corpus_lines(self, path: Path) -> Iterator[str]:
        """Each document once (its lines joined), then the questions and their choices."""
        questions = list(self._questions(read_json(path), path, RowIssues(path), labelled=False))
        yield from dict.fromkeys(q["document"].replace("\n", "") for q in questions)
        yield from (q["question"] + " " + " ".join(q["choice"]) for q in questions)

    def _questions(self, data: Any, path: Path, issues: RowIssues, labelled: bool):
        """Each usable question as {id, document, question, choice, answer}; the id is the question's ``id`` when
        given (C3's test file), else ``<doc id>-<index>`` (UER-py's output needs one)."""
        if not isinstance(data, list):
            raise DataError(f"{path}: expected C3 JSON, a list of [document lines, questions, id] items")
        for i, item in enumerate(data):
            lines, questions = (item[0], item[1]) if isinstance(item, list) and len(item) >= 2 else (None, None)
            if not (isinstance(lines, list) and all(isinstance(x, str) for x in lines) and isinstance(questions, list)):
                issues.skip(f"item {i}", "malformed_item", "expected [list of document lines, list of questions, id]")
                continue
            doc_id = item[2] if len(item) > 2 else i
            for j, q in enumerate(questions):
                question = dict(q, id=q.get("id", f"{doc_id}-{j}"), document="\n".join(lines)) if isinstance(q, dict) else {}
                problem = self._problem(question, labelled)
                if problem:
                    issues.skip(question.get("id", f"item {i} question {j}"), *problem)
                    continue
                yield question

    def _problem(self, q: dict, labelled: bool) -> tuple[str, str] | None:
        choices = q.get("choice")
        if not isinstance(q.get("question"), str) or not isinstance(choices, list) or not choices or \
                not all(isinstance(c, str) for c in choices):
            return "malformed_question", "expected a 'question' string and a non-empty 'choice' list of strings"
        if len(choices) > self.cfg.max_choices:
            return "too_many_choices", f"{len(choices)} choices, more than max_choices {self.cfg.max_choices}"
        if labelled and q.get("answer") not in choices:
            return "answer_not_in_choices", f"answer {q.get('answer')!r} is not one of {choices}"
        return None

    def _encode(self, questions: list[dict], issues: RowIssues) -> tuple[list, list]:
        """Per question, per choice: ``[CLS] choice [SEP] question [SEP] document [SEP]`` ids and segments (1, then
        2 for the document); a document cut to fit is counted once per question."""
        vocab = self.tokenizer.vocab
        texts = list(dict.fromkeys(t for q in questions for t in (q["document"], q["question"], *q["choice"])))
        ids = dict(zip(texts, self.tokenizer.encode_batch(texts)))  # a document is shared by all its questions
        src, seg = [], []
        for q in questions:
            document, asked = ids[q["document"]], ids[q["question"]]
            rows_src, rows_seg, cut = [], [], False
            for choice in q["choice"]:
                head = [vocab.cls_id, *ids[choice], vocab.sep_id, *asked, vocab.sep_id][: self.seq_length - 1]
                room = self.seq_length - len(head) - 1
                cut |= len(document) > room
                tokens = head + document[:room] + [vocab.sep_id]
                rows_src.append(tokens)
                rows_seg.append([1] * len(head) + [2] * (len(tokens) - len(head)))
            if cut:
                issues.repair(q["id"], "document_cut", f"{len(document)} document tokens cut to fit seq_length")
            padding = self.cfg.max_choices - len(rows_src)
            src.append(rows_src + [[vocab.cls_id, vocab.sep_id]] * padding)
            seg.append(rows_seg + [[1, 1]] * padding)
        return src, seg

    # model -----------------------------------------------------------------------------------------------------------
    def build_model(self, model_cfg, vocab=None) -> nn.Module:
        return ChoiceModel(model_cfg, vocab or self.tokenizer.vocab)

    def loss(self, model, batch):
        logits = model(batch["src"], batch["seg"], batch["choice_mask"])
        loss = F.cross_entropy(logits, batch["label"])
        correct = (logits.argmax(-1) == batch["label"]).sum()
        return loss, {"loss": float(loss.detach()) * len(logits), "correct": float(correct), "count": float(len(logits))}

    # evaluation ----------------------------------------------------------------------------------------------------
    def predict(self, model, batch):
        probs = torch.softmax(model(batch["src"], batch["seg"], batch["choice_mask"]), -1)
        return {"pred": probs.argmax(-1).cpu().numpy(), "prob": probs.cpu().numpy()}

    def score(self, outputs, data):
        gold = data.examples.column("label").to_numpy()
        return {"acc": float((outputs["pred"] == gold).mean()) if len(gold) else 0.0}

    def write_predictions(self, outputs, data, path: Path) -> None:
        """UER-py's run_c3_infer format: one JSON object per line, ``{"id": question id, "label": choice index}``."""
        with open(path, "w", encoding="utf-8") as f:
            for id_json, label in zip(data.examples.column("id_json").to_pylist(), outputs["pred"].tolist()):
                f.write(json.dumps({"id": json.loads(id_json), "label": int(label)}) + "\n")


def _nested(rows: list[list[list[int]]]) -> pa.Array:
    return pa.array(rows, type=pa.list_(pa.list_(pa.int32())))

