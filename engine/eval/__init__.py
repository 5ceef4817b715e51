"""What a trial is evaluated on at its end (evaluate runs the metric groups of groups/ with
settings.EvalSettings), its TensorBoard board (tensorboard), and the metrics' estimators
(metrics/), which ask the model, never an axis value's name. Imports nothing: the report takes
the group names from groups/ without torch."""
