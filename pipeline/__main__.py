"""`python -m pipeline ...`: the command line lives in pipeline/cli/."""
import sys

from pipeline.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
