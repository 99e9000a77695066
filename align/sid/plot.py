"""report.json -> report.png: one picture of a SID build (matplotlib, Agg backend, no display needed).

Left: per level, the share of codes used and the perplexity as a share of the codebook size (1 = perfectly even).
Middle: per level, the largest and the mean cluster size against the balanced size N / K. Right: mean cosine
similarity of items sharing a first-level code against random pairs, and the collision rate before resolution.
"""

from pathlib import Path


def write_report_png(report: dict, path: Path) -> Path:
    """Draw `report` (as made by sid_report, plus "method") into the PNG `path` and return it."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    levels = report["levels"]
    names = [f"level {level['level'] + 1}\nK={level['size']}" for level in levels]
    positions = range(len(levels))
    figure, (use_axis, size_axis, quality_axis) = plt.subplots(1, 3, figsize=(13, 4), layout="constrained")
    figure.suptitle(f"{report.get('method', 'SIDs')}: {report['items']} items")

    width = 0.4
    use_axis.bar([p - width / 2 for p in positions], [level["utilisation"] for level in levels], width, label="used")
    use_axis.bar(
        [p + width / 2 for p in positions],
        [level["perplexity"] / level["size"] for level in levels],
        width,
        label="perplexity / K",
    )
    use_axis.set(xticks=list(positions), xticklabels=names, ylim=(0, 1.05), title="codebook use")
    use_axis.legend(loc="lower right")

    size_axis.bar(
        [p - width / 2 for p in positions], [level["largest_cluster"] for level in levels], width, label="largest"
    )
    size_axis.bar([p + width / 2 for p in positions], [level["mean_cluster"] for level in levels], width, label="mean")
    size_axis.scatter(
        list(positions), [report["items"] / level["size"] for level in levels], color="black", marker="_", s=400,
        label="N / K", zorder=3,
    )  # fmt: skip
    size_axis.set(xticks=list(positions), xticklabels=names, title="items per code")
    size_axis.legend(loc="upper right")

    coherence = report.get("coherence") or {}
    bars = {
        "cosine\nsame 1st code": coherence.get("same_first_code"),
        "cosine\nrandom pairs": coherence.get("random_pairs"),
        "collision rate\nbefore resolution": report["collisions"]["collision_rate"],
    }
    shown = {name: value for name, value in bars.items() if value is not None}
    quality_axis.bar(list(shown), list(shown.values()), color=["tab:green", "tab:gray", "tab:red"][: len(shown)])
    for i, value in enumerate(shown.values()):
        quality_axis.annotate(f"{value:.3f}", (i, value), ha="center", va="bottom")
    title = "quality"
    if "reconstruction_mse" in report:
        title += f" (reconstruction mse {report['reconstruction_mse']:.4f})"
    quality_axis.set(title=title, ylim=(min(0.0, *shown.values()), 1.05))

    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
