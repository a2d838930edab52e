"""What the model is conditioned on, built the same way at training and at inference: the vocabulary (label →
id → colour), the R×R grid layouts are painted on, and the guidance map G of Eq. 5."""
