"""A downstream look during pre-training (``train.probe``): rank 0 fine-tunes a copy of the encoder for a few steps on
each probe task and scores its dev split; ``dev_metric`` is the mean of the tasks' main metrics. UER's point made
visible while pre-training runs: which encoder and targets pay off downstream (Ray Tune's trials are judged by it).

The probe data is read and tokenized once on the driver (``prepare_probes``) and read by rank 0 from storage. The
probe runs on its own random stream, so it never changes the pre-training's (resumes stay exact).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

from uer_ray import storage
from uer_ray.finetune.data import read_split, read_written, write_split
from uer_ray.finetune.finetune import concat_outputs
from uer_ray.registry import TASKS
from uer_ray.tokenizers import build_tokenizer


def probe_location(job, index: int, split: str) -> str:
    return storage.join(job.run_dir, "probe", str(index), split)


def prepare_probes(job, progress=print) -> None:
    """Driver: each probe task's train and dev rows, tokenized with the pre-training tokenizer, into storage."""
    probe = job.train.probe
    if probe is None:
        return
    tokenizer = build_tokenizer(job.tokenizer)
    for index, spec in enumerate(probe.tasks):
        task = TASKS.get(spec.task.name)(spec.task, tokenizer, spec.seq_length)
        train = read_split(task, spec.train_path, job.finetune.max_bad_fraction, progress, max_rows=spec.max_train_rows)
        task.fit_labels(train)
        dev = read_split(task, spec.dev_path, job.finetune.max_bad_fraction, progress, max_rows=spec.max_dev_rows)
        write_split(train, probe_location(job, index, "train"))
        write_split(dev, probe_location(job, index, "dev"))


class Probe:
    def __init__(self, job, vocab, rank: int):
        self.job, self.vocab, self.rank = job, vocab, rank
        self.cfg = job.train.probe
        self.tasks = []
        if rank == 0:
            tokenizer = build_tokenizer(job.tokenizer)
            for index, spec in enumerate(self.cfg.tasks):
                train = read_written(probe_location(job, index, "train"))
                task = TASKS.get(spec.task.name)(spec.task, tokenizer, spec.seq_length)
                task.fit_labels(train)
                self.tasks.append((spec.task.name, task, train, read_written(probe_location(job, index, "dev"))))

    def run(self, encoder_model) -> dict[str, float]:
        """Every rank calls it; rank 0 probes and every rank gets rank 0's metrics."""
        metrics = {}
        if self.rank == 0:
            with torch.random.fork_rng(devices=[]):
                for index, (name, task, train, dev) in enumerate(self.tasks):
                    torch.manual_seed(self.job.train.seed + index)
                    metrics[f"probe_{index}_{name}_{task.metric}"] = self._probe(encoder_model, task, train, dev)
            metrics["dev_metric"] = float(np.mean(list(metrics.values())))
        if dist.is_initialized() and dist.get_world_size() > 1:
            shared = [metrics]
            dist.broadcast_object_list(shared, src=0)
            metrics = shared[0]
        return metrics

    def _probe(self, encoder_model, task, train, dev) -> float:
        device = next(encoder_model.parameters()).device
        model = task.build_model(self.job.model, self.vocab).to(device)
        backbone = {k: v for k, v in encoder_model.state_dict().items() if k.startswith(("embedding.", "encoder."))}
        model.load_state_dict(backbone, strict=False)
        with torch.enable_grad():  # the loop evaluates under no_grad; a probe trains
            self._fit(model, task, train.features, device)
        model.eval()
        with torch.no_grad():
            outputs = [task.predict(model, {k: v.to(device) for k, v in task.collate(dev.features.slice(i, 64)).items()})
                       for i in range(0, dev.features.num_rows, 64)]
        return float(task.score(concat_outputs(outputs), dev)[task.metric])

    def _fit(self, model, task, rows, device) -> None:
        """``probe.steps`` steps of AdamW over the rows in a seeded order (cycling when they run out)."""
        optimizer = torch.optim.AdamW(model.parameters(), lr=self.cfg.lr)
        order = np.random.default_rng(self.job.train.seed).permutation(rows.num_rows)
        size = min(self.cfg.batch_size, rows.num_rows)
        model.train()
        for step in range(self.cfg.steps):
            start = (step * size) % max(1, rows.num_rows - size + 1)
            batch = {k: v.to(device) for k, v in task.collate(rows.take(order[start:start + size])).items()}
            loss, _ = task.loss(model, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
