"""The one training loop (loop) and the batch transforms on the training device (transforms)."""
