"""Knowing a good clip from a bad one, on the CPU, without a model: six scores of the generated frames
against the input image (one module per score, each with its formula, range and threshold: motion.py,
frozen.py, flicker.py, black.py, drift.py, sharpness.py), the judgement that names the symptoms
(score.py), and the original WebUI's troubleshooting table as data, with the changes a re-roll makes
for each symptom (advice.py). clip.py prepares what they share: the working size and the optical flow."""

from i2v_watcher.judge.score import SCORES, SYMPTOMS, Judgement, rank, score

__all__ = ["SCORES", "SYMPTOMS", "Judgement", "rank", "score"]
