import sys

from traces.quiet import quiet

quiet()  # before curate.cli imports anything: tqdm and huggingface_hub read their switches at import
from curate.cli import main  # noqa: E402

sys.exit(main())
