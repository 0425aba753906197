"""The forward seam: sequence log-probabilities of preference pairs, in the batch layout of the run."""
