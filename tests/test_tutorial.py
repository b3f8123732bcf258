"""docs/tutorial.md runs as written and prints what its text states.

The ```pycon blocks of the tutorial are one Python session: they are run in
order, in one namespace, by the standard library's doctest, which compares
every printed value with the one written under it (whitespace normalised,
nothing else). A change of the code that changes a stated number fails here.
"""
import doctest
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TUTORIAL = ROOT / "docs" / "tutorial.md"


def session(text: str) -> str:
    """The bodies of the ```pycon blocks, in order, as one doctest text."""
    blocks = re.findall(r"^```pycon\n(.*?)^```", text, flags=re.M | re.S)
    return "\n".join(blocks)


def test_tutorial_session_prints_what_the_text_states():
    text = TUTORIAL.read_text(encoding="utf-8")
    test = doctest.DocTestParser().get_doctest(session(text), {"__name__": "__tutorial__"},
                                               "docs/tutorial.md", str(TUTORIAL), 0)
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    failures = []
    runner.run(test, out=failures.append)
    assert len(test.examples) > 50
    assert runner.failures == 0, "docs/tutorial.md:\n" + "".join(failures)


def test_every_step_names_modules_that_exist():
    text = TUTORIAL.read_text(encoding="utf-8")
    steps = re.split(r"^## ", text, flags=re.M)[1:]
    for step in steps:
        if step.startswith("Where next"):
            continue
        title = step.splitlines()[0]
        assert re.search(r"`relunet/\w+\.py`", title), f"step {title!r} names no module"
    for path in set(re.findall(r"`(relunet/[\w/]+(?:\.py|/))`", text)):
        assert (ROOT / path).exists(), f"docs/tutorial.md names {path}, which does not exist"
