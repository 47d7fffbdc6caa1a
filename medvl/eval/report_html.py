"""``report.html``: the Markdown report as one self-contained page, plots and galleries inlined."""

from __future__ import annotations

import html
from collections.abc import Mapping

__all__ = ["render_html"]

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }
th { background: #f4f4f4; }
img { max-width: 100%; }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(22em, 1fr));
           gap: 1em; }
.case { border: 1px solid #ddd; border-radius: 6px; margin: 0; padding: 0.6em; }
.case.wrong { border-color: #d66; }
.case h3 { font-size: 0.95em; margin: 0.4em 0; }
.case dl { font-size: 0.85em; margin: 0; }
.case dt { font-weight: 600; margin-top: 0.3em; }
.case dd { margin: 0; white-space: pre-wrap; }
.missing { color: #a00; font-size: 0.85em; }
"""


def render_html(
    markdown_text: str, images: Mapping[str, bytes], galleries: Mapping[str, str]
) -> str:
    """The page: ``markdown_text`` rendered (tables included) with each image whose file name
    is a key of ``images`` inlined as a data URI, then a "Worst cases" section per model from
    ``galleries`` (model name -> HTML of `medvl.eval.gallery.gallery_html`)."""
    import markdown

    from medvl.eval.gallery import png_data_uri

    body = markdown.markdown(markdown_text, extensions=["tables"])
    for name, data in images.items():
        body = body.replace(f'src="{html.escape(name)}"', f'src="{png_data_uri(data)}"')
    if galleries:
        body += "\n<h2>Worst cases</h2>\n"
        for model, cards in galleries.items():
            body += f"<h3>{html.escape(model)}</h3>\n{cards}\n"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>Evaluation report</title><style>{STYLE}</style></head>"
        f"<body>\n{body}\n</body></html>\n"
    )
