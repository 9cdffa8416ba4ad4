"""Pictures in, clips out: decoding untrusted input images (images.py), finding ffmpeg (ffmpeg.py),
building each job's post-processing chains from presets under one rule set (chains.py), the one ffmpeg
graph that encodes them all (graph.py), the process runner (process.py), the checks of what it wrote
(verify.py) and the start-up probes of presets against this ffmpeg (probes.py)."""
