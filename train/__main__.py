import sys

from traces.quiet import quiet

quiet()  # before train.cli imports anything: tqdm and huggingface_hub read their switches at import
from train.cli import main  # noqa: E402

sys.exit(main())
