"""Inference on real images: the semantic layout S_I of a photo (panoptic segmenter or ground truth), in the
vocabulary a SmartMask version was trained with, painted exactly the way training painted S_k."""
