#!/usr/bin/python3
"""Batch jobs on Dask: embeddings or greedy generations of a JSON-lines corpus.

    tools/batch.py embed    --model DIR --input corpus.jsonl --output out.jsonl [options]
    tools/batch.py generate --model DIR --input corpus.jsonl --output out.jsonl [options]

Input: one JSON object per line with a "text" string ({"text": "..."}); a line that is not one
is refused, naming its line number. Output, one line per input line, in input order:
  embed     {"index": I, "tokens": N, "embedding": [...]}: the line `tessera embed` prints for
            that text at the same index, byte for byte (floats as "%.9g")
  generate  {"index": I, "text": "..."}: the greedy continuation `tessera generate` prints

The input is cut into partitions of --partition-size lines; each partition is one Dask task.
Without --scheduler the job starts a local cluster of --workers worker processes with one
thread each (a model of --threads kernel threads in each); with --scheduler ADDRESS it uses that
cluster (its workers need the `tessera` Python module: --python DIR or installed). A worker
process loads the model once, at its first task, and keeps it for the others (a cache in the
worker process, keyed by the model's directory and threads). A task that was running on a worker
that died is run again by Dask on another.

Each finished partition is written to OUT.parts/NNNNN.jsonl (a temporary file renamed into
place) with OUT.parts/job.json naming the job (command, model, options, input size and SHA-256).
An interrupted job (Ctrl-C, a killed client) started again with the same arguments computes only
the partitions that have no part file; a different job in the same OUT.parts is refused
(--restart discards it). When all parts exist they are joined in input order into OUT (a
temporary file renamed into place) and OUT.parts is removed (--keep-parts keeps it). Progress
goes to stderr. Exit codes: 0 done, 2 bad input or arguments, 130 interrupted (resumable).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import signal
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_PYTHON = os.path.join(ROOT, "build", "python")


class JobError(Exception):
    """A problem with the job's input or arguments: one line, exit code 2."""


# ------------------------------------------------------------------------------ worker side
# These run in the worker processes. The model cache lives on the process's dask Worker object,
# so it outlives every task the process runs (and is not shipped with the task).

def _worker_model(model_dir: str, threads: int, python_dir: str | None):
    if python_dir and python_dir not in sys.path:
        sys.path.insert(0, python_dir)
    import tessera  # noqa: F401  (the module of build/python, or installed)
    try:
        from distributed import get_worker
        holder = get_worker()
    except (ImportError, ValueError):
        holder = sys.modules[__name__]  # run outside a worker (--workers 0, tests)
    cache = holder.__dict__.setdefault("_tessera_models", {})
    key = (os.path.realpath(model_dir), threads)
    loaded = False
    if key not in cache:
        cache[key] = tessera.Model(model_dir, threads=threads)
        loaded = True
    return cache[key], loaded


def format_embedding_line(index: int, tokens: int, vector) -> str:
    """The line `tessera embed` prints (tools/cmd_embed.cpp): "%.9g" of each float."""
    values = ", ".join("%.9g" % v for v in vector.tolist())
    return f'{{"index": {index}, "tokens": {tokens}, "embedding": [{values}]}}\n'


def run_partition(kind: str, model_dir: str, threads: int, python_dir: str | None, opts: dict,
                  first: int, texts: list) -> dict:
    """One partition: texts[k] is input line first + k. Returns its output lines as one str,
    and who computed it."""
    model, loaded = _worker_model(model_dir, threads, python_dir)
    if kind == "embed":
        ids = [model.tokenize(t, special=True) for t in texts]
        vectors = model.embed(ids, pooling=opts["pooling"], normalize=opts["normalize"],
                              batch_size=opts["batch_size"]) if ids else []
        out = "".join(format_embedding_line(first + k, len(ids[k]), vectors[k])
                      for k in range(len(texts)))
    else:
        kw = {"batch_size": opts["batch_size"]}
        if opts.get("max_new_tokens") is not None:
            kw["max_new_tokens"] = opts["max_new_tokens"]
        results = model.generate(list(texts), **kw) if texts else []
        out = "".join(json.dumps({"index": first + k, "text": r}, ensure_ascii=False) + "\n"
                      for k, r in enumerate(results))
    return {"lines": out, "pid": os.getpid(), "loaded": loaded}


# ------------------------------------------------------------------------------ client side

def read_corpus(path: str) -> list:
    texts = []
    try:
        f = open(path, "rb")
    except OSError as e:
        raise JobError(f"--input: cannot read '{path}': {e.strerror}")
    with f:
        for n, raw in enumerate(f, start=1):
            try:
                obj = json.loads(raw)
            except (UnicodeDecodeError, ValueError) as e:
                raise JobError(f"{path}:{n}: not a JSON line ({e})")
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                raise JobError(f"{path}:{n}: expected an object with a \"text\" string, got "
                               f"{raw[:80].decode('utf-8', 'replace').strip()!r}")
            texts.append(obj["text"])
    return texts


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_atomic(path: str, data: str) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def part_path(parts_dir: str, i: int) -> str:
    return os.path.join(parts_dir, f"{i:05d}.jsonl")


def prepare_parts_dir(parts_dir: str, job: dict, restart: bool) -> None:
    """Creates OUT.parts with job.json, or checks that the one there is this job's."""
    manifest = os.path.join(parts_dir, "job.json")
    if os.path.isdir(parts_dir) and restart:
        shutil.rmtree(parts_dir)
    if os.path.isdir(parts_dir):
        try:
            with open(manifest) as f:
                old = json.load(f)
        except (OSError, ValueError):
            raise JobError(f"{parts_dir} exists without a readable job.json (--restart "
                           "discards it)")
        if old != job:
            diff = sorted(k for k in set(old) | set(job) if old.get(k) != job.get(k))
            raise JobError(f"{parts_dir} holds another job's partitions (differs in: "
                           f"{', '.join(diff)}); --restart discards them")
        return
    os.makedirs(parts_dir)
    write_atomic(manifest, json.dumps(job, indent=1, sort_keys=True) + "\n")


def start_client(args):
    """A dask.distributed Client: on --scheduler, or on a new local cluster."""
    # Workers start with this environment: they import the module from --python.
    if args.python:
        os.environ["PYTHONPATH"] = os.pathsep.join(
            [args.python] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    import dask
    from distributed import Client, LocalCluster
    # A task that was on a worker when it died is run again; fail only when that keeps
    # happening (dask's default allows 3 such deaths per task).
    dask.config.set({"distributed.scheduler.allowed-failures": 3})
    if args.scheduler:
        return Client(args.scheduler, timeout="30s"), None
    cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                           dashboard_address=None, scheduler_port=0, host="127.0.0.1",
                           silence_logs=logging.ERROR)
    return Client(cluster), cluster


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=("embed", "generate"),
                    help="embed (a bert model) or generate (gpt2, transformer)")
    ap.add_argument("--model", required=True, help="model directory")
    ap.add_argument("--input", required=True, help="JSON lines with a \"text\" string each")
    ap.add_argument("--output", required=True, help="output JSON lines (written atomically)")
    ap.add_argument("--scheduler", help="address of a running dask scheduler (tcp://host:port); "
                    "default: a local cluster of --workers processes")
    ap.add_argument("--workers", type=int, default=2,
                    help="worker processes of the local cluster, one thread each (default 2)")
    ap.add_argument("--threads", type=int, default=1,
                    help="kernel threads of each worker's model (default 1)")
    ap.add_argument("--partition-size", type=int, default=256,
                    help="input lines per task (default 256; a multiple of --batch-size makes "
                    "the same batches as one `tessera embed` call)")
    ap.add_argument("--batch-size", type=int, default=32,
                    help="texts run together inside a task (default 32, as `tessera embed`)")
    ap.add_argument("--pooling", choices=("cls", "mean", "pooler"), default="cls",
                    help="embed: pooling (default cls)")
    ap.add_argument("--normalize", action="store_true", help="embed: L2-normalize each vector")
    ap.add_argument("--max-new-tokens", type=int,
                    help="generate: tokens per text (default: the model's default)")
    ap.add_argument("--python", default=DEFAULT_PYTHON if os.path.isdir(DEFAULT_PYTHON) else None,
                    help="folder of the tessera Python module (default build/python)")
    ap.add_argument("--restart", action="store_true",
                    help="discard the partitions of an earlier run in OUT.parts")
    ap.add_argument("--keep-parts", action="store_true",
                    help="keep OUT.parts after the output is written")
    ap.add_argument("--quiet", action="store_true", help="no progress lines")
    args = ap.parse_args(argv)
    for name in ("workers", "threads", "partition_size", "batch_size"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        ap.error("--max-new-tokens must be at least 1")

    def log(msg):
        if not args.quiet:
            print(f"batch: {msg}", file=sys.stderr, flush=True)

    try:
        if not os.path.isfile(os.path.join(args.model, "config.json")):
            raise JobError(f"--model: '{args.model}' has no config.json")
        texts = read_corpus(args.input)
        out = os.path.abspath(args.output)
        parts_dir = out + ".parts"
        opts = {"pooling": args.pooling, "normalize": args.normalize,
                "batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens}
        job = {"command": args.command, "model": os.path.realpath(args.model),
               "input_sha256": file_sha256(args.input), "lines": len(texts),
               "partition_size": args.partition_size,
               "options": opts if args.command == "embed" else
               {"batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens}}
        prepare_parts_dir(parts_dir, job, args.restart)
    except JobError as e:
        print(f"batch: {e}", file=sys.stderr)
        return 2

    size = args.partition_size
    partitions = [(i, first, texts[first:first + size])
                  for i, first in enumerate(range(0, len(texts), size))]
    todo = [p for p in partitions if not os.path.exists(part_path(parts_dir, p[0]))]
    log(f"{args.command}: {len(texts)} texts, {len(partitions)} partitions of {size}, "
        f"{len(partitions) - len(todo)} done already (resumed from {parts_dir})"
        if len(todo) < len(partitions) else
        f"{args.command}: {len(texts)} texts, {len(partitions)} partitions of {size}")

    t0 = time.perf_counter()
    if todo:
        client = cluster = None
        interrupted = False
        # SIGTERM as Ctrl-C: the parts written so far stay, the job can resume.
        signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            from distributed import as_completed
            t_cluster = time.perf_counter()
            client, cluster = start_client(args)
            t_cluster = time.perf_counter() - t_cluster
            log(f"cluster: {client.scheduler.address if hasattr(client, 'scheduler') else '?'}, "
                f"{len(client.scheduler_info()['workers'])} worker(s)")
            futures = {}
            model_dir = os.path.realpath(args.model)
            for i, first, chunk in todo:
                f = client.submit(run_partition, args.command, model_dir, args.threads,
                                  args.python, opts, first, chunk,
                                  key=f"tessera-{args.command}-{i:05d}-{job['input_sha256'][:12]}",
                                  pure=False)
                futures[f] = i
            done = len(partitions) - len(todo)
            loads, pids = 0, set()
            t_compute = time.perf_counter()
            for f in as_completed(list(futures)):
                i = futures[f]
                r = f.result()
                write_atomic(part_path(parts_dir, i), r["lines"])
                loads += r["loaded"]
                pids.add(r["pid"])
                done += 1
                log(f"partition {i} done ({done}/{len(partitions)}, worker pid {r['pid']})")
            t_compute = time.perf_counter() - t_compute
            n = sum(len(p[2]) for p in todo)
            log(f"models loaded: {loads} in {len(pids)} worker process(es) that ran tasks")
            log(f"computed {n} texts in {t_compute:.2f} s ({n / t_compute:.1f} texts/s; "
                f"the cluster started in {t_cluster:.2f} s before)")
        except KeyboardInterrupt:
            interrupted = True
        except JobError as e:
            print(f"batch: {e}", file=sys.stderr)
            return 2
        except Exception as e:  # noqa: BLE001  (a task's error: tessera.Error names the input)
            print(f"batch: {type(e).__name__}: {e}", file=sys.stderr)
            return 2
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            try:
                if client is not None:
                    client.close(timeout=10)
                if cluster is not None:
                    cluster.close(timeout=10)
            except Exception:  # noqa: BLE001  (closing after an interrupt)
                pass
        if interrupted:
            have = sum(os.path.exists(part_path(parts_dir, p[0])) for p in partitions)
            print(f"batch: interrupted with {have} of {len(partitions)} partitions in "
                  f"{parts_dir}; the same command resumes", file=sys.stderr)
            return 130

    # Join the parts in input order.
    tmp = f"{out}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as dst:
        for i, _, chunk in partitions:
            with open(part_path(parts_dir, i), encoding="utf-8") as src:
                data = src.read()
            if data.count("\n") != len(chunk):
                os.unlink(tmp)
                print(f"batch: {part_path(parts_dir, i)} has {data.count(chr(10))} lines, "
                      f"expected {len(chunk)}; --restart recomputes everything", file=sys.stderr)
                return 2
            dst.write(data)
        dst.flush()
        os.fsync(dst.fileno())
    os.replace(tmp, out)
    if not args.keep_parts:
        shutil.rmtree(parts_dir)
    log(f"wrote {out}: {len(texts)} lines in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
