from i2v_watcher.cli import main

raise SystemExit(main())
