"""The studies: one module each, a docstring and a `Search`, runnable three ways:

    python searches/ablation_uae.py --smoke      # the script (from a checkout, installed)
    python -m searches.ablation_uae --smoke
    vae-ablations run ablation_uae --smoke       # the console script (pyproject.toml)
"""
# The schedule every study anneals with where its paper gives none, the UAE code's
# (boschresearch/unscented-autoencoder, experiment.py): the rate halves after 5 epochs without
# a better training loss, so that --epochs auto finds each row at its plateau rather than at
# a constant rate's slow tail
ANNEALED = {"lr_schedule": "plateau"}

STUDIES = ("ablation_uae", "uae_paper_vs_code", "sigma_points", "tune_uae", "two_stage",
           "sigma_x_sweep", "variance_parameterization", "noise_variance", "codebook")
