"""The trainer: validate and fingerprint the CSV, fit candidates, evaluate, register, gate."""
