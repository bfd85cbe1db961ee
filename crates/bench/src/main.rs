//! `sextant-bench`: build Sextant's HNSW over an `.fvecs` file and measure recall@k, QPS
//! and latency for a sweep of `ef`, single-threaded search. Prints one JSON object.
//!
//! Used by `bench/run.py`, which runs hnswlib, FAISS and the REST server on the same data
//! in the same run; see docs/benchmarks.md.
//!
//! `--serve`: build, print one JSON line (build facts), then answer one JSON command per
//! stdin line — `{"cmd":"search","ef":E}` (one timed pass over the queries),
//! `{"cmd":"mt_build"}` (an all-cores build, timed, discarded), `{"cmd":"quit"}` — so the
//! driver can interleave engines pass by pass and compare them at the same moments.

use anyhow::{bail, Context, Result};
use clap::Parser;
use segment::distance;
use segment::hnsw::{Arena, Hnsw, HnswParams};
use segment::Distance;
use std::io::BufRead;
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
    /// Seed of the graph's level assignment.
    #[arg(long, default_value_t = 42)]
    seed: u64,
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
    /// Answer commands on stdin after the build (see the module doc) instead of sweeping.
    #[arg(long)]
    serve: bool,
}

/// CPU seconds (user + system) this process has used so far.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // fields after the parenthesised command name; utime and stime are fields 14 and 15
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (ticks(11) + ticks(12)) / hz
}

/// One timed pass over the query set: (wall seconds, per-query latencies in ms, hits).
fn pass(
    g: &Hnsw,
    arena: &Arena<'_>,
    queries: &[f32],
    gt: &[u32],
    gk: usize,
    k: usize,
    ef: usize,
) -> (f64, Vec<f64>, usize) {
    let accept = |_: u32| true;
    let nq = queries.len() / arena.dim;
    let mut lat = Vec::with_capacity(nq);
    let mut hits = 0usize;
    let t = Instant::now();
    for (qi, q) in queries.chunks(arena.dim).enumerate() {
        let t1 = Instant::now();
        let res = g.search(arena, q, k, ef, &accept);
        lat.push(t1.elapsed().as_secs_f64() * 1e3);
        let truth = &gt[qi * gk..qi * gk + k];
        hits += res.iter().filter(|(id, _)| truth.contains(id)).count();
    }
    (t.elapsed().as_secs_f64(), lat, hits)
}

fn percentiles(mut lat: Vec<f64>) -> (f64, f64) {
    lat.sort_by(|x, y| x.total_cmp(y));
    let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize];
    (pct(0.5), pct(0.99))
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
    let cpu0 = cpu_secs();
    let params = |threads| HnswParams {
        m: a.m,
        ef_construct: a.ef_construct,
        seed: a.seed,
        threads,
    };
    let cached = a
        .graph_cache
        .as_ref()
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|b| Hnsw::from_bytes(&b));
    let loaded = cached.is_some();
    let g = cached.unwrap_or_else(|| Hnsw::build(arena, &nodes, params(a.build_threads)));
    let (build_secs, build_cpu_secs) = if loaded {
        (0.0, 0.0)
    } else {
        (t.elapsed().as_secs_f64(), cpu_secs() - cpu0)
    };
    if let (Some(p), false) = (&a.graph_cache, loaded) {
        std::fs::write(p, g.to_bytes()).with_context(|| format!("writing {p}"))?;
    }
    let mut out = serde_json::json!({
        "engine": "sextant-inprocess",
        "simd": segment::simd::kernels().name,
        "n": n, "dim": dim, "queries": nq, "k": a.k, "distance": a.distance,
        "m": a.m, "ef_construct": a.ef_construct, "build_threads": a.build_threads,
        "build_secs": build_secs,
        "build_cpu_secs": build_cpu_secs,
        "graph_bytes": g.link_bytes(),
        "degree_stats": g.degree_stats(),
        "vector_bytes": base.len() * 4,
        "rss_mb": rss_mb(),
        "rss_delta_build_mb": rss_mb() - rss_before,
    });
    if a.serve {
        println!("{out}");
        for line in std::io::stdin().lock().lines() {
            let cmd: serde_json::Value = serde_json::from_str(&line?)?;
            let reply = match cmd["cmd"].as_str() {
                Some("search") => {
                    let ef = cmd["ef"].as_u64().context("search needs ef")? as usize;
                    let (secs, lat, hits) = pass(&g, &arena, &queries, &gt, gk, a.k, ef);
                    let (p50, p99) = percentiles(lat);
                    serde_json::json!({"ef": ef, "secs": secs, "hits": hits, "queries": nq,
                                       "p50_ms": p50, "p99_ms": p99})
                }
                Some("mt_build") => {
                    let t = Instant::now();
                    let g2 = Hnsw::build(arena, &nodes, params(0));
                    let secs = t.elapsed().as_secs_f64();
                    drop(g2);
                    serde_json::json!({"build_secs": secs})
                }
                Some("quit") => break,
                other => bail!("unknown command {other:?}"),
            };
            println!("{reply}");
        }
        return Ok(());
    }
    let mut runs = Vec::new();
    for ef in a.ef.split(',').map(|x| x.trim().parse::<usize>()) {
        let ef = ef?;
        let mut best: Option<(f64, Vec<f64>, usize)> = None;
        for _ in 0..a.repeat.max(1) {
            let p = pass(&g, &arena, &queries, &gt, gk, a.k, ef);
            if best.as_ref().is_none_or(|b| p.0 < b.0) {
                best = Some(p);
            }
        }
        let (secs, lat, hits) = best.expect("at least one pass");
        let (p50, p99) = percentiles(lat);
        runs.push(serde_json::json!({
            "ef": ef,
            "recall": hits as f64 / (nq * a.k) as f64,
            "qps": nq as f64 / secs,
            "p50_ms": p50,
            "p99_ms": p99,
        }));
    }
    out["runs"] = runs.into();
    println!("{out}");
    Ok(())
}
