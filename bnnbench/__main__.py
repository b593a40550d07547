from bnnbench.cli import main

raise SystemExit(main())
