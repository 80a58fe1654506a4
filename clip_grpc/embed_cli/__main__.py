import sys

from clip_grpc.embed_cli import main

sys.exit(main())
