"""The synthetic amodal world: procedural scenes with occlusion, written as a COCOA dataset (`smartmask synth`)."""

from smartmask.synth.cocoa_writer import generate

__all__ = ["generate"]
