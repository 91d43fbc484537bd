"""``python -m lrexp``: the Hydra app in ``lrexp.app.main``."""

from lrexp.app.main import main

if __name__ == "__main__":
    main()
