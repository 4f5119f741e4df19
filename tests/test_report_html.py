"""report.html renders the Markdown that `report` writes: tables, lists, images embedded, text escaped."""

import base64
import html
import json
import re
from pathlib import Path

from sweeps.reporting import html as report_html

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16


def test_the_page_embeds_images_and_escapes_what_users_typed(tmp_path: Path):
    (tmp_path / "a.png").write_bytes(PNG)
    markdown = "\n".join([
        "# Sweep `reg=l1,l2 tracking.experiment=<script>alert(1)</script>`", "",
        "- sweep `abc` started **now**, see [MLflow](http://127.0.0.1:5000/#/experiments/1/runs)",
        "- a [bad link](javascript:alert(1)) and [another](//evil.example/x)", "",
        "## Jobs, best val_data_loss first", "",
        "| status | reg | final_val_data_loss |", "|---|---|---|",
        "| FINISHED | l1 | 0.25 |", "| FAILED | a\\|b |  |", "",
        "## A plot", "", "![A plot](a.png)", "", "![Missing](gone.png)"])
    (tmp_path / "report.md").write_text(markdown)
    page = report_html.write(tmp_path, ["a.png", "gone.png"]).read_text()
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert '<a href="http://127.0.0.1:5000/#/experiments/1/runs">MLflow</a>' in page
    assert 'href="javascript' not in page and 'href="//' not in page
    assert "<th>final_val_data_loss</th>" in page and "<tr><td>FINISHED</td><td>l1</td><td>0.25</td></tr>" in page
    assert "<td>a|b</td><td></td>" in page and "---" not in page
    data = page.split('src="data:image/png;base64,')[1].split('"')[0]
    assert base64.b64decode(data) == PNG
    assert "gone.png is missing" in page
    assert page.count("<ul>") == 1 and page.count("<li>") == 2 and "<h2>A plot</h2>" in page


def test_a_bar_in_a_value_stays_in_its_cell(tmp_path: Path):
    from sweeps.reporting import table

    rows = [{"status": "FINISHED", "data.train_file": "a|b.csv", "final_val_data_loss": 0.25}]
    (tmp_path / "report.md").write_text(table.to_markdown(rows))
    page = report_html.write(tmp_path, []).read_text()
    assert "<tr><td>FINISHED</td><td>a|b.csv</td><td>0.25</td></tr>" in page


# ---------------------------------------------------------------- text from the store is never structure

SECRET = b"TOP-SECRET-0f3c9a of the machine that renders the report"


def _planted_sweep(uri: str, secret: Path) -> str:
    """A sweep as anyone can write it on an unauthenticated team server: a command tag, a job's
    overrides and its error carrying newlines, image lines naming files of the reader's machine,
    brackets, a link and raw HTML; one job with a curve, so the report draws real figures too."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.create_experiment("sweeps")
    command = (f"model.name='a\n![k]({secret})\nb' reg=l1,l2\n![up](../{secret.name})\n"
               "| x | y |\n# heading\n<img src=x onerror=alert(1)>")
    parent = client.create_run(experiment, tags={"sweeps.kind": "sweep", "sweeps.command": command,
                                                 "sweeps.swept": json.dumps(["reg", "model.name"])})
    for reg, name, error in (("l1", f"x\n![j]({secret})", None),
                             ("l2", "[click](http://evil.example/)", f"OSError: ![e]({secret}) **b** `c`\nsecond")):
        job = client.create_run(experiment, run_name=f"{reg} run", tags={
            "mlflow.parentRunId": parent.info.run_id, "sweeps.kind": "job",
            "sweeps.overrides": json.dumps([f"reg={reg}", f"model.name={name}"]),
            **({"sweeps.error": error} if error else {})})
        for epoch in range(3):
            client.log_metric(job.info.run_id, "val_data_loss", 1.0 / (epoch + 1), step=epoch + 1)
        client.set_terminated(job.info.run_id, "FAILED" if error else "FINISHED")
    client.set_terminated(parent.info.run_id, "FAILED")
    return parent.info.run_id


def _assert_nothing_of_the_reader_is_embedded(folder: Path, secret: Path, drawn: set[str]) -> None:
    markdown, page = (folder / "report.md").read_text(), (folder / "report.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]*)"', page)
    assert all(base64.b64decode(data)[:8] == PNG[:8] for data in images), "only PNGs the report drew are embedded"
    assert len(images) == len(drawn) and page.count("<img") == len(drawn)
    assert SECRET.decode() not in page and base64.b64encode(SECRET).decode()[:40] not in page
    image_lines = [line for line in markdown.splitlines() if line.startswith("![")]
    assert {re.search(r"\]\(([^)]*)\)$", line).group(1) for line in image_lines} == drawn
    assert not [line for line in markdown.splitlines() if line.startswith(("# heading", "| x |", "<img"))]
    assert 'href="http://evil' not in page and "<img src=x" not in page and "<strong>b</strong>" not in page
    assert markdown.count("\n# ") == 0 and markdown.startswith("# Sweep `model.name='a\\n![k](")


def test_text_in_the_store_cannot_make_the_report_embed_a_file_of_the_readers_machine(tmp_path: Path, capsys):
    """Issue 20 §1: a newline in the stored command made a line `![k](/etc/hostname)` that report.html
    read (an absolute path wins over the folder) and embedded, on the machine of whoever compares."""
    from sweeps import compare

    secret = tmp_path / "secret.png"
    secret.write_bytes(SECRET)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    parent = _planted_sweep(uri, secret)
    folder = tmp_path / "reports" / "r"
    assert compare.main(["--tracking-uri", uri, "--sweep", parent, "--out", str(folder)]) == 0
    out = capsys.readouterr().out  # the terminal too: one line per job, the command on its line
    assert [line.split()[0] for line in out.splitlines()[2:5]] == ["status", "FINISHED", "FAILED"]
    assert out.splitlines()[0].endswith("<img src=x onerror=alert(1)>") and "x\\n![j](" in out
    drawn = {p.name for p in folder.glob("*.png")}
    assert "val_data_loss.png" in drawn
    _assert_nothing_of_the_reader_is_embedded(folder, secret, drawn)
    markdown = (folder / "report.md").read_text()
    assert "| x\\\\n\\!\\[j\\](" in markdown, "the job's value is shown, in its cell, as typed"
    assert "FAILED: OSError: \\!\\[e\\](" in markdown and "\\*\\*b\\*\\* \\`c\\`" in markdown
    page = (folder / "report.html").read_text()
    assert f"OSError: ![e]({secret}) **b** `c`" in html.unescape(page), "read back as the same characters"
    table = (folder / "comparison.md").read_text()
    assert len(table.splitlines()) == 4 and "\\[click\\](http://evil.example/)" in table


def test_the_sweeps_own_report_embeds_only_its_figures(tmp_path: Path):
    """The parent's report, written when a sweep ends, from the command as recorded."""
    from mlflow.tracking import MlflowClient

    from conftest import InProcessSweep

    secret = tmp_path / "secret.png"
    secret.write_bytes(SECRET)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    active = InProcessSweep(uri, tmp_path / "multirun", ["reg=l1,l2"],
                            command=f"model.name='a\n![k]({secret})\nb' reg=l1,l2")
    active.end()
    folder = Path(MlflowClient(uri).download_artifacts(active.parent_run_id, "", str(tmp_path / "down")))
    _assert_nothing_of_the_reader_is_embedded(folder, secret, set())


def test_markdown_text_reads_back_as_itself():
    from sweeps.reporting import mdtext

    for value in ["a\n![k](/etc/hostname)\nb", "x|y", "`a` ``b``", "**b** _c_ l1_l2", "\\[x\\]", "<b>", "\x1b[31m"]:
        page = report_html.render(f"- {mdtext.text(value)} and {mdtext.code(value)}", Path("."))
        shown = html.unescape(re.search(r"<li>(.*)</li>", page).group(1))
        expected = mdtext.visible(value)
        assert shown == f"{expected} and <code>{expected}</code>", value
