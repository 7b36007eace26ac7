"""Networks from scratch: a no-autograd CNN stack (torch tensors), a NumPy MLP, LayerNorm twice."""
