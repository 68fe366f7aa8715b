import sys

from qcli.cli import main

sys.exit(main())
