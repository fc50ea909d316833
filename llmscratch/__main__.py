from llmscratch.cli import main

raise SystemExit(main())
