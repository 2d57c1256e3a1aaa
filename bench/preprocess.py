"""Preprocess throughput and memory: MB/s of raw text and tokens/s for the ``bert`` and ``mlm`` processors.

The reference corpus is repeated into a temp file of the requested size; each run is the whole command in a fresh
Python process (Ray start-up included); the peak resident memory is the sum of RSS over the process tree (driver,
GCS, raylet and every Ray worker), sampled every 0.2 s by a thread. Two sums are printed: ``peak_rss_gb`` counts
pages shared between processes (libraries, the object store's shared memory) once per process that maps them, so it
overstates; ``peak_pss_gb`` (proportional set size: a shared page is split between the processes sharing it) is the
memory the job really holds; ``peak_driver_rss_gb`` is the ``launch.py`` process alone (the tokenizing actors write
the shards, so the driver's memory must not grow with the data). ``--breakdown`` adds the largest processes at the
PSS peak. One line per run::

    .venv/bin/python bench/preprocess.py --processor bert mlm --mb 39
    .venv/bin/python bench/preprocess.py --processor bert --mb 500 2048
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "uer"
CORPUS = {"bert": "CLUECorpusSmall_bert_sampled.txt", "mlm": "CLUECorpusSmall_sampled.txt"}


def _psutil():
    try:
        import psutil
    except ImportError:  # Ray vendors psutil
        import ray

        sys.path.insert(0, str(Path(ray.__file__).parent / "thirdparty_files"))
        import psutil
    return psutil


def make_corpus(processor: str, mb: float, directory: Path) -> Path:
    source = DATA / "corpora" / CORPUS[processor]
    path = directory / f"{processor}_{mb:g}mb.txt"
    target = int(mb * 2**20)
    if path.exists() and path.stat().st_size >= target:
        return path
    text = source.read_bytes()
    if not text.endswith(b"\n\n"):
        text = text.rstrip(b"\n") + b"\n\n"  # keep document boundaries between repeats
    with open(path, "wb") as f:
        written = 0
        while written < target:
            f.write(text)
            written += len(text)
    return path


def run_once(processor: str, corpus: Path, args, out_dir: Path) -> dict:
    psutil = _psutil()
    targets = {"mlm": 1.0, "sp": 1.0} if processor == "bert" else {"mlm": 1.0}
    spec = {
        "tokenizer": {"name": "bert", "vocab_path": str(DATA / "models" / "google_zh_vocab.txt")},
        "data": {"corpus": [str(corpus)], "output_dir": str(out_dir),
                 **({"chunk_mb": args.chunk_mb} if args.chunk_mb else {}),
                 "tokenize_actors": args.actors, "tokenize_cpus": args.cpus,
                 "processor": {"name": processor, "seq_length": args.seq}},
        "model": {"targets": targets},
        "run": {"name": "bench", "storage_path": str(out_dir.parent)},
    }
    spec_path = out_dir.parent / f"{out_dir.name}.yaml"
    spec_path.parent.mkdir(parents=True, exist_ok=True)
    spec_path.write_text(json.dumps(spec))  # JSON is YAML
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_DEDUP_LOGS": "1"}
    started = time.time()
    # The whole user command, Ray's start-up and shut-down included.
    proc = subprocess.Popen([sys.executable, str(ROOT / "launch.py"), "preprocess", "--config", str(spec_path)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE if not args.verbose else None,
                            stderr=subprocess.STDOUT, text=True)
    peak = [0]
    peak_pss = [0]
    peak_driver = [0]  # the launch.py process alone: with actor-written shards it must not grow with the data
    breakdown: list = []
    cpu: dict[int, float] = {}  # pid -> latest user+sys seconds (processes of the tree, while alive)
    names: dict[int, str] = {}
    done = threading.Event()

    def sample():
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
                total = total_pss = 0
                sizes = []
                for p in procs:
                    try:
                        info = p.memory_full_info()
                        total += info.rss
                        total_pss += info.pss
                        names.setdefault(p.pid, " ".join(p.cmdline()[:3])[-60:])
                        sizes.append((info.pss, names[p.pid]))
                        times = p.cpu_times()
                        cpu[p.pid] = times.user + times.system
                    except psutil.Error:
                        pass
                peak[0] = max(peak[0], total)
                peak_driver[0] = max(peak_driver[0], root.memory_info().rss)
                if total_pss > peak_pss[0]:
                    peak_pss[0] = total_pss
                    breakdown[:] = sorted(sizes, reverse=True)
            except psutil.Error:
                pass
            done.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = proc.communicate()
    seconds = time.time() - started
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"preprocess failed ({proc.returncode}):\n{(stdout or '')[-3000:]}")
    manifest = json.loads((out_dir / "manifest.json").read_text())
    mb = manifest["corpus_bytes"] / 2**20
    return {"processor": processor, "seq": args.seq, "corpus_mb": round(mb, 1), "wall_s": round(seconds, 1),
            "stage_s": manifest["seconds"], "mb_per_s": round(mb / seconds, 2),
            "tokens_per_s": round(manifest["tokens"] / seconds), "instances": manifest["instances"],
            "peak_rss_gb": round(peak[0] / 2**30, 2), "peak_pss_gb": round(peak_pss[0] / 2**30, 2),
            "peak_driver_rss_gb": round(peak_driver[0] / 2**30, 3), "cpu_s": round(sum(cpu.values()), 1),
            "mb_per_cpu_s": round(mb / max(sum(cpu.values()), 1e-9), 2), "actors": args.actors, "actor_cpus": args.cpus,
            "chunks": manifest["chunks"],
            **({"breakdown_mb": [(round(b / 2**20), name) for b, name in breakdown[:8]],
                "breakdown_cpu_s": sorted(((round(c, 1), names[pid]) for pid, c in cpu.items()), reverse=True)[:8]}
               if args.breakdown else {})}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processor", nargs="+", default=["bert", "mlm"], choices=sorted(CORPUS))
    parser.add_argument("--mb", nargs="+", type=float, default=[39.0])
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--actors", type=int, default=None, help="tokenizing actors (default: one per CPU)")
    parser.add_argument("--cpus", type=float, default=0.5)
    parser.add_argument("--chunk-mb", type=float, default=None, help="MB of text per chunk (default: the config's)")
    parser.add_argument("--tmp", default=None, help="folder for the generated corpora and outputs")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--breakdown", action="store_true", help="the largest processes at the memory peak")
    args = parser.parse_args(argv)
    tmp = Path(args.tmp or tempfile.mkdtemp(prefix="uer_bench_"))
    tmp.mkdir(parents=True, exist_ok=True)
    for processor in args.processor:
        for mb in args.mb:
            corpus = make_corpus(processor, mb, tmp)
            result = run_once(processor, corpus, args, tmp / "out" / f"{processor}_{mb:g}")
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
