import sys

from traces.quiet import quiet

quiet()  # before evals.cli imports anything: tqdm and huggingface_hub read their switches at import
from evals.cli import main  # noqa: E402

sys.exit(main())
