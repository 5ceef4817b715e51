"""Dai & Wipf Table 1: a VAE with fixed γ, with learned γ, and the 2-Stage VAE, FID of samples.

Three rows of models/presets.py: a Gaussian decoder with its variance γ fixed at 1, the same
with γ learned (one scalar log γ, Iso-I trainable), and the 2-Stage VAE, the learned-γ VAE
followed by a second VAE with its own learned γ on its latents (Sec. 4). The one-stage VAEs
sample from N(0, I) (their rows set density="prior"; the presets keep the library's GMM), the
2-Stage VAE through its second stage. The evaluation's densities are
one setting for every row, so every row is evaluated with both, and the table shows both
columns: eval/fid_sample_prior is the paper's number for the one-stage rows,
eval/fid_sample_second_stage for the 2-Stage VAE (the paper's numbers stand in those cells,
and the report's order note compares exactly those); the other cells (a second stage on a
fixed-γ VAE, the prior of the 2-Stage VAE's first stage) are extra. The 2-Stage VAE's first
stage is the learned-γ VAE: with the same seed the two train identically, so their
first-stage columns agree and the FID columns isolate what the second stage does.

Also, from the evaluation's diagnostics: the learned decoder variance γ (eval/gamma) and the
encoder-covariance spectrum (eval/active_dims: eigenvalues of E_x Σz(x) below 0.1, Sec. 3
Eq. 9; every trial's spectrum in encoder_spectrum.json). After the run, `gamma_spectrum.png`
in the report folder plots γ over the epochs per row (train/sigma_x2, mean ± std over seeds)
and each row's mean spectrum.

The paper ran 10 trials per data set; on the embedded MNIST-5k the default is 3 seeds
(`--seeds 10` runs the paper's count), each trained to its plateau (val/mse and the learned γ
flat: engine/convergence.py watches train/sigma_x2) with the paper's halving of the learning rate
every 150 epochs, at most the paper's 400 epochs: learned γ is bounded by Adam's step (ln γ falls
by about lr per step), so 120 epochs left γ ≈ 0.1 on the 8×8 digits, far from the train MSE that
Theorem 4 says it approaches. At a fixed 300 epochs on MNIST-5k learned γ reached the train MSE
(0.0052 both, 3 seeds) with val/mse flat, but γ still moved ~5 % over the last 30 epochs, which
the report marked "not converged". Its second stage has three 1024-wide
hidden layers; a 128-wide one trains in seconds instead of more than a minute per fit, so the
rows carry second_stage_hidden=128, and the paper's numbers stand beside ours only at its
setting:

    python searches/two_stage.py                        # embedded MNIST-5k, 3 seeds, to the plateau
    python searches/two_stage.py --dataset mnist --seeds 10 --epochs 400 \\
        --set latent_dim=64 second_stage_hidden=1024 second_stage_epochs=800
"""

from engine.eval.evaluate import EvalSettings
from engine.run import Search, exit_with, run
from searches.papers import DAI_WIPF_TABLE_1

SECOND_STAGE = {"second_stage_hidden": 128}  # sized for 2 CPU cores; the paper's is 1024

SEARCH = Search(
    name="two_stage",
    title=__doc__.splitlines()[0],
    rows={"VAE-fixed-γ": ("VAE-fixed-γ", {**SECOND_STAGE, "density": "prior"}),
          "VAE-learned-γ": ("VAE-learned-γ", {**SECOND_STAGE, "density": "prior"}),
          "2-Stage-VAE": ("2-Stage-VAE", SECOND_STAGE)},
    seeds=3,
    # Adam moves log γ by ~lr per step: γ needs thousands of steps to settle; each trial to
    # its plateau (val/mse and γ flat), at most the paper's 400 epochs
    epochs="auto",
    max_epochs=400,
    metric="val/mse",
    table_metrics=("eval/fid_sample_prior", "eval/fid_sample_second_stage", "test/mse",
                   "eval/gamma", "eval/active_dims"),
    paper=DAI_WIPF_TABLE_1,
    # diagnostics for γ and the spectrum; fewer of its images and gradient draws than the
    # default, which this study does not table
    evaluation=EvalSettings(metrics=("reconstruction", "fid", "diagnostics"),
                            densities=("prior", "second_stage"), diagnostic_images=500,
                            grad_var_draws=8),
)


def plot_gamma_and_spectrum(run) -> None:
    """report/gamma_spectrum.png: γ per epoch (train/sigma_x2) and the encoder spectrum.
    `run`: the finished run (engine/run/finished.py)."""
    import json
    import numpy as np
    from matplotlib.figure import Figure
    from engine.report import save_figure
    gamma = run.curves[run.curves["metric"] == "train/sigma_x2"]
    trials = run.trials
    fig = Figure(figsize=(12, 4.5), layout="constrained")
    left, right = fig.subplots(1, 2)
    for i, label in enumerate(dict.fromkeys(trials["label"])):
        style = dict(color=f"C{i}", ls=("-", "--", ":")[i % 3])  # equal rows stay visible
        stats = gamma[gamma["label"] == label].groupby("epoch")["value"].agg(["mean", "std"])
        if not stats.empty:
            left.plot(stats.index, stats["mean"], label=label, **style)
            left.fill_between(stats.index, stats["mean"] - stats["std"].fillna(0),
                              stats["mean"] + stats["std"].fillna(0), color=f"C{i}", alpha=0.2)
        spectra = [json.loads(f.read_text())
                   for f in run.trial_files(label, "encoder_spectrum.json")]
        if spectra:
            right.plot(np.mean(spectra, axis=0), marker="o", ms=3,
                       label=f"{label} (n={len(spectra)})", **style)
    left.set(xlabel="epoch", ylabel="γ (train/sigma_x2)", yscale="log",
             title="decoder variance γ: mean ± std over seeds")
    right.axhline(0.1, color="k", lw=0.5, ls=":")
    right.axhline(0.9, color="k", lw=0.5, ls=":")
    right.set(xlabel="j (ascending)", ylabel="λ_j of E_x Σz(x): active < 0.1, superfluous > 0.9",
              title="encoder spectrum: mean over seeds")
    for ax in (left, right):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    save_figure(fig, run.report_path("gamma_spectrum.png"))  # atomically


def main(argv: list[str] | None = None) -> int:
    """The study from the command line (`vae-ablations run two_stage ...`)."""
    return run(SEARCH, argv, after=plot_gamma_and_spectrum)


if __name__ == "__main__":
    exit_with(main())
