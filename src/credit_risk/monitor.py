"""`python -m credit_risk.monitor`: the offline stability report and outcome import (monitoring.cli)."""

import sys

from credit_risk.monitoring.cli import main

if __name__ == "__main__":
    sys.exit(main())
