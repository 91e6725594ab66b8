"""`python -m multimodel` (also what `torchrun -m multimodel` runs)."""

from multimodel.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
