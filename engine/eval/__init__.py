"""What a trial is evaluated on at its end (evaluate), its TensorBoard board (tensorboard),
and the metrics' estimators (metrics/), which ask the model, never an axis value's name."""
