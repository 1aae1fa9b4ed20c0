"""Writes reaction.csv: simulated reaction times of 18 subjects over 10 days of sleep restriction, with a
subject-specific baseline and slope (correlation 0.3), shaped after lme4's sleepstudy fit (Bates et al. 2015,
section 5): 251 ms + 10.5 ms a day, subject sds 25 ms and 6 ms, residual sd 25 ms. Run: python make_reaction.py"""

import csv
from pathlib import Path

import numpy as np

rng = np.random.default_rng(2015)
subjects, days = 18, np.arange(10)
sds, correlation = np.array([25.0, 6.0]), 0.3
covariance = np.outer(sds, sds) * np.array([[1, correlation], [correlation, 1]])
effects = rng.multivariate_normal(np.zeros(2), covariance, size=subjects)
with open(Path(__file__).with_name("reaction.csv"), "w", newline="") as file:
    writer = csv.writer(file)
    writer.writerow(["reaction", "days", "subject", "group"])
    for s in range(subjects):
        for day in days:
            mean = 251.0 + effects[s, 0] + (10.5 + effects[s, 1]) * day
            writer.writerow([f"{mean + rng.normal(0, 25.0):.2f}", day, f"s{s + 1:02d}", "ab"[s % 2]])
