"""`python -m seller_dist.cli ...`: the `seller-dist` console script without installing it."""

import sys

from seller_dist.cli import main

sys.exit(main())
