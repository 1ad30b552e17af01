"""`python -m credit_risk.train`: the trainer's entry point (the Dockerfile and the docs use it)."""

import sys

from credit_risk.training.cli import main

if __name__ == "__main__":
    sys.exit(main())
