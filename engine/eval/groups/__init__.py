"""The evaluation's metric groups: their names, in the order `evaluate` runs them, and one
module each (engine/eval/groups/<name>.py) computing its metrics from a Context.

This file imports nothing, so that code which must run without torch (the report, reading a
run folder's notes) can take the names from here; the group modules are imported only by
engine/eval/evaluate.py.

Groups (the paper table each serves):
- "reconstruction" (UAE Table 2, MVU-AE Table 1): test/mse, test/psnr, test/ssim, test/lpips;
  test/mse_sum (summed over pixels, Takida Tables 4 and 6).
- "fid" (UAE Table 2; Takida Tables 4-6; Dai & Wipf Table 1; MVU-AE Table 2): eval/fid_rec,
  eval/fid_sample_<density> (prior, gmm10, gmm100, second_stage), eval/fid_interp_mid /
  _rand (Takida Table 5), and beside each FID its KID (eval/kid_<set>, eval/kid_std_<set>:
  unbiased at small reference sets; the std NaN, noted "n/a", where the KID subsets cannot
  differ), eval/precision_<set> / eval/recall_<set>, eval/is_<set> (Inception only). FID and
  KID are computed on features standardized by the reference split's mean and total s.d.
  (engine/eval/metrics/features.py): in the classifier's space eval/fid_<set> and
  eval/kid_<set> are the standardized ones; in Inception's, eval/fid_<set> and eval/kid_<set>
  stay the papers' raw ones (comparable with published numbers) and eval/fidz_<set>,
  eval/kidz_<set> are the standardized ones. The floor beside each: eval/floor_fid_<set>,
  eval/floor_kid_<set> (and floor_fidz / floor_kidz with Inception), what real images
  disjoint from the reference split score against it at the set's own size (or all there are:
  val first, then test or train), computed once per machine (features.real_floor); the note
  "floor" says which images.
- "latent" (MVU-AE Table 4): eval/latent_var, eval/ppl.
- "likelihood" (Takida Table 7): eval/nll (k-sample importance weighting), eval/nll_bpd.
- "diagnostics" (Takida Table 1; Dai & Wipf; UAE Sec. 4.2 / App. B): eval/gap_1e-2,
  eval/gap_1e-3, eval/els, eval/kl, eval/sigma_z2, eval/mi, eval/mse_train_sum (Takida's MSE,
  summed over pixels) and eval/mse_train on training images; eval/active_dims,
  eval/inactive_dims, eval/gamma; eval/grad_var_<sampling>; the encoder spectrum is saved
  beside the trial (encoder_spectrum.json).
- "variance" (Takida Table 3): eval/sigma_x2, the model's decoder variance Sigma_x estimated
  for each test image and pixel, averaged; eval/sigma_x2_<cell>, averaged over each cell of
  engine/data/__init__.py's partition (SU, SL, BU, BL: labels in the lower / upper half of the
  classes, upper / lower half of the rows; U, L without labels).
"""
from __future__ import annotations

GROUPS = ("reconstruction", "fid", "latent", "likelihood", "diagnostics", "variance")


def parse_groups(text: str) -> tuple[str, ...]:
    """--eval's value: "all", "none", or group names separated by commas."""
    special = {"all": GROUPS, "none": ()}
    if text.strip() in special:
        return special[text.strip()]
    return tuple(g.strip() for g in text.split(",") if g.strip())
