"""Extractive reading comprehension on CMRC2018 / SQuAD-style JSON (UER-py's run_cmrc): one token per character,
``[CLS] question [SEP] context window [SEP]``, long contexts in windows ``doc_stride`` characters apart, a start/end
head, and the best span over all windows of a question. EM and F1 as CMRC2018's official evaluation script.

Outputs of ``predict``, per window: ``start`` / ``end`` (character offsets in the context, end inclusive) and
``score`` (log P(start) + log P(end)) of the window's best valid span.
"""
from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from uer_ray.config import ComponentConfig
from uer_ray.finetune.tasks.base import DataError, RowIssues, Task, TaskData, char_ids, ids_array, read_json
from uer_ray.models.model import Backbone, init_weights
from uer_ray.registry import TASKS

# metric (CMRC2018's evaluate script) ---------------------------------------------------------------------------------
PUNCTUATION = frozenset(
    ["-", ":", "_", "*", "^", "/", "\\", "~", "`", "+", "=", "，", "。", "：", "？", "！", "“", "”", "；", "’", "《",
     "》", "……", "·", "、", "「", "」", "（", "）", "－", "～", "『", "』"]
)
_CHINESE = re.compile(r"[\u4e00-\u9fa5]")


@functools.cache
def _english_tokenizer():
    # The script's nltk.word_tokenize is NLTK's Treebank word tokenizer after Punkt sentence splitting; Punkt needs
    # a data download, so the word tokenizer runs on each run of non-Chinese text whole (answers are short).
    from nltk.tokenize import NLTKWordTokenizer

    return NLTKWordTokenizer()


def mixed_segmentation(text: str, drop_punctuation: bool = False) -> list[str]:
    """Each Chinese character (and punctuation mark) a segment; the text between them split into English words."""
    segments, run = [], ""
    for char in text.lower().strip():
        if drop_punctuation and char in PUNCTUATION:
            continue
        if _CHINESE.match(char) or char in PUNCTUATION:
            if run:
                segments.extend(_english_tokenizer().tokenize(run))
                run = ""
            segments.append(char)
        else:
            run += char
    if run:
        segments.extend(_english_tokenizer().tokenize(run))
    return segments


def remove_punctuation(text: str) -> str:
    return "".join(char for char in text.lower().strip() if char not in PUNCTUATION)


def longest_common_run(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common contiguous run of segments (the script's find_lcs)."""
    best, previous = 0, [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else 0)
        best, previous = max(best, *current), current
    return best


def cmrc_f1(answers: Sequence[str], prediction: str) -> float:
    """Best over the gold answers of the F1 of the longest common run of segments, punctuation removed."""
    predicted = mixed_segmentation(prediction, drop_punctuation=True)
    scores = []
    for answer in answers:
        gold = mixed_segmentation(answer, drop_punctuation=True)
        common = longest_common_run(gold, predicted)
        precision, recall = (common / len(predicted), common / len(gold)) if common else (0.0, 0.0)
        scores.append(2 * precision * recall / (precision + recall) if common else 0.0)
    return max(scores)


def cmrc_em(answers: Sequence[str], prediction: str) -> float:
    """1 when the prediction equals a gold answer once both are lower-cased and stripped of punctuation."""
    return float(any(remove_punctuation(answer) == remove_punctuation(prediction) for answer in answers))


# reading -----------------------------------------------------------------------------------------------------------
@dataclass
class Question:
    qid: str
    question: str
    context: str
    answers: list[str] = field(default_factory=list)  # every gold text (scoring)
    start: int = -1  # the answer trained on: first and last character in the context
    end: int = -1


def find_answer(context: str, text: str, answer_start: Any) -> int | None:
    """``answer_start`` when the text is there, else the occurrence of the text nearest to it, else None."""
    given = answer_start if isinstance(answer_start, int) and not isinstance(answer_start, bool) else -1
    if given >= 0 and context.startswith(text, given):
        return given
    found, position = [], context.find(text)
    while position >= 0:
        found.append(position)
        position = context.find(text, position + 1)
    return min(found, key=lambda p: (abs(p - max(given, 0)), p)) if found else None


def windows(length: int, room: int, stride: int) -> Iterator[tuple[int, int]]:
    """(offset, size) of the context windows: ``room`` characters each, starting ``stride`` apart (BERT's)."""
    offset = 0
    while True:
        size = min(length - offset, room)
        yield offset, size
        if offset + size >= length:
            return
        offset += min(size, stride)


def best_spans(start_logits: torch.Tensor, end_logits: torch.Tensor, context_start: torch.Tensor,
               context_len: torch.Tensor, max_answer_length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row, the span maximising log P(start) + log P(end) with both ends inside the context, end >= start and
    at most ``max_answer_length`` tokens: (start, end, score), token positions. Exact, over every allowed pair."""
    length = start_logits.size(1)
    position = torch.arange(length, device=start_logits.device)
    first = context_start.unsqueeze(1)
    in_context = (position >= first) & (position < first + context_len.unsqueeze(1))
    width = position.unsqueeze(0) - position.unsqueeze(1)  # [start, end] -> end - start
    allowed = (width >= 0) & (width < max_answer_length) & in_context.unsqueeze(2) & in_context.unsqueeze(1)
    pair = F.log_softmax(start_logits.float(), -1).unsqueeze(2) + F.log_softmax(end_logits.float(), -1).unsqueeze(1)
    score, best = pair.masked_fill(~allowed, -torch.inf).flatten(1).max(1)
    return best // length, best % length, score


class SpanModel(Backbone):
    """Encoder + a linear layer giving each token a start and an end score; padding never scores."""

    def __init__(self, model_cfg, vocab=None):
        super().__init__(model_cfg, vocab)
        self.output_layer = nn.Linear(model_cfg.hidden_size, 2)
        self.apply(init_weights)

    def forward(self, src: torch.Tensor, seg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.output_layer(self.encode(src, seg)).float().masked_fill((seg == 0).unsqueeze(-1), -torch.inf)
        return logits[..., 0], logits[..., 1]


@TASKS.register("mrc")
class ReadingComprehension(Task):
    """A window without the whole trained answer learns to point at [CLS] (BERT's SQuAD recipe)."""

    metric = "f1"
    prediction_suffix = ".json"

    class Config(ComponentConfig):
        doc_stride: int = Field(128, gt=0)  # characters between the starts of two windows of one context
        max_query_length: int = Field(64, gt=0)  # longer questions are cut (counted)
        max_answer_length: int = Field(64, gt=0)  # in characters

    def __init__(self, cfg, tokenizer, seq_length: int):
        super().__init__(cfg, tokenizer, seq_length)
        if seq_length - cfg.max_query_length - 3 < 1:
            raise ValueError(
                f"mrc: seq_length {seq_length} leaves no room for the context after max_query_length "
                f"{cfg.max_query_length} and [CLS] [SEP] [SEP]; lower max_query_length or raise seq_length"
            )

    def read(self, path: Path, labelled: bool = True) -> TaskData:
        issues = RowIssues(path)
        questions = list(self._questions(read_json(path), path, issues, labelled))
        features = self._features(questions, issues, labelled)
        examples = {"example_id": pa.array(np.arange(len(questions))), "id": pa.array([q.qid for q in questions]),
                    "context": pa.array([q.context for q in questions], pa.large_string())}
        if labelled:
            examples["answers"] = pa.array([q.answers for q in questions], pa.list_(pa.string()))
        return TaskData(pa.table(features), pa.table(examples), issues)

    def corpus_lines(self, path: Path) -> Iterator[str]:
        """Each distinct context once, then the questions: the file's text for further pre-training."""
        questions = list(self._questions(read_json(path), path, RowIssues(path), labelled=False))
        yield from dict.fromkeys(q.context.replace("\n", " ") for q in questions)
        yield from (q.question for q in questions)

    def _questions(self, data: Any, path: Path, issues: RowIssues, labelled: bool) -> Iterator[Question]:
        if not isinstance(data, dict) or not isinstance(data.get("data"), list):
            raise DataError(f"{path}: expected SQuAD-style JSON, an object with a 'data' list of articles")
        seen = set()
        for a, article in enumerate(data["data"]):
            paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
            for p, paragraph in enumerate(paragraphs if isinstance(paragraphs, list) else [None]):
                where = f"data[{a}].paragraphs[{p}]"
                context = paragraph.get("context") if isinstance(paragraph, dict) else None
                qas = paragraph.get("qas") if isinstance(paragraph, dict) else None
                if not isinstance(context, str) or not context or not isinstance(qas, list):
                    issues.skip(where, "malformed_paragraph", "expected a non-empty 'context' string and a 'qas' list")
                    continue
                for q, qa in enumerate(qas):
                    qid = qa.get("id") if isinstance(qa, dict) else None
                    text = qa.get("question") if isinstance(qa, dict) else None
                    if qid is None or not isinstance(text, str) or not text.strip():
                        issues.skip(f"{where}.qas[{q}]", "malformed_question", "expected an 'id' and a 'question'")
                    elif str(qid) in seen:
                        issues.skip(qid, "duplicate_id", f"question id {qid!r} seen before")
                    else:
                        seen.add(str(qid))
                        question = Question(str(qid), text, context)
                        if not labelled or self._locate(question, qa.get("answers"), issues):
                            yield question

    def _locate(self, question: Question, answers: Any, issues: RowIssues) -> bool:
        """Gold texts, and the first answer found in the context as the one trained on; False: skipped."""
        answers = [a for a in answers if isinstance(a, dict)] if isinstance(answers, list) else []
        question.answers = [a["text"] for a in answers if isinstance(a.get("text"), str) and a["text"].strip()]
        for k, answer in enumerate(answers):
            text, given = answer.get("text"), answer.get("answer_start")
            start = find_answer(question.context, text, given) if text in question.answers else None
            if start is None:
                continue
            if start != given:
                issues.repair(question.qid, "answer_start_moved", f"answer {text!r}: answer_start {given} -> {start}")
            if k:
                issues.repair(question.qid, "answer_not_in_context", f"answer(s) 0..{k - 1} not in the context")
            question.start, question.end = start, start + len(text) - 1
            return True
        first = repr(question.answers[0]) if question.answers else "none given"
        issues.skip(question.qid, "answer_not_found", f"no answer text occurs in the context (first: {first})")
        return False

    def _features(self, questions: list[Question], issues: RowIssues, labelled: bool) -> dict[str, pa.Array]:
        vocab, columns = self.tokenizer.vocab, {name: [] for name in
            ("example_id", "src", "seg", "context_start", "doc_offset", "context_len", "start_position", "end_position")}
        context_ids = {}
        for example_id, q in enumerate(questions):
            if len(q.question) > self.cfg.max_query_length:
                issues.repair(q.qid, "question_cut", f"{len(q.question)} characters cut to {self.cfg.max_query_length}")
            query = char_ids(self.tokenizer, list(q.question[: self.cfg.max_query_length]))
            if q.context not in context_ids:  # a paragraph's context is shared by its questions
                context_ids[q.context] = char_ids(self.tokenizer, list(q.context))
            context = context_ids[q.context]
            context_start, held = len(query) + 2, False
            room = self.seq_length - context_start - 1
            for offset, size in windows(len(context), room, self.cfg.doc_stride):
                inside = offset <= q.start and q.end < offset + size
                held |= inside
                columns["example_id"].append(example_id)
                columns["src"].append([vocab.cls_id, *query, vocab.sep_id, *context[offset : offset + size], vocab.sep_id])
                columns["seg"].append([1] * context_start + [2] * (size + 1))
                columns["context_start"].append(context_start)
                columns["doc_offset"].append(offset)
                columns["context_len"].append(size)
                columns["start_position"].append(q.start - offset + context_start if inside else 0)
                columns["end_position"].append(q.end - offset + context_start if inside else 0)
            if labelled and not held:
                issues.repair(q.qid, "answer_in_no_window", f"the {q.end - q.start + 1}-character answer lies wholly "
                              f"in no window ({room} characters, doc_stride {self.cfg.doc_stride}): learns [CLS] only")
        if not labelled:
            del columns["start_position"], columns["end_position"]
        arrays = {name: ids_array(v) if name in ("src", "seg") else pa.array(v, pa.int32()) for name, v in columns.items()}
        return {"feature_id": pa.array(np.arange(len(columns["src"]))), **arrays}

    # model -----------------------------------------------------------------------------------------------------------
    def build_model(self, model_cfg, vocab=None) -> nn.Module:
        return SpanModel(model_cfg, vocab or self.tokenizer.vocab)

    def loss(self, model, batch):
        start_logits, end_logits = model(batch["src"], batch["seg"])
        start, end = batch["start_position"], batch["end_position"]
        loss = (F.cross_entropy(start_logits, start) + F.cross_entropy(end_logits, end)) / 2
        correct = ((start_logits.argmax(-1) == start) & (end_logits.argmax(-1) == end)).sum()  # exact span, per window
        return loss, {"loss": float(loss.detach()) * len(start), "correct": float(correct), "count": float(len(start))}

    # evaluation ----------------------------------------------------------------------------------------------------
    def predict(self, model, batch):
        start_logits, end_logits = model(batch["src"], batch["seg"])
        start, end, score = best_spans(start_logits, end_logits, batch["context_start"], batch["context_len"],
                                       self.cfg.max_answer_length)
        shift = batch["doc_offset"] - batch["context_start"]  # token position -> character offset in the context
        return {"start": (start + shift).cpu().numpy(), "end": (end + shift).cpu().numpy(), "score": score.cpu().numpy()}

    def answers(self, outputs, data: TaskData) -> list[str]:
        """The predicted text of each question: its best-scoring window's span."""
        example = data.features.column("example_id").to_numpy()
        order = np.lexsort((-outputs["score"], example))
        best = order[np.r_[True, example[order][1:] != example[order][:-1]]]  # first (best) row of each question
        contexts = data.examples.column("context").to_pylist()
        return [contexts[example[i]][outputs["start"][i] : outputs["end"][i] + 1] for i in best]

    def score(self, outputs, data):
        predictions = self.answers(outputs, data)
        gold = data.examples.column("answers").to_pylist()
        count = max(len(gold), 1)
        return {"em": sum(map(cmrc_em, gold, predictions)) / count, "f1": sum(map(cmrc_f1, gold, predictions)) / count}

    def write_predictions(self, outputs, data, path: Path) -> None:
        """UER-py's run_cmrc_infer format: one JSON object {question id: answer text}."""
        output = dict(zip(data.examples.column("id").to_pylist(), self.answers(outputs, data)))
        Path(path).write_text(json.dumps(output, indent=4, ensure_ascii=False) + "\n", encoding="utf-8")
