"""UAE Appendix D: 1, 2, 4 and 8 sigma points against a VAE with as many random draws.

The UAE (full covariance, Wasserstein-2 regularizer, λmax(Σ)-weighted decoder gradient
penalty) trained with k = 1, 2, 4, 8 sigma points per input, each reconstructed (UAE Eq. 8 with
k points drawn uniformly from the 2D+1), beside UAE Table 2's VAE with k reparameterized draws.
The UAE is the preset UAE-code, the authors' code's reading, as in ablation_uae.py (their code
produced the appendix's numbers; in the paper's reading its raw full-covariance factor puts
the UAE far behind the VAE, see uae_paper_vs_code.py and docs/studies.md). The table has
the FIDs of UAE Table 2 (reconstructions, GMM-10 samples, midpoint interpolations), test MSE,
and the training time per epoch, `time/epoch_mean_s`: the mean of `time/epoch_s` (training
and validation, not the evaluation) over a trial's epochs. Trials run side by side on shared
cores, so times compare within a run, roughly.

Appendix D's Table 4 is not in our copy of the paper (it ends with the references), so no
published numbers stand beside ours. Its main text (Sec. 6) claims that more sigma points
improve the metrics at an approximately linear cost in training time; the report sets our
order of the UAE rows beside that claim (searches/papers.py, UAE_APPENDIX_D).

    python searches/sigma_points.py                     # embedded MNIST-5k, to the plateau
    python searches/sigma_points.py --dataset fashion --seeds 5 --epochs 100
"""

from engine.eval.evaluate import EvalSettings
from engine.run import Search, exit_with, run
from searches import ANNEALED
from searches.papers import UAE_APPENDIX_D

POINTS = (1, 2, 4, 8)

SEARCH = Search(
    name="sigma_points",
    title=__doc__.splitlines()[0],
    rows={**{f"UAE-{k}σ": ("UAE-code", {**ANNEALED, "num_samples": k}) for k in POINTS},
          **{f"VAE-{k} draw{'s' if k > 1 else ''}": ("VAE", {**ANNEALED, "num_samples": k})
             for k in POINTS}},
    seeds=3,
    epochs="auto",  # each trial to its plateau (engine/run/stopper.py), 20 to 150 epochs
    max_epochs=150,
    metric="val/mse",
    table_metrics=("test/mse", "eval/fid_rec", "eval/fid_sample_gmm10", "eval/fid_interp_mid",
                   "time/epoch_mean_s"),
    paper=UAE_APPENDIX_D,
    evaluation=EvalSettings(metrics=("reconstruction", "fid"), densities=("gmm10",)),
)


def main(argv: list[str] | None = None) -> int:
    """The study from the command line (`vae-ablations run sigma_points ...`)."""
    return run(SEARCH, argv)


if __name__ == "__main__":
    exit_with(main())
