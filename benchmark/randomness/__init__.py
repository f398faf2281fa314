"""Randomness as a function of the run: named streams of the seed (``seeding``) and the noise
buffers drawn from them (``noise``). Below everything else (the data modules draw their
binarization uniforms here)."""
