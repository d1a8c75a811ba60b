import sys

from optimize.run import main

sys.exit(main())
