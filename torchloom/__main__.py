import sys

from torchloom.cli import main

sys.exit(main())
