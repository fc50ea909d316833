"""``python -m llmscratch.cli``: the same as the ``llmscratch`` command."""

from . import main

raise SystemExit(main())
