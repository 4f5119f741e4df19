"""report.html renders the Markdown that `report` writes: tables, lists, images embedded, text escaped."""

import base64
from pathlib import Path

from sweeps import report_html

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
    page = report_html.write(tmp_path).read_text()
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
    from sweeps import table

    rows = [{"status": "FINISHED", "data.train_file": "a|b.csv", "final_val_data_loss": 0.25}]
    (tmp_path / "report.md").write_text(table.to_markdown(rows))
    page = report_html.write(tmp_path).read_text()
    assert "<tr><td>FINISHED</td><td>a|b.csv</td><td>0.25</td></tr>" in page
