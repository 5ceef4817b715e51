"""MVU-AE Tables 1 and 4: codebook sizes of MVU-AE's soft penalty and of VQ-VAE, beside VAE and WAE.

MVU-AE (Eq. 18) trains a deterministic autoencoder with a codebook's two terms, ‖sg[E(x)] − z_q‖²
and ‖sg[z_q] − E(x)‖², as a soft penalty: the decoder sees E(x), never the code. VQ-VAE
substitutes the nearest code (straight-through gradient, commitment 0.25). Both rows are the
presets of models/presets.py with K = 8, 32, 128 and 512 codes (512: the presets' own; the
paper does not state its K), beside the VAE and WAE-MMD presets. The metrics are Table 1's
reconstruction (test PSNR, SSIM, LPIPS) and Table 4's latent variance (the total variance of the
encoded test set; for VQ-VAE of its codes) and perceptual path length. LPIPS and PPL need
torchvision's AlexNet weights in the torch hub cache; without them the report says so. After
the run, `codebook.png` in the report folder plots PSNR, SSIM and the latent variance against
K (mean ± std over seeds), the VAE and WAE-MMD as lines.

The paper's numbers (searches/papers.py) are at 256 × 256 px with a 64 × 64 latent map, a
network our library does not have, so they never stand beside ours as cells; the report sets
our order of VAE, VQ-VAE, WAE-MMD and MVU-AE (at K = 512) beside the paper's on each of its
data sets (its VQGAN as our VQ-VAE) and says where it differs.

    python searches/codebook.py                         # embedded MNIST-5k, to the plateau, ~9 min
    python searches/codebook.py --dataset celebahq --seeds 3 --epochs 80
"""

from engine.eval.evaluate import EvalSettings
from engine.run import Search, exit_with, run
from searches import ANNEALED
from searches.papers import MVU_AE_TABLES_1_4

SIZES = (8, 32, 128, 512)
CODEBOOKS = ("VQ-VAE", "MVU-AE")  # presets: hard substitution, soft penalty

SEARCH = Search(
    name="codebook",
    title=__doc__.splitlines()[0],
    rows={"VAE": ("VAE", ANNEALED), "WAE-MMD": ("WAE-MMD", ANNEALED),
          **{f"{preset} K={k}": (preset, {**ANNEALED, "codebook_size": k})
             for preset in CODEBOOKS for k in SIZES}},
    seeds=3,
    epochs="auto",  # each trial to its plateau (engine/run/stopper.py), 20 to 150 epochs
    max_epochs=150,
    metric="val/mse",
    table_metrics=("test/psnr", "test/ssim", "test/lpips", "eval/latent_var", "eval/ppl"),
    paper=MVU_AE_TABLES_1_4,
    evaluation=EvalSettings(metrics=("reconstruction", "latent")),
)


def plot_against_codebook_size(run) -> None:
    """report/codebook.png: PSNR, SSIM and latent variance against K per codebook row.
    `run`: the finished run (engine/run/finished.py)."""
    from matplotlib.figure import Figure
    from engine.report import save_figure
    table = run.table
    metrics = ("test/psnr", "test/ssim", "eval/latent_var")
    fig = Figure(figsize=(13, 4), layout="constrained")
    for ax, metric in zip(fig.subplots(1, len(metrics)), metrics):
        if f"{metric} mean" not in table:
            ax.set_title(f"{metric}: not in this run")
            continue
        for i, preset in enumerate(CODEBOOKS):
            sizes = [k for k in SIZES if f"{preset} K={k}" in table.index]
            rows = table.loc[[f"{preset} K={k}" for k in sizes]]
            ax.errorbar(sizes, rows[f"{metric} mean"], yerr=rows[f"{metric} std"].fillna(0),
                        marker="o", capsize=3, color=f"C{i}", label=preset)
        for i, label in enumerate(("VAE", "WAE-MMD")):
            if label in table.index:
                ax.axhline(table.loc[label, f"{metric} mean"], color=f"C{i + 2}", ls="--",
                           label=label)
        ax.set_xscale("log", base=2)
        ax.set(xlabel="codebook size K", ylabel=metric, title=f"{metric}: mean ± std over seeds")
        if metric == "eval/latent_var":
            ax.set_yscale("log")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    save_figure(fig, run.report_path("codebook.png"))  # atomically


def main(argv: list[str] | None = None) -> int:
    """The study from the command line (`vae-ablations run codebook ...`)."""
    return run(SEARCH, argv, after=plot_against_codebook_size)


if __name__ == "__main__":
    exit_with(main())
