from securefl.cli import main

raise SystemExit(main())
