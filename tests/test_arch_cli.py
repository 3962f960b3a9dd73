"""benchmark.arch's scale: proxy by default (the scale of the embedded default's runs), a preset's, or a hint."""

from benchmark.arch import main


def test_a_proxy_runs_architecture_prints_by_default(capsys):
    assert main(["--space", "s1", "--arch", "7-9-1-3-8-4-9-1"]) == 0
    assert capsys.readouterr().out.startswith("s1/proxy at 28 px, 10 classes")


def test_an_architecture_of_the_other_scale_gets_a_hint(capsys):
    assert main(["--space", "s1", "--scale", "imagenet", "--arch", "7-9-1-3-8-4-9-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith("it is an architecture of the proxy scale: add --scale proxy")


def test_the_scale_follows_a_preset_and_a_bad_preset_is_one_line(capsys):
    assert main(["--space", "s1", "--preset", "imagenet", "--arch", "first"]) == 0
    assert capsys.readouterr().out.startswith("s1/imagenet at 224 px")
    assert main(["--space", "s1", "--preset", "nope", "--arch", "first"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown preset 'nope'")


def test_a_published_name_needs_no_scale(capsys):
    assert main(["--space", "cream", "--arch", "cream-287"]) == 0
    assert "published cream-287" in capsys.readouterr().out
