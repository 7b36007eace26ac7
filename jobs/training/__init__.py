"""The one training loop (loop), the batch transforms on the training device (transforms) and the
head trained on backbone features computed once (features)."""
