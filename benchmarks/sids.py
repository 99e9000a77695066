"""Semantic-ID quantizers at scale and on a real catalog. Prints one JSON line per configuration.

    python benchmarks/sids.py                                   # 1,000,000 x 384 synthetic, 3 levels x 256 codes
    python benchmarks/sids.py --n 20000 --ref-n 20000           # a quick run
    python benchmarks/sids.py --skip-synthetic --industrial ../shared/data/industrial

Synthetic configurations (all on the same seeded data: --groups categories of --clusters product families, each
item a family plus Gaussian noise, L2-normalised, like sentence embeddings; see synthetic()):

    ours-full        rq-kmeans-balanced on all --n items: wall time, largest cluster per level against n / K,
                     collisions before resolution, uniqueness after extra-level and after reassign, peak memory
    reference        residual quantization through scikit-learn's KMeans (k-means++, n_init=1, its default
                     max_iter and tol) on a seeded subsample of --ref-n items (the whole data when --ref-n >= --n)
    ours-subsample   rq-kmeans-balanced on that same subsample, with the speed-up and error ratio against the reference
    ours-tolerance-subsample   the same with --balance-tolerance (clusters up to ceil((1 + t) n / K)), same ratios
    ours-plain-subsample   plain rq-kmeans (no size cap, the reference's objective) on that subsample, the same ratios

Peak memory is the process's peak resident set (resource.getrusage) after each configuration: it only grows, so
ours-full runs first and its figure covers the data (n x dim float32) plus the quantizer.

--industrial DIR (LC-Rec layout: items.json + *.inter.json, e.g. ../shared/data/industrial) prepares the catalog with
`align prepare` into a scratch run directory, embeds item texts once with the default encoder (all-MiniLM-L6-v2,
offline package) and runs `align sids` for every method (and for the catalog's own minionerec_sids.json when
present), printing each report.json as one JSON line and keeping each report.png in --out.
"""

import argparse
import json
import math
import os
import platform
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from align.sid.collisions import collision_stats, make_unique
from align.sid.rqkmeans import RQResult, fit_rq_kmeans


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def synthetic(n: int, dim: int, groups: int, clusters: int, noise: float, seed: int) -> torch.Tensor:
    """(n, dim) float32 unit rows with two levels of clusters, like product categories and product families.

    `groups` unit directions; `clusters` families, each its group's direction plus a random vector of norm 0.5;
    an item is a random family plus a random vector of norm about `noise`, L2-normalised.
    """
    generator = torch.Generator().manual_seed(seed)
    unit = torch.nn.functional.normalize
    tops = unit(torch.randn(groups, dim, generator=generator), dim=1)
    families = tops[torch.randint(groups, (clusters,), generator=generator)]
    families += 0.5 * unit(torch.randn(clusters, dim, generator=generator), dim=1)
    x = torch.empty(n, dim)
    for start in range(0, n, 65536):
        rows = min(65536, n - start)
        which = torch.randint(clusters, (rows,), generator=generator)
        chunk = families[which] + noise / math.sqrt(dim) * torch.randn(rows, dim, generator=generator)
        x[start : start + rows] = unit(chunk, dim=1)
    return x


def ours(
    x: torch.Tensor, args: argparse.Namespace, balanced: bool = True, tolerance: float = 0.0
) -> tuple[dict, RQResult]:
    """rq-kmeans-balanced (or plain rq-kmeans), timed, with balance and error figures; returns them and the fit."""
    started = time.perf_counter()
    result = fit_rq_kmeans(x, args.levels, args.k, balanced=balanced, iters=args.iters, seed=args.seed,
                           refine_sweeps=args.refine_sweeps, balance_tolerance=tolerance)
    seconds = time.perf_counter() - started
    n = x.shape[0]
    largest = [int(torch.bincount(result.codes[:, level], minlength=args.k).max()) for level in range(args.levels)]
    return {
        "seconds": round(seconds, 2),
        "reconstruction_mse": round(result.level_errors[-1], 6),
        "mse_per_level": [round(error, 6) for error in result.level_errors],
        "largest_cluster": largest,
        "largest_over_n_over_k": [round(size / (n / args.k), 4) for size in largest],
        "collision_rate_before": round(collision_stats(result.codes)["collision_rate"], 6),
    }, result


def resolution(x: torch.Tensor, result: RQResult) -> dict:
    """Uniqueness after each collision method, as `align sids` resolves them, and its time."""
    codes, out = result.codes, {}

    def distances_of(rows: torch.Tensor) -> torch.Tensor:
        return result.last_level_distances(x[rows], codes[rows])

    for method in ("extra-level", "reassign"):
        started = time.perf_counter()
        try:
            unique = make_unique(codes, method, result.level_sizes, distances_of)
        except ValueError as err:
            out[method] = {"error": str(err)}
            continue
        distinct = torch.unique(unique, dim=0).shape[0]
        out[method] = {
            "unique": distinct == codes.shape[0],
            "levels": unique.shape[1],
            "largest_cluster_last_level": int(torch.bincount(unique[:, codes.shape[1] - 1]).max()),
            "seconds": round(time.perf_counter() - started, 2),
        }
    return out


def sklearn_reference(x: np.ndarray, levels: int, k: int, seed: int) -> dict:
    """Residual quantization the straightforward way: one scikit-learn KMeans per level on the residual."""
    from sklearn.cluster import KMeans

    started = time.perf_counter()
    residual = x.copy()
    errors = []
    for level in range(levels):
        kmeans = KMeans(n_clusters=k, n_init=1, random_state=seed + level).fit(residual)
        residual -= kmeans.cluster_centers_[kmeans.labels_].astype(np.float32)
        errors.append(float(np.square(residual, dtype=np.float64).sum(1).mean()))
    return {
        "seconds": round(time.perf_counter() - started, 2),
        "reconstruction_mse": round(errors[-1], 6),
        "mse_per_level": [round(error, 6) for error in errors],
    }


def emit(row: dict) -> None:
    print(json.dumps(row), flush=True)


def run_synthetic(args: argparse.Namespace, machine: dict) -> None:
    started = time.perf_counter()
    x = synthetic(args.n, args.dim, args.groups, args.clusters, args.noise, args.seed)
    data = {"n": args.n, "dim": args.dim, "groups": args.groups, "clusters": args.clusters, "noise": args.noise}
    common = {"levels": args.levels, "k": args.k, "iters": args.iters, "refine_sweeps": args.refine_sweeps}
    emit({"config": "data", **data, "seconds": round(time.perf_counter() - started, 2), "gb": x.numel() * 4 / 2**30})

    figures, result = ours(x, args)
    bound = all(ratio <= 1.05 for ratio in figures["largest_over_n_over_k"])
    emit({"config": "ours-full", "method": "rq-kmeans-balanced", **data, **common, **figures,
          "balance_within_1.05": bound, "resolution": resolution(x, result),
          "peak_rss_gb": round(peak_rss_gb(), 3), **machine})  # fmt: skip
    del result

    ref_n = min(args.ref_n, args.n)
    rows = torch.randperm(args.n, generator=torch.Generator().manual_seed(args.seed + 1))[:ref_n].sort().values
    sample = x[rows].contiguous()
    del x
    subsample = {"n": ref_n, "subsample_of": args.n, "dim": args.dim}
    reference = sklearn_reference(sample.numpy(), args.levels, args.k, args.seed)
    emit({"config": "reference", "method": "sklearn KMeans residual", **subsample, "levels": args.levels,
          "k": args.k, **reference, "peak_rss_gb": round(peak_rss_gb(), 3), **machine})  # fmt: skip
    for config, method, balanced, tolerance in (
        ("ours-subsample", "rq-kmeans-balanced", True, 0.0),
        ("ours-tolerance-subsample", "rq-kmeans-balanced", True, args.balance_tolerance),
        ("ours-plain-subsample", "rq-kmeans", False, 0.0),
    ):
        mine, _ = ours(sample, args, balanced, tolerance)
        emit({"config": config, "method": method, "balance_tolerance": tolerance, **subsample, **common, **mine,
              "speedup_vs_reference": round(reference["seconds"] / mine["seconds"], 2),
              "mse_vs_reference": round(mine["reconstruction_mse"] / reference["reconstruction_mse"], 4),
              "peak_rss_gb": round(peak_rss_gb(), 3), **machine})  # fmt: skip


INDUSTRIAL_CONFIGS = [
    ("rq-kmeans", {"method": "rq-kmeans"}),
    ("rq-kmeans-balanced", {"method": "rq-kmeans-balanced"}),
    ("rq-kmeans-balanced+reassign", {"method": "rq-kmeans-balanced", "collision": "reassign"}),
    ("rq-kmeans-prefix-balanced", {"method": "rq-kmeans-prefix-balanced"}),
    ("rq-kmeans-balanced+behaviour0.3", {"method": "rq-kmeans-balanced", "behaviour_weight": 0.3}),
    ("rq-vae", {"method": "rq-vae"}),
    ("rq-vae+sinkhorn", {"method": "rq-vae", "vae_sinkhorn": True}),
]


def run_industrial(args: argparse.Namespace, machine: dict) -> None:
    from align.data.prepare import PrepareArgs
    from align.data.prepare import run as prepare
    from align.run_dir import read_json
    from align.sid.build import SIDArgs
    from align.sid.build import run as build_sids

    source = Path(args.industrial)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        run_dir = Path(scratch)
        prepare(PrepareArgs(run_dir=str(run_dir), source=str(source)))
        embeddings = out / "industrial_embeddings.npy"
        configs = list(INDUSTRIAL_CONFIGS)
        if (source / "minionerec_sids.json").is_file():
            configs.append(("imported minionerec_sids.json", {"import_sids": str(source / "minionerec_sids.json")}))
        for name, options in configs:
            if embeddings.is_file():
                options = {"embeddings_npy": str(embeddings), **options}
            started = time.perf_counter()
            try:
                sid_dir = build_sids(
                    SIDArgs(run_dir=str(run_dir), levels=args.levels, codebook_size=args.k, seed=args.seed, **options)
                )
            except ValueError as err:  # e.g. reassign on a prefix fuller than the codebook: report, go on
                emit({"config": f"industrial {name}", "error": str(err), **machine})
                continue
            seconds = time.perf_counter() - started
            if not embeddings.is_file():
                shutil.copy(sid_dir / "embeddings.npy", embeddings)  # text only: the first config has no fusion
            report = read_json(sid_dir / "report.json")
            shutil.copy(sid_dir / "report.png", out / f"industrial_{name.replace(' ', '_')}.png")
            emit({"config": f"industrial {name}", "seconds": round(seconds, 2), **report, **machine})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000, help="synthetic items")
    parser.add_argument("--dim", type=int, default=384, help="embedding dimensions")
    parser.add_argument("--groups", type=int, default=256, help="synthetic top-level categories")
    parser.add_argument("--clusters", type=int, default=32768, help="synthetic item families (within categories)")
    parser.add_argument("--noise", type=float, default=0.3, help="noise norm of an item around its family")
    parser.add_argument("--levels", type=int, default=3)
    parser.add_argument("--k", type=int, default=256, help="codes per level")
    parser.add_argument("--iters", type=int, default=20, help="our k-means iterations per level (on a sample)")
    parser.add_argument("--refine-sweeps", type=int, default=1, help="our refinement sweeps over all items")
    parser.add_argument("--balance-tolerance", type=float, default=0.04,
                        help="tolerance of the ours-tolerance-subsample line: clusters up to ceil((1 + t) n / K)")
    parser.add_argument("--ref-n", type=int, default=100_000, help="items for the scikit-learn comparison")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch and scikit-learn (0 = all)")
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument("--industrial", default="", help="LC-Rec-layout folder of a real catalog")
    parser.add_argument("--out", default="runs/benchmarks/sids", help="where --industrial keeps PNGs and embeddings")
    args = parser.parse_args()

    from threadpoolctl import threadpool_limits

    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    machine = {"threads": threads, "torch": torch.__version__, "cpu": cpu_name(), "cpu_count": os.cpu_count()}
    with threadpool_limits(limits=threads):
        if not args.skip_synthetic:
            run_synthetic(args, machine)
        if args.industrial:
            run_industrial(args, machine)


if __name__ == "__main__":
    main()
