import sys

from kuberunner.cli import main

sys.exit(main())
