from stepdistill.cli import main

raise SystemExit(main())
