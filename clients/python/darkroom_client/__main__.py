from darkroom_client.cli import main

raise SystemExit(main())
