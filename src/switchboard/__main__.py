from switchboard.cli.main import main

raise SystemExit(main())
