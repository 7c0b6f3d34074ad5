"""Offline NLTK: the punkt_tab data is built from bundled prose, lm-eval never downloads, langdetect is seeded."""
import subprocess
import sys
import textwrap

import pytest

from evals import nltk_offline

PROBE = textwrap.dedent("""
    import sys, nltk
    def boom(*a, **k):
        raise SystemExit("nltk.download was called")
    nltk.download = boom
    nltk.data.path[:] = [sys.argv[1]]   # only the data we built: no user or system copy can help
    import lm_eval.tasks.ifeval.instructions_util as u
    print(u.count_sentences(sys.argv[2]))
    print(len(nltk.word_tokenize("Hello there. I am fine, thanks.")))
""")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Train once per module (~5 s on one core) into a folder of its own."""
    root = tmp_path_factory.mktemp("nltk_data")
    return root, nltk_offline.build(root)


def test_build_into_folder_and_count_sentences_offline(built):
    tmp_path, folder = built
    assert nltk_offline.is_built(tmp_path)
    assert folder == tmp_path / "tokenizers" / "punkt_tab" / "english"
    text = "Dr. Smith went to Washington. He arrived at 3 p.m. on Monday! Did he stay? Yes, for two days."
    out = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path), text],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["4", "9"]


def test_build_is_idempotent(built):
    tmp_path, _ = built
    stamp = (nltk_offline.model_dir(tmp_path) / "abbrev_types.txt").stat().st_mtime_ns
    nltk_offline.build(tmp_path)
    assert (nltk_offline.model_dir(tmp_path) / "abbrev_types.txt").stat().st_mtime_ns == stamp


def test_ensure_forbids_downloads_and_seeds_langdetect():
    import nltk
    from langdetect import DetectorFactory, detect
    nltk_offline.ensure()
    with pytest.raises(nltk_offline.OfflineDownloadRefused):
        nltk.download("punkt_tab")
    assert DetectorFactory.seed == 0
    # a short, ambiguous string: seeded detection must give the same answer every time
    answers = {detect("ciao bello come va") for _ in range(5)}
    assert len(answers) == 1


def test_count_sentences_in_process():
    nltk_offline.ensure()
    from lm_eval.tasks.ifeval import instructions_util
    assert instructions_util.count_sentences("One. Two! Three?") == 3
