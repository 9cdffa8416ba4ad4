"""Pictures in, clips out: decoding untrusted input images, finding and probing ffmpeg, building each
job's post-processing chains from presets, running ffmpeg and checking what it wrote."""
