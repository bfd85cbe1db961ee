//! `sextant-bench`: build Sextant's HNSW over an `.fvecs` file and measure recall@k, QPS
//! and latency for a sweep of `ef`, single-threaded search. Prints one JSON object.
//!
//! Used by `bench/run.py`, which runs hnswlib, FAISS and the REST server on the same data
//! in the same run; see docs/benchmarks.md.

use anyhow::{bail, Context, Result};
use clap::Parser;
use segment::distance;
use segment::hnsw::{Arena, Hnsw, HnswParams};
use segment::Distance;
use std::time::Instant;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    base: String,
    #[arg(long)]
    queries: String,
    /// Ground truth neighbours (`.ivecs`, at least `k` per query).
    #[arg(long)]
    gt: String,
    #[arg(long, default_value = "Euclid")]
    distance: String,
    #[arg(long, default_value_t = 16)]
    m: usize,
    #[arg(long, default_value_t = 100)]
    ef_construct: usize,
    /// Threads for the build (0 = all cores).
    #[arg(long, default_value_t = 1)]
    build_threads: usize,
    #[arg(long, default_value = "10,20,40,80,160,320")]
    ef: String,
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// Passes over the query set per ef (the best pass is reported).
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Load the graph from this file if it exists (build time is then 0), else build and
    /// save it there: for profiling search alone.
    #[arg(long)]
    graph_cache: Option<String>,
}

fn read_vecs<T: Copy>(path: &str, conv: fn([u8; 4]) -> T) -> Result<(Vec<T>, usize)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {path}"))?;
    if bytes.len() < 4 {
        bail!("{path}: empty");
    }
    let dim = u32::from_le_bytes(bytes[0..4].try_into()?) as usize;
    let row = 4 + 4 * dim;
    if dim == 0 || bytes.len() % row != 0 {
        bail!(
            "{path}: not a .fvecs/.ivecs file (dim {dim}, {} bytes)",
            bytes.len()
        );
    }
    let mut out = Vec::with_capacity(bytes.len() / row * dim);
    for r in bytes.chunks_exact(row) {
        for c in r[4..].chunks_exact(4) {
            out.push(conv(c.try_into()?));
        }
    }
    Ok((out, dim))
}

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() -> Result<()> {
    let a = Args::parse();
    let dist = match a.distance.as_str() {
        "Cosine" => Distance::Cosine,
        "Euclid" => Distance::Euclid,
        "Dot" => Distance::Dot,
        "Manhattan" => Distance::Manhattan,
        d => bail!("unknown distance {d}"),
    };
    let (mut base, dim) = read_vecs(&a.base, f32::from_le_bytes)?;
    let (mut queries, qdim) = read_vecs(&a.queries, f32::from_le_bytes)?;
    let (gt, gk) = read_vecs(&a.gt, u32::from_le_bytes)?;
    if qdim != dim || gk < a.k {
        bail!("dimension mismatch (base {dim}, queries {qdim}) or ground truth shorter than k ({gk} < {})", a.k);
    }
    if dist == Distance::Cosine {
        base.chunks_mut(dim).for_each(distance::normalize);
        queries.chunks_mut(dim).for_each(distance::normalize);
    }
    let n = base.len() / dim;
    let nq = queries.len() / dim;
    let arena = Arena {
        data: &base,
        dim,
        distance: dist,
    };
    // as the server does for its vector arena (SEXTANT_HUGE_PAGES=0 turns it off)
    segment::mem::advise_huge_pages(&base);
    let nodes: Vec<u32> = (0..n as u32).collect();
    let rss_before = rss_mb();
    let t = Instant::now();
    let cached = a
        .graph_cache
        .as_ref()
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|b| Hnsw::from_bytes(&b));
    let loaded = cached.is_some();
    let g = cached.unwrap_or_else(|| {
        Hnsw::build(
            arena,
            &nodes,
            HnswParams {
                m: a.m,
                ef_construct: a.ef_construct,
                seed: 42,
                threads: a.build_threads,
            },
        )
    });
    let build_secs = if loaded {
        0.0
    } else {
        t.elapsed().as_secs_f64()
    };
    if let (Some(p), false) = (&a.graph_cache, loaded) {
        std::fs::write(p, g.to_bytes()).with_context(|| format!("writing {p}"))?;
    }
    let accept = |_: u32| true;
    let mut runs = Vec::new();
    for ef in a.ef.split(',').map(|x| x.trim().parse::<usize>()) {
        let ef = ef?;
        let mut best: Option<(f64, Vec<f64>, usize)> = None;
        for _ in 0..a.repeat.max(1) {
            let mut lat = Vec::with_capacity(nq);
            let mut hits = 0usize;
            let t = Instant::now();
            for (qi, q) in queries.chunks(dim).enumerate() {
                let t1 = Instant::now();
                let res = g.search(&arena, q, a.k, ef, &accept);
                lat.push(t1.elapsed().as_secs_f64() * 1e3);
                let truth = &gt[qi * gk..qi * gk + a.k];
                hits += res.iter().filter(|(id, _)| truth.contains(id)).count();
            }
            let secs = t.elapsed().as_secs_f64();
            if best.as_ref().is_none_or(|b| secs < b.0) {
                best = Some((secs, lat, hits));
            }
        }
        let (secs, mut lat, hits) = best.expect("at least one pass");
        lat.sort_by(|x, y| x.partial_cmp(y).expect("finite latencies"));
        let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize];
        runs.push(serde_json::json!({
            "ef": ef,
            "recall": hits as f64 / (nq * a.k) as f64,
            "qps": nq as f64 / secs,
            "p50_ms": pct(0.5),
            "p99_ms": pct(0.99),
        }));
    }
    let out = serde_json::json!({
        "engine": "sextant-inprocess",
        "simd": segment::simd::kernels().name,
        "n": n, "dim": dim, "queries": nq, "k": a.k, "distance": a.distance,
        "m": a.m, "ef_construct": a.ef_construct, "build_threads": a.build_threads,
        "build_secs": build_secs,
        "graph_bytes": g.link_bytes(),
        "vector_bytes": base.len() * 4,
        "rss_mb": rss_mb(),
        "rss_delta_build_mb": rss_mb() - rss_before,
        "runs": runs,
    });
    println!("{out}");
    Ok(())
}
