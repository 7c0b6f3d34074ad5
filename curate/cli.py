"""python -m curate COMMAND — teacher, synthesis, filters, acceptance, review and export."""
from traces.cli_dispatch import dispatch

COMMANDS = {
    "teacher": ("curate.teacher:main", "start the local teacher server on a free loopback port"),
    "synth": ("curate.synth:main", "synthesize and verify examples per failure cluster (seed split only)"),
    "filter": ("curate.filters:main", "dedup and decontaminate verified examples"),
    "status": ("curate.status:main", "example counts per cluster, state and reason"),
    "accept": ("curate.accept:main", "accept verified examples that passed every filter (unattended)"),
    "review": ("curate.review:main", "review pending examples in the terminal"),
    "export": ("curate.export:main", "write the training set (accepted + replay) with its manifest"),
}


def main(argv=None):
    return dispatch("curate", __doc__, COMMANDS, argv)
