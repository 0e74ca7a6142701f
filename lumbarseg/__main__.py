from lumbarseg.cli import main

raise SystemExit(main())
