"""The mathematics of the notes in plain PyTorch: the network and its forward pass, the costs and
penalties with their derivatives, hand-written backpropagation (and its fused fast path), the
optimizers, the three-way gradient check. No Lightning, no data module, no command line."""
