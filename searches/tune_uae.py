"""UAE hyperparameters: an Optuna search (ASHA) over β, γ, κ and the learning rate.

The UAE's loss (Janjoš et al. Eq. 7, 16) weighs the Wasserstein-2 regularizer by β and the
λmax(Σ)-weighted decoder gradient penalty by γ; its sigma points μ ± √(κ + D)·L[:, i] (Eq. 5)
spread by κ > −D. The paper states none of their values (its Appendix A is not in our copy);
the preset's come from the authors' code: β = 2.5e-4, γ = 1e-6, κ = 1e-3, and Adam's 1e-3.
The base is the UAE as that code computes it (preset "UAE-code", as in ablation_uae.py). Each
is sampled log-uniformly: β and the learning rate over 1.5 and 1 decades each side of the
preset's; γ from the preset's 1e-6, where the penalty's weighted size (1e-8 to 2e-6 per input)
is negligible beside a reconstruction error of ≈ 0.013, up to 1, where it outweighs it; κ from
1e-4 to 10, over which the sigma points' distance from μ, √(κ + D) posterior standard
deviations, runs from 4.0 to 5.1 at D = 16 (κ ≤ 0, which a log scale cannot reach, is left
out).

Tune's OptunaSearch (TPE, seed 0) proposes each trial's values on the UAE preset, annealed with
ReduceLROnPlateau; ASHA stops the weak ones at epochs 9 and 27 on the validation MSE, and a trial
ends at its plateau (at least 20 epochs, at most 81). Every completed trial is evaluated
(test MSE, PSNR, SSIM, FID of reconstructions and of GMM-10 samples). The report lists the
best configurations (top 5 of the completed trials with their values and metrics:
report/best_configs.csv, .md) and Optuna's parameter importances (fANOVA over every trial's
last value, as the searcher saw them, and over the completed trials alone:
report/importances.csv, .md), beside the table of every trial (engine/report/tuning.py).

    python searches/tune_uae.py                          # embedded MNIST-5k, 30 samples, to the plateau
    python searches/tune_uae.py --samples 100 --epochs 81 --dataset fashion
"""

from ray import tune

from engine.eval.evaluate import EvalSettings
from engine.run import Search, exit_with, run
from searches import ANNEALED

SEARCH = Search(
    name="tune_uae",
    title=__doc__.splitlines()[0],
    rows={"UAE": ("UAE-code", ANNEALED)},  # the base every sample changes
    space={"beta": tune.loguniform(1e-5, 1e-2),  # preset 2.5e-4
           "gamma": tune.loguniform(1e-6, 1e0),  # preset 1e-6: from negligible to dominant
           "kappa": tune.loguniform(1e-4, 1e1),  # preset 1e-3
           "lr": tune.loguniform(1e-4, 1e-2)},  # preset 1e-3
    algorithm="optuna",
    samples=30,
    scheduler="asha",  # rungs at epochs 9, 27, 81 (a ninth, a third and all of the cap)
    seeds=1,
    epochs="auto",  # each trial to its plateau, at most 81 epochs; ASHA's rungs at 9, 27, 81
    max_epochs=81,
    metric="val/mse",
    table_metrics=("val/mse", "test/mse", "test/psnr", "test/ssim", "eval/fid_rec",
                   "eval/fid_sample_gmm10"),
    smoke={"epochs": 2, "seeds": 1, "samples": 4},
    evaluation=EvalSettings(metrics=("reconstruction", "fid"), densities=("gmm10",)),
)


def main(argv: list[str] | None = None) -> int:
    """The study from the command line (`vae-ablations run tune_uae ...`)."""
    return run(SEARCH, argv)


if __name__ == "__main__":
    exit_with(main())
