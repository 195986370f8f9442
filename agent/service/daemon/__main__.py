"""`python -m hosttune.agent.service.daemon`: the same as `hosttuned`."""

import sys

from hosttune.agent.service.daemon.main import main

sys.exit(main())
