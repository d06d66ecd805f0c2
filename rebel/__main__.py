import sys

from rebel.kernels import pin_from_argv

pin_from_argv(sys.argv[1:])  # before torch is imported: the config's runtime.cpu_kernels

from rebel.cli import main  # noqa: E402

sys.exit(main())
