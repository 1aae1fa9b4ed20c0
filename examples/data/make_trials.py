"""Writes trials.csv: a simulated trial of a drug in 12 clinics, 40 patients each. Recovery is Bernoulli with
logit p = -0.4 + 0.9 [drug] - 0.03 (age - 50) + u_clinic, u_clinic ~ Normal(0, 0.6): the drug helps, older
patients recover less often, and clinics differ. Run: python make_trials.py"""

import csv
from pathlib import Path

import numpy as np

rng = np.random.default_rng(2026)
clinics, per_clinic = 12, 40
effects = rng.normal(0.0, 0.6, clinics)
with open(Path(__file__).with_name("trials.csv"), "w", newline="") as file:
    writer = csv.writer(file)
    writer.writerow(["recovered", "treatment", "age", "clinic"])
    for clinic in range(clinics):
        for _ in range(per_clinic):
            treatment = rng.choice(["control", "drug"])
            age = int(rng.integers(25, 80))
            logit = -0.4 + 0.9 * (treatment == "drug") - 0.03 * (age - 50) + effects[clinic]
            recovered = int(rng.random() < 1 / (1 + np.exp(-logit)))
            writer.writerow([recovered, treatment, age, f"clinic{clinic + 1:02d}"])
