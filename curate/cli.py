"""python -m curate COMMAND — teacher, synthesis, filters, acceptance, review, export, and the nightly loop."""
from traces.cli_dispatch import dispatch

COMMANDS = {
    "teacher": ("curate.synth.teacher:main", "start the local teacher server on a free loopback port"),
    "synth": ("curate.synth.driver:main", "synthesize and verify examples per failure cluster (seed split only)"),
    "filter": ("curate.filters:main", "dedup and decontaminate verified examples"),
    "status": ("curate.status:main", "example counts per cluster, state and reason"),
    "accept": ("curate.accept:main", "accept verified examples that passed every filter (unattended)"),
    "review": ("curate.review.screen:main", "review pending examples in the terminal"),
    "export": ("curate.export:main", "write the training set (accepted + replay) with its manifest"),
    "sweep": ("curate.loop.sweep:main", "choose lr, epochs, rank, method and replay share on a validation split"),
    "nightly": ("curate.loop.nightly:main", "the whole cycle, resumable, with a ledger and a report"),
    "report": ("curate.loop.report_cli:main", "rewrite a nightly's report (reports/<nightly_id>/report.md)"),
    "doctor": ("curate.loop.doctor:main", "check models, database, teacher, disk and GPU; say what to fix"),
}


def main(argv=None):
    return dispatch("curate", __doc__, COMMANDS, argv)
